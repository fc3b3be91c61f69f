//! The structured access log: one JSON record per line for each value
//! resolved, each child started and ended, and each run that failed before
//! its child started.
//!
//! Every record carries `seq`, one more than the previous record's, and
//! `prev`, the SHA-256 of the previous line of the same file, so that
//! `keyrun audit verify` finds an edited, removed or reordered record. The
//! log is tamper-evident, not tamper-proof: anyone who can write the file
//! can also rewrite the whole chain, and records cut from its end leave no
//! trace in what remains.

pub mod age;
pub mod report;
pub mod verify;

use std::ffi::OsString;
use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::child::Outcome;
use crate::cli::{AuditAction, AuditArgs, ResolveArgs};
use crate::config::Config;
use crate::run::{Exit, Injected};

/// The `prev` of a file's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The destination of the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stderr,
    File(PathBuf),
}

/// The audit settings after `[audit]` and `KEYRUN_AUDIT_LOG` are merged.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub target: Option<Target>,
    pub required: bool,
    pub log_args: bool,
}

impl AuditSettings {
    /// Reads `[audit]`, with `KEYRUN_AUDIT_LOG` replacing its `path`. A
    /// relative path in the file is relative to the file's folder; one in
    /// the variable, to the working directory.
    pub fn from_config(config: &Config) -> AuditSettings {
        let section = config.file.audit.as_ref();
        let from_env = std::env::var_os("KEYRUN_AUDIT_LOG").filter(|v| !v.is_empty());
        let target = match from_env {
            Some(path) => Some(target_of(&path, None)),
            None => section
                .and_then(|s| s.path.as_ref())
                .map(|path| target_of(&OsString::from(path), config.base_dir())),
        };
        AuditSettings {
            target,
            required: section.and_then(|s| s.required).unwrap_or(true),
            log_args: section.and_then(|s| s.log_args).unwrap_or(false),
        }
    }
}

fn target_of(text: &OsString, base_dir: Option<PathBuf>) -> Target {
    if text == "-" {
        return Target::Stderr;
    }
    let path = PathBuf::from(text);
    if let Ok(rest) = path.strip_prefix("~") {
        if let Some(home) = crate::config::home_dir() {
            return Target::File(home.join(rest));
        }
    }
    match base_dir {
        Some(base) if path.is_relative() => Target::File(base.join(path)),
        _ => Target::File(path),
    }
}

/// The CI job a run belongs to, from the variables the CI service sets.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CiContext {
    pub provider: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<String>,
}

impl CiContext {
    /// Reads GitHub Actions' and GitLab CI's variables, else the `CI`
    /// flag that most CI services set.
    pub fn detect(var: impl Fn(&str) -> Option<String>) -> Option<CiContext> {
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        if get("GITHUB_ACTIONS").as_deref() == Some("true") {
            return Some(CiContext {
                provider: "github-actions",
                run_id: get("GITHUB_RUN_ID"),
                repository: get("GITHUB_REPOSITORY"),
                workflow: get("GITHUB_WORKFLOW"),
                actor: get("GITHUB_ACTOR"),
                job_id: get("GITHUB_JOB"),
                ..CiContext::default()
            });
        }
        if get("GITLAB_CI").as_deref() == Some("true") {
            return Some(CiContext {
                provider: "gitlab",
                job_id: get("CI_JOB_ID"),
                project: get("CI_PROJECT_PATH"),
                pipeline_id: get("CI_PIPELINE_ID"),
                actor: get("GITLAB_USER_LOGIN"),
                ..CiContext::default()
            });
        }
        match get("CI").as_deref() {
            None | Some("false") | Some("0") => None,
            Some(_) => Some(CiContext {
                provider: "ci",
                ..CiContext::default()
            }),
        }
    }
}

/// The fields every record of one run shares.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunContext {
    pub keyrun_version: &'static str,
    pub uid: u32,
    pub user: Option<String>,
    pub host: Option<String>,
    pub pid: u32,
    pub ppid: i32,
    pub cwd: Option<String>,
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci: Option<CiContext>,
    pub argv0: Option<String>,
    /// The full argument list, only with `log_args = true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
}

impl RunContext {
    pub fn current(
        profile: Option<&str>,
        reason: Option<&str>,
        command: &[OsString],
        log_args: bool,
    ) -> RunContext {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .or_else(|| std::env::var("USER").ok());
        let argv: Vec<String> = command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        RunContext {
            keyrun_version: env!("CARGO_PKG_VERSION"),
            uid: uid.as_raw(),
            user,
            host: nix::unistd::gethostname()
                .ok()
                .map(|h| h.to_string_lossy().into_owned()),
            pid: std::process::id(),
            ppid: nix::unistd::getppid().as_raw(),
            cwd: std::env::current_dir()
                .ok()
                .map(|d| d.display().to_string()),
            profile: profile.map(str::to_string),
            reason: reason.filter(|r| !r.is_empty()).map(str::to_string),
            ci: CiContext::detect(|name| std::env::var(name).ok()),
            argv0: argv.first().cloned(),
            argv: log_args.then_some(argv),
        }
    }
}

impl RunContext {
    /// Replaces each injected value that the command's arguments contain
    /// (a shell expanded `$OPENAI_API_KEY` before keyrun ran, say) with
    /// `***`, so that no record carries it. Values shorter than the
    /// masker's minimum are left, as in the command's output, because
    /// replacing a few common bytes would garble the arguments.
    fn redact_argv(&mut self, injected: &[Injected]) {
        let values: Vec<&str> = injected
            .iter()
            .filter_map(|item| std::str::from_utf8(item.resolved.value.expose()).ok())
            .filter(|value| value.len() >= crate::mask::MIN_MASKED_LEN)
            .collect();
        let fields = self.argv.iter_mut().flatten().chain(self.argv0.as_mut());
        for arg in fields {
            for value in &values {
                if arg.contains(value) {
                    *arg = arg.replace(value, crate::mask::DEFAULT_REPLACEMENT);
                }
            }
        }
    }
}

/// One line of the log. Fields that an event does not have are left out.
#[derive(Debug, Serialize)]
struct Record<'a> {
    time: String,
    event: &'static str,
    seq: u64,
    #[serde(flatten)]
    run: &'a RunContext,
    #[serde(skip_serializing_if = "Option::is_none")]
    var: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age_days: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    child_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    prev: String,
}

impl<'a> Record<'a> {
    fn new(event: &'static str, run: &'a RunContext) -> Record<'a> {
        Record {
            time: String::new(),
            event,
            seq: 0,
            run,
            var: None,
            source: None,
            reference: None,
            version: None,
            age_days: None,
            fingerprint: None,
            child_pid: None,
            exit_code: None,
            signal: None,
            duration_ms: None,
            error: None,
            prev: String::new(),
        }
    }
}

/// Writes the records of one run, or nothing when no log is configured.
pub struct Auditor {
    target: Option<Target>,
    required: bool,
    run: RunContext,
    offset: time::UtcOffset,
    started: Instant,
    child_started: Option<Instant>,
    /// The chain of records written to stderr, which cannot be read back.
    stderr_chain: (u64, String),
}

impl Auditor {
    /// Opens the log named by `settings`, creating it 0600 in a 0700
    /// folder. A log that cannot be opened is an error when it is
    /// required, and a warning that turns it off otherwise.
    pub fn open(settings: &AuditSettings, run: RunContext) -> Result<Auditor> {
        // The local offset can only be read while keyrun has one thread,
        // so it is read once, now.
        let offset = match settings.target {
            Some(_) => time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC),
            None => time::UtcOffset::UTC,
        };
        let mut auditor = Auditor {
            target: settings.target.clone(),
            required: settings.required,
            run,
            offset,
            started: Instant::now(),
            child_started: None,
            stderr_chain: (0, GENESIS.to_string()),
        };
        if let Some(Target::File(path)) = &auditor.target {
            if let Err(err) = open_log(path) {
                auditor.fail(err)?;
            }
        }
        Ok(auditor)
    }

    /// Opens the configured log for one run of `command`.
    pub fn open_for_run(
        config: &Config,
        args: &ResolveArgs,
        audit_args: &AuditArgs,
        command: &[OsString],
    ) -> Result<Auditor> {
        let settings = AuditSettings::from_config(config);
        if settings.target.is_none() {
            // No log: skip the user, host and CI lookups.
            return Auditor::open(&settings, RunContext::default());
        }
        let profile = args
            .profile
            .as_deref()
            .or(config.file.default_profile.as_deref());
        let run = RunContext::current(
            profile,
            audit_args.reason.as_deref(),
            command,
            settings.log_args,
        );
        Auditor::open(&settings, run)
    }

    /// Records one `secret.resolved` per variable. Fails, when the log is
    /// required, before any child can start.
    pub fn resolved(&mut self, injected: &[Injected]) -> Result<()> {
        self.run.redact_argv(injected);
        for item in injected {
            let run = self.run.clone();
            let mut record = Record::new("secret.resolved", &run);
            record.var = Some(&item.var);
            record.source = Some(&item.scheme);
            record.reference = Some(&item.display);
            record.version = item.resolved.version.as_deref();
            record.age_days = item.resolved.created.and_then(age::age_days);
            record.fingerprint = Some(item.resolved.value.fingerprint());
            self.write(record)?;
        }
        Ok(())
    }

    /// Records `child.started`. The child runs already, so a failed write
    /// is reported and does not stop it.
    pub fn child_started(&mut self, child_pid: u32) {
        self.child_started = Some(Instant::now());
        let run = self.run.clone();
        let mut record = Record::new("child.started", &run);
        record.child_pid = Some(child_pid);
        self.write_after_start(record);
    }

    pub fn child_exited(&mut self, child_pid: u32, outcome: &Outcome) {
        let since = self.child_started.unwrap_or(self.started);
        let run = self.run.clone();
        let mut record = Record::new("child.exited", &run);
        record.child_pid = Some(child_pid);
        match outcome {
            Outcome::Exited(code) => record.exit_code = Some(*code),
            Outcome::Signaled(sig) => record.signal = Some(sig.to_string()),
        }
        record.duration_ms = Some(since.elapsed().as_millis() as u64);
        self.write_after_start(record);
    }

    /// Records a run that failed before its child started. Error messages
    /// never contain a value (the sources and checks guarantee that), so
    /// the message is kept whole.
    pub fn error(&mut self, message: &str) {
        let run = self.run.clone();
        let mut record = Record::new("error", &run);
        record.error = Some(message);
        record.duration_ms = Some(self.started.elapsed().as_millis() as u64);
        self.write_after_start(record);
    }

    fn write_after_start(&mut self, record: Record<'_>) {
        if let Err(err) = self.write(record) {
            tracing::error!("{err:#}");
        }
    }

    fn write(&mut self, mut record: Record<'_>) -> Result<()> {
        let Some(target) = self.target.clone() else {
            return Ok(());
        };
        record.time = format_time(time::OffsetDateTime::now_utc().to_offset(self.offset));
        let written = match &target {
            Target::Stderr => self.write_stderr(&mut record),
            Target::File(path) => append(path, &mut record),
        };
        match written {
            Ok(()) => Ok(()),
            Err(err) => self.fail(err),
        }
    }

    fn write_stderr(&mut self, record: &mut Record<'_>) -> Result<()> {
        record.seq = self.stderr_chain.0 + 1;
        record.prev = self.stderr_chain.1.clone();
        let mut line = serde_json::to_vec(&record).context("cannot encode an audit record")?;
        self.stderr_chain = (record.seq, hash_line(&line));
        line.push(b'\n');
        write_once(&mut std::io::stderr().lock(), &line)
            .context("cannot write the audit record to stderr")
    }

    /// Turns a failed open or write into an error when the log is
    /// required, and into a warning otherwise. No record follows either.
    fn fail(&mut self, err: anyhow::Error) -> Result<()> {
        // Either way no later record is attempted, so one failure is
        // reported once.
        self.target = None;
        if self.required {
            bail!(
                "{err:#}; keyrun does not run the command without its audit log: fix the path or \
                 its permissions, or set required = false under [audit]"
            );
        }
        tracing::warn!(
            "{err:#}; continuing without the audit log because [audit] required = false"
        );
        Ok(())
    }
}

/// Formats a time as RFC 3339 with milliseconds and a numeric offset.
pub fn format_time(time: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory]:[offset_minute]"
    );
    time.format(&format)
        .unwrap_or_else(|_| time.unix_timestamp().to_string())
}

/// Hashes one line (without its line break) to lowercase hex SHA-256.
pub fn hash_line(line: &[u8]) -> String {
    let digest = Sha256::digest(line);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens the log for reading and appending, creating its folder (0700) and
/// the file (0600) when they do not exist.
fn open_log(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| {
                    format!("cannot create the audit log's folder {}", parent.display())
                })?;
        }
    }
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open the audit log {}", path.display()))?;
    let metadata = file
        .metadata()
        .with_context(|| format!("cannot read the audit log {}", path.display()))?;
    if !metadata.is_file() {
        bail!("the audit log {} is not a regular file", path.display());
    }
    Ok(file)
}

/// Appends one record under an exclusive `flock`, so that reading the last
/// line, hashing it and appending the next one is a single step for every
/// keyrun that shares the file.
fn append(path: &Path, record: &mut Record<'_>) -> Result<()> {
    let file = open_log(path)?;
    let shown = path.display();
    let mut file = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| anyhow::anyhow!("cannot lock the audit log {shown}: {errno}"))?;

    let last = last_line(&file).with_context(|| format!("cannot read the audit log {shown}"))?;
    let mut line = Vec::new();
    match &last {
        Some(last) => {
            if !last.terminated {
                // A record cut short (a full disk, a crash) ends without a
                // line break; the new record starts a line of its own.
                line.push(b'\n');
            }
            record.prev = hash_line(&last.bytes);
            record.seq = match serde_json::from_slice::<verify::Entry>(&last.bytes) {
                Ok(entry) => entry.seq.unwrap_or(0) + 1,
                Err(_) => {
                    tracing::warn!(
                        "the last line of the audit log {shown} is not a record; `keyrun audit verify` will report it"
                    );
                    1
                }
            };
        }
        None => {
            record.prev = GENESIS.to_string();
            record.seq = 1;
        }
    }
    serde_json::to_writer(&mut line, &record).context("cannot encode an audit record")?;
    line.push(b'\n');
    write_once(&mut *file, &line).with_context(|| format!("cannot write the audit log {shown}"))
}

/// Writes `bytes` with one `write(2)`, so a record is never split between
/// two writes; a short write is an error.
fn write_once(writer: &mut impl std::io::Write, bytes: &[u8]) -> std::io::Result<()> {
    let written = writer.write(bytes)?;
    if written != bytes.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("only {written} of {} bytes were written", bytes.len()),
        ));
    }
    writer.flush()
}

/// The last line of a file and whether a line break ends it.
struct LastLine {
    bytes: Vec<u8>,
    terminated: bool,
}

/// Reads the file's last line from its end, in growing steps.
/// The maximum length of the last line that [`last_line`] reads. Records are well under a
/// kilobyte (a long `argv` aside); a file whose last line is longer is not
/// keyrun's log.
const MAX_RECORD_BYTES: usize = 1024 * 1024;

fn last_line(file: &File) -> std::io::Result<Option<LastLine>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut tail: Vec<u8> = Vec::new();
    let mut start = len;
    let mut step: u64 = 4096;
    loop {
        let from = start.saturating_sub(step);
        let mut chunk = vec![0u8; (start - from) as usize];
        file.read_exact_at(&mut chunk, from)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        start = from;

        let terminated = tail.ends_with(b"\n");
        let body = if terminated {
            &tail[..tail.len() - 1]
        } else {
            &tail[..]
        };
        if let Some(at) = memchr::memrchr(b'\n', body) {
            return Ok(Some(LastLine {
                bytes: body[at + 1..].to_vec(),
                terminated,
            }));
        }
        if start == 0 {
            return Ok(Some(LastLine {
                bytes: body.to_vec(),
                terminated,
            }));
        }
        if tail.len() >= MAX_RECORD_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "its last line is longer than {MAX_RECORD_BYTES} bytes, so it is not an audit \
                     log; check the path, or move the file aside"
                ),
            ));
        }
        step = step.saturating_mul(2);
    }
}

/// Runs `keyrun audit verify` or `keyrun audit report`.
pub fn command(action: AuditAction, args: &ResolveArgs) -> Result<Exit> {
    let config = Config::discover(args.config.as_deref())?;
    match action {
        AuditAction::Verify { path } => {
            let path = log_path(path.as_deref(), &config)?;
            match verify::verify_file(&path)? {
                verify::Verdict::Intact { records } => {
                    let line = format!("{}: {records} records, chain intact\n", path.display());
                    crate::run::write_stdout(line.as_bytes())?;
                    Ok(Exit::Code(0))
                }
                verify::Verdict::Broken { problem, .. } => {
                    let line = format!("{}: {problem}\n", path.display());
                    crate::run::write_stdout(line.as_bytes())?;
                    Ok(Exit::Code(1))
                }
            }
        }
        AuditAction::Report { path, json } => {
            let path = log_path(path.as_deref(), &config)?;
            let report = report::report_file(&path)?;
            let text = match json {
                true => {
                    let mut text = serde_json::to_string_pretty(&report)
                        .context("cannot encode the report")?;
                    text.push('\n');
                    text
                }
                false => report::render(&report),
            };
            crate::run::write_stdout(text.as_bytes())?;
            Ok(Exit::Code(0))
        }
    }
}

/// Chooses the log that `keyrun audit verify` and `report` read: PATH
/// when given, else the configured log.
pub fn log_path(path: Option<&Path>, config: &Config) -> Result<PathBuf> {
    if let Some(path) = path {
        return Ok(path.to_path_buf());
    }
    match AuditSettings::from_config(config).target {
        Some(Target::File(path)) => Ok(path),
        Some(Target::Stderr) => bail!(
            "the audit log goes to stderr (path = \"-\"), which keyrun cannot read back; name the file to read"
        ),
        None => bail!(
            "no audit log is configured; name the file, set KEYRUN_AUDIT_LOG, or set path under [audit]"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn ci_detects_gitlab() {
        let ci = CiContext::detect(vars(&[
            ("GITLAB_CI", "true"),
            ("CI", "true"),
            ("CI_JOB_ID", "77"),
            ("CI_PROJECT_PATH", "group/app"),
        ]))
        .unwrap();
        assert_eq!(ci.provider, "gitlab");
        assert_eq!(ci.job_id.as_deref(), Some("77"));
        assert_eq!(ci.project.as_deref(), Some("group/app"));
    }

    #[test]
    fn ci_generic_flag() {
        let ci = CiContext::detect(vars(&[("CI", "1")])).unwrap();
        assert_eq!(ci.provider, "ci");
        assert!(CiContext::detect(vars(&[("CI", "false")])).is_none());
        assert!(CiContext::detect(vars(&[])).is_none());
    }

    #[test]
    fn time_has_numeric_offset() {
        let time = time::macros::datetime!(2026-03-01 12:00:00.5 +01:00);
        assert_eq!(format_time(time), "2026-03-01T12:00:00.500+01:00");
    }

    #[test]
    fn last_line_rejects_huge_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = File::create(&path).unwrap();
        // A sparse file of zeros: no line break anywhere.
        file.set_len(64 * 1024 * 1024).unwrap();
        let Err(err) = last_line(&File::open(&path).unwrap()) else {
            panic!("a 64 MiB line was read as a record");
        };
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("not an audit log"), "{err}");
    }

    #[test]
    fn last_line_reads_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let long = "x".repeat(10_000);
        std::fs::write(&path, format!("first\n{long}\n")).unwrap();
        let file = File::open(&path).unwrap();
        let last = last_line(&file).unwrap().unwrap();
        assert_eq!(last.bytes, long.as_bytes());
        assert!(last.terminated);
    }

    #[test]
    fn last_line_of_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "only").unwrap();
        let file = File::open(&path).unwrap();
        let last = last_line(&file).unwrap().unwrap();
        assert_eq!(last.bytes, b"only");
        assert!(!last.terminated);
    }
}
