//! The main job, top to bottom: choose the variables, resolve them, build
//! the child's environment, wipe keyrun's copies, start the child and wait.

use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};

use crate::audit::{self, Auditor};
use crate::child::{self, ChildEnv, Outcome};
use crate::cli::{AuditArgs, ChildArgs, Cli, MaskMode, ResolveArgs, Subcommands};
use crate::config::{Config, Profile};
use crate::envfile;
use crate::harden;
use crate::reference::Reference;
use crate::secret;
use crate::source::{self, Context, Request, Resolved, Runtime};

/// How keyrun itself ends.
#[derive(Debug)]
pub enum Exit {
    Code(u8),
    Signal(child::SignalNumber),
}

/// The exit status for keyrun's own failures, as `env` and `timeout` use it.
pub const FAILURE: u8 = 125;

/// The variable keyrun injects when nothing else is planned.
const DEFAULT_VAR: &str = "OPENAI_API_KEY";

pub fn run(cli: Cli) -> Result<Exit> {
    match cli.subcommand {
        Some(Subcommands::Trust { file }) => {
            let trusted = crate::trust::trust(&file)?;
            let _ = writeln!(std::io::stderr(), "keyrun: trusted {}", trusted.display());
            return Ok(Exit::Code(0));
        }
        Some(Subcommands::Completions { shell }) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            // clap_complete panics when a write fails, so the script goes to
            // a buffer first and a closed stdout is an error `main` handles.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "keyrun", &mut script);
            write_stdout(&script).context("cannot write the completion script")?;
            return Ok(Exit::Code(0));
        }
        Some(Subcommands::Audit { action }) => return audit::command(action, &cli.resolve),
        Some(Subcommands::Check(args)) => return crate::check::check(&cli.resolve, &args),
        Some(Subcommands::Set(args)) => {
            return crate::store::set(&args, &cli.resolve, cli.log.quiet)
        }
        Some(Subcommands::Delete(args)) => return crate::store::delete(&args, cli.log.quiet),
        Some(Subcommands::Shell(args)) => {
            return crate::shell::shell(&args, &cli.resolve, &cli.audit, cli.log.quiet)
        }
        Some(Subcommands::Init(args)) => return crate::init::init(&args, &cli.resolve),
        Some(Subcommands::Man) => {
            let command = <Cli as clap::CommandFactory>::command();
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page)?;
            write_stdout(&page).context("cannot write the man page")?;
            return Ok(Exit::Code(0));
        }
        None => {}
    }

    if cli.command.is_empty() {
        bail!("no command to run: write it after --, for example `keyrun -- python app.py`");
    }
    exec(&cli.resolve, &cli.child, &cli.audit, &cli.command)
}

/// Escapes the control characters of an error message, line breaks and
/// tabs aside, so that a reference or a server's error text cannot send
/// terminal escape sequences (a title change, a cleared screen).
pub fn escape_controls(message: &str) -> String {
    let mut escaped = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Writes a report or script to stdout. A reader that went away (`keyrun
/// completions bash | head`) is no error, since the exit status still
/// carries the result; any other failed write is.
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    match std::io::stdout().write_all(bytes) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// A variable to inject and where its reference came from.
#[derive(Debug)]
pub struct Planned {
    pub request: Request,
    pub raw: bool,
    /// Where the reference was written, for messages.
    pub origin: String,
}

/// Chooses the profile: `--profile` (or `KEYRUN_PROFILE`), else the
/// configuration's `default_profile`.
pub fn choose_profile<'c>(
    args: &ResolveArgs,
    config: &'c Config,
) -> Result<Option<(&'c str, &'c Profile)>> {
    let Some(name) = args
        .profile
        .as_ref()
        .or(config.file.default_profile.as_ref())
    else {
        return Ok(None);
    };
    match config.file.profiles.get_key_value(name.as_str()) {
        Some((key, profile)) => {
            tracing::debug!(profile = %key, "profile chosen");
            Ok(Some((key.as_str(), profile)))
        }
        None => Err(config.unknown_profile(name)),
    }
}

/// Builds the set of variables a run injects: the profile's, then
/// `--env-file`, `--from` and `--set`, each replacing earlier entries of the
/// same name. With none of them, `OPENAI_API_KEY = env:OPENAI_API_KEY`.
pub fn plan(
    args: &ResolveArgs,
    config: &Config,
    profile: Option<(&str, &Profile)>,
) -> Result<Vec<Planned>> {
    let mut planned: Vec<Planned> = Vec::new();
    let cwd = std::env::current_dir().ok();
    let mut add = |var: &str, text: &str, raw: bool, base_dir: Option<PathBuf>, origin: String| {
        add_planned(&mut planned, var, text, raw, base_dir, origin)
    };

    if let Some((name, profile)) = profile {
        for (var, variable) in &profile.env {
            let origin = format!("profile {name}, variable {var}");
            add(var, &variable.from, variable.raw, config.base_dir(), origin)?;
        }
    }
    for path in &args.env_file {
        let base = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from));
        for entry in envfile::read(path)? {
            let origin = format!("{}, line {}", path.display(), entry.line);
            add(&entry.name, &entry.reference, false, base.clone(), origin)?;
        }
    }
    if let Some(text) = &args.from {
        add(&args.var, text, false, cwd.clone(), "--from".to_string())?;
    }
    for pair in &args.set {
        let Some((var, text)) = pair.split_once('=') else {
            bail!("--set: expected NAME=REF, for example --set OPENAI_ORG_ID=env:MY_ORG (the argument is not shown, since it may be a value)");
        };
        add(var, text, false, cwd.clone(), format!("--set {var}"))?;
    }

    if planned.is_empty() {
        add_planned(
            &mut planned,
            "OPENAI_API_KEY",
            "env:OPENAI_API_KEY",
            false,
            cwd,
            "the default source".to_string(),
        )?;
    }
    Ok(planned)
}

/// Adds one variable to the plan, replacing an earlier entry of that name.
fn add_planned(
    planned: &mut Vec<Planned>,
    var: &str,
    text: &str,
    raw: bool,
    base_dir: Option<PathBuf>,
    origin: String,
) -> Result<()> {
    // Until the name and the reference have been checked, the text before
    // the `=` may be part of a value pasted whole (`--set QWxh...==`). So
    // these errors name the variable only when it has the usual shape of
    // one (upper case, digits and _), which base64 text and keys lack.
    let conventional = var
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    let unnamed = match origin.strip_suffix(var) {
        Some(rest) if !conventional => rest.trim_end_matches(", variable ").trim_end(),
        _ => &origin,
    };
    if !envfile::is_variable_name(var) {
        bail!(
            "{unnamed}: the variable name is invalid (it is not shown, since it may be a value); \
             use letters, digits and _, not starting with a digit"
        );
    }
    let reference = Reference::parse(text).with_context(|| unnamed.to_string())?;
    // Name the variable in other errors, unless the origin already ends
    // with it (`--set NAME`, `profile P, variable NAME`).
    let place = if origin.ends_with(&format!(" {var}")) {
        origin.clone()
    } else {
        format!("{origin}, variable {var}")
    };
    if let Err(message) = source::check_reference(&reference) {
        bail!("{place}: {message}");
    }
    planned.retain(|p| p.request.var != var);
    planned.push(Planned {
        request: Request {
            var: var.to_string(),
            reference,
            base_dir,
        },
        raw,
        origin,
    });
    Ok(())
}

/// Rejects an `unset` name that is not a variable name, or that names a
/// variable the run injects, because the injected value would reach the
/// child all the same, contrary to the `unset`.
pub fn check_unset(
    planned: &[Planned],
    profile: Option<(&str, &Profile)>,
    cli_unset: &[String],
) -> Result<()> {
    let from_profile = profile.into_iter().flat_map(|(name, p)| {
        p.unset
            .iter()
            .map(move |var| (format!("profile {name}: unset"), var))
    });
    let from_cli = cli_unset.iter().map(|var| ("--unset".to_string(), var));
    for (origin, var) in from_profile.chain(from_cli) {
        if !envfile::is_variable_name(var) {
            bail!(
                "{origin}: a name is not a valid variable name (it is not shown, since it may be a \
                 value); use letters, digits and _, not starting with a digit"
            );
        }
        if planned.iter().any(|p| p.request.var == *var) {
            bail!(
                "{origin}: {var} is also a variable this run injects, so it would reach the \
                 command anyway; remove it from unset or from the injected variables"
            );
        }
    }
    Ok(())
}

/// A resolved variable, ready to inject.
pub struct Injected {
    pub var: String,
    pub display: String,
    pub scheme: String,
    pub resolved: Resolved,
}

/// Resolves every planned variable, one batch per scheme, and checks each
/// value. All failures are reported together.
pub fn resolve_all(
    planned: &[Planned],
    config: &Config,
    profile: Option<(&str, &Profile)>,
    runtime: &mut Runtime,
) -> Result<Vec<Injected>> {
    let mut context = Context {
        config,
        profile,
        runtime,
    };
    let mut slots: Vec<Option<Injected>> = planned.iter().map(|_| None).collect();
    let mut errors: Vec<String> = Vec::new();

    let mut schemes: Vec<&str> = planned
        .iter()
        .map(|p| p.request.reference.scheme.as_str())
        .collect();
    schemes.dedup();
    schemes.sort_unstable();
    schemes.dedup();

    for scheme in schemes {
        let Some(source) = source::for_scheme(scheme) else {
            bail!(
                "the {scheme}: source is not available in this build of keyrun; known schemes: {}",
                available_schemes()
            );
        };
        let indexes: Vec<usize> = (0..planned.len())
            .filter(|&i| planned[i].request.reference.scheme == scheme)
            .collect();
        let batch: Vec<&Request> = indexes.iter().map(|&i| &planned[i].request).collect();
        tracing::debug!(source = scheme, count = batch.len(), "resolving");
        let results = source.resolve(&batch, &mut context);

        for (&index, result) in indexes.iter().zip(results) {
            let item = &planned[index];
            let display = source.display(&item.request.reference);
            if let Err(err) = &result {
                tracing::debug!(var = %item.request.var, kind = err.kind.as_str(), "source failed");
            }
            match result
                .map_err(|err| err.to_string())
                .and_then(|resolved| check(item, &display, resolved))
            {
                Ok(resolved) => {
                    slots[index] = Some(Injected {
                        var: item.request.var.clone(),
                        display,
                        scheme: scheme.to_string(),
                        resolved,
                    })
                }
                Err(message) => errors.push(format!(
                    "{} (from {}): {message}",
                    item.request.var, item.origin
                )),
            }
        }
    }

    if !errors.is_empty() {
        if errors.len() == 1 {
            bail!("{}", errors.remove(0));
        }
        bail!(
            "{} variables could not be resolved:\n  {}",
            errors.len(),
            errors.join("\n  ")
        );
    }
    Ok(slots.into_iter().flatten().collect())
}

fn available_schemes() -> String {
    let known: Vec<&str> = crate::reference::SCHEMES
        .iter()
        .copied()
        .filter(|s| source::for_scheme(s).is_some())
        .collect();
    known.join(", ")
}

/// Trims and checks one value; warns where the value was changed or does
/// not look like an OpenAI key.
fn check(item: &Planned, shown: &str, mut resolved: Resolved) -> Result<Resolved, String> {
    let var = &item.request.var;
    let json_hint = json_object_hint(item, resolved.value.expose());
    let trimmed = secret::normalize(&mut resolved.value, item.raw)
        .map_err(|err| format!("{shown}: {err}{}", json_hint.unwrap_or_default()))?;
    if let Some(hint) = json_hint {
        tracing::warn!("{var}: the value from {shown} is a JSON object{hint}");
    }
    if trimmed.any() {
        tracing::warn!(
            "{var}: removed {} from the value of {shown}; store the bare key (for example `printf %s KEY > FILE`) to silence this",
            trimmed.describe()
        );
    }
    if !item.raw && secret::looks_like_assignment(&resolved.value) {
        tracing::warn!(
            "{var}: the value from {shown} starts with NAME=, like a line of a .env file; store only the key, \
             or name the file with --env-file if it is one"
        );
    }
    if var == "OPENAI_API_KEY" && !secret::looks_like_openai_key(&resolved.value) {
        tracing::warn!(
            "{var}: the value from {shown} does not look like an OpenAI key (sk-..., sk-proj-...); \
             that is expected for Azure OpenAI or a compatible gateway"
        );
    }
    Ok(resolved)
}

/// Returns the advice for a value that is a whole JSON object where a key
/// was expected (a secret with several fields read without `#FIELD`), or
/// `None` when the value is not one or the variable is `raw`.
fn json_object_hint(item: &Planned, value: &[u8]) -> Option<&'static str> {
    let reference = &item.request.reference;
    if item.raw || reference.field.is_some() || value.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    Some(match reference.scheme.as_str() {
        "aws-sm" | "vault" => {
            "; pick one field with #FIELD (for example aws-sm:prod/openai#api_key), or mark \
             the variable raw = true to inject the whole object"
        }
        _ => "; store only the key, or mark the variable raw = true to inject the whole object",
    })
}

/// Builds the child's environment: keyrun's own (or the clean set), less
/// the backend credentials and `unset` names, plus the injected values.
fn child_env(
    injected: &mut Vec<Injected>,
    args: &ChildArgs,
    profile: Option<&Profile>,
    config: &Config,
) -> ChildEnv {
    let clean = args.clean_env || profile.and_then(|p| p.clean_env).unwrap_or(false);
    let mut env = if clean {
        ChildEnv::clean()
    } else {
        ChildEnv::inherit()
    };

    let keep_backend_env = args.keep_backend_env
        || profile
            .and_then(|p| p.keep_backend_env)
            .or(config.file.keep_backend_env)
            .unwrap_or(false);
    let injected_names: Vec<String> = injected.iter().map(|i| i.var.clone()).collect();

    for item in injected.iter() {
        if !keep_backend_env {
            for name in &item.resolved.credential_env {
                env.unset(name);
            }
        }
        // The source variable of an `env:` reference is removed, so the
        // value reaches the child only under the name it was planned for,
        // unless that name is planned too or is OPENAI_API_KEY, which the
        // child expects (`--set COPY=env:OPENAI_API_KEY`).
        if let Some(name) = &item.resolved.value_env {
            if !injected_names.contains(name) && name != DEFAULT_VAR {
                env.unset(name);
            }
        }
    }
    for name in profile
        .map(|p| p.unset.as_slice())
        .unwrap_or_default()
        .iter()
        .chain(&args.unset)
    {
        env.unset(name);
    }
    for item in injected.drain(..) {
        env.set_secret(&item.var, item.resolved.value);
    }
    env
}

/// How long output that may still grow into a match is held, unless the
/// profile's `mask_delay` sets it.
const DEFAULT_MASK_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Chooses which of the child's output streams to mask, and builds the
/// matcher from the injected values. Returns no matcher when nothing is
/// masked.
fn prepare_masking(
    injected: &[Injected],
    args: &ChildArgs,
    profile: Option<&Profile>,
) -> Result<(child::Piped, Option<child::Masking>)> {
    use std::io::IsTerminal as _;

    let mode = args
        .mask
        .or(profile.and_then(|p| p.mask))
        .unwrap_or_default();
    let ttys = crate::terminal::Ttys {
        stdin: std::io::stdin().is_terminal(),
        stdout: std::io::stdout().is_terminal(),
        stderr: std::io::stderr().is_terminal(),
    };
    let on_terminal = mode == MaskMode::Always && (ttys.stdout || ttys.stderr);
    let piped = match mode {
        MaskMode::Never => child::Piped::default(),
        MaskMode::Auto | MaskMode::Always => child::Piped {
            stdout: !ttys.stdout && !is_dev_null(libc::STDOUT_FILENO),
            stderr: !ttys.stderr && !is_dev_null(libc::STDERR_FILENO),
            terminal: on_terminal.then_some(ttys),
        },
    };
    tracing::debug!(
        ?mode,
        stdout = piped.stdout,
        stderr = piped.stderr,
        on_terminal,
        "output masking"
    );
    if !piped.stdout && !piped.stderr && !on_terminal {
        return Ok((piped, None));
    }

    let replacement = profile
        .and_then(|p| p.mask_with.as_deref())
        .unwrap_or(crate::mask::DEFAULT_REPLACEMENT);
    let delay = match profile.and_then(|p| p.mask_delay.as_deref()) {
        Some(text) => crate::config::parse_duration(text).context("mask_delay")?,
        None => DEFAULT_MASK_DELAY,
    };
    let mut builder = crate::mask::MaskerBuilder::new(replacement.as_bytes());
    for item in injected {
        if !builder.add_value(item.resolved.value.expose()) {
            tracing::warn!(
                "{}: the value is shorter than {} bytes, so keyrun does not mask it in the command's output",
                item.var,
                crate::mask::MIN_MASKED_LEN
            );
        }
    }
    match builder.build() {
        Some(masker) => Ok((piped, Some(child::Masking { masker, delay }))),
        None => Ok((child::Piped::default(), None)),
    }
}

/// Returns whether `fd` is /dev/null. Its output cannot be read, so
/// masking it would only add a pipe between the command and nothing
/// (`cron` jobs with `>/dev/null 2>&1`).
fn is_dev_null(fd: libc::c_int) -> bool {
    use std::os::fd::FromRawFd as _;
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    // SAFETY: keyrun's standard streams stay open for its whole life, and
    // ManuallyDrop keeps this handle from closing the descriptor.
    let stream = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let (Ok(stream), Ok(null)) = (stream.metadata(), std::fs::metadata("/dev/null")) else {
        return false;
    };
    stream.file_type().is_char_device()
        && null.file_type().is_char_device()
        && stream.rdev() == null.rdev()
}

/// Registers the values with the CI runner's log masking, unless the
/// profile sets `ci_mask = false`.
fn register_with_ci(injected: &[Injected], profile: Option<&Profile>) -> Result<()> {
    let Some(runner) = crate::mask::CiRunner::detect() else {
        return Ok(());
    };
    if profile.and_then(|p| p.ci_mask) == Some(false) {
        tracing::debug!(
            ?runner,
            "ci_mask = false: values not registered with the CI runner"
        );
        return Ok(());
    }
    let values = injected.iter().map(|item| item.resolved.value.expose());
    let count = crate::mask::register_with_ci(runner, values)
        .context("cannot register the values with the CI runner's log masking")?;
    tracing::debug!(?runner, count, "values registered with the CI runner");
    Ok(())
}

/// Runs the command, with an audit record of each step when the audit log
/// is on, and an `error` record when the run fails.
fn exec(
    args: &ResolveArgs,
    child_args: &ChildArgs,
    audit_args: &AuditArgs,
    command: &[std::ffi::OsString],
) -> Result<Exit> {
    exec_with(args, child_args, audit_args, command, |_, _| {})
}

/// Runs `command` like [`exec`], after `adjust` has changed the child's
/// environment; `adjust` also receives the chosen profile's name.
pub fn exec_with(
    args: &ResolveArgs,
    child_args: &ChildArgs,
    audit_args: &AuditArgs,
    command: &[std::ffi::OsString],
    adjust: impl FnOnce(&mut ChildEnv, Option<&str>),
) -> Result<Exit> {
    let config = Config::discover(args.config.as_deref())?;
    let mut audit = Auditor::open_for_run(&config, args, audit_args, command)?;
    let result = exec_audited(args, child_args, command, &config, &mut audit, adjust);
    if let Err(err) = &result {
        audit.error(&format!("{err:#}"));
    }
    result
}

fn exec_audited(
    args: &ResolveArgs,
    child_args: &ChildArgs,
    command: &[std::ffi::OsString],
    config: &Config,
    audit: &mut Auditor,
    adjust: impl FnOnce(&mut ChildEnv, Option<&str>),
) -> Result<Exit> {
    let profile = choose_profile(args, config)?;
    let planned = plan(args, config, profile)?;
    check_unset(&planned, profile, &child_args.unset)?;

    let mut runtime = Runtime::default();
    let resolved = resolve_all(&planned, config, profile, &mut runtime);
    // Drop network clients and their pooled buffers before anything else.
    runtime.shutdown();
    let mut injected = resolved?;
    audit.resolved(&injected)?;
    audit::age::check_all(&injected, config, profile)?;

    let mut wiped: Vec<String> = Vec::new();
    for item in &injected {
        wiped.push(item.var.clone());
        wiped.extend(item.resolved.value_env.iter().cloned());
        wiped.extend(item.resolved.credential_env.iter().cloned());
        tracing::debug!(
            var = %item.var,
            source = %item.scheme,
            reference = %item.display,
            fingerprint = %item.resolved.value.fingerprint(),
            "resolved"
        );
    }

    let (piped, masking) = prepare_masking(&injected, child_args, profile.map(|(_, p)| p))?;
    register_with_ci(&injected, profile.map(|(_, p)| p))?;
    let mut env = child_env(&mut injected, child_args, profile.map(|(_, p)| p), config);
    adjust(&mut env, profile.map(|(name, _)| name));
    drop(injected);
    drop(planned);
    // The child's environment is built from copies, so keyrun's original
    // environment block can lose its values now.
    harden::wipe_environ_values(wiped.iter().map(OsStr::new));

    let supervisor = match child::spawn(command, env, piped)? {
        Ok(supervisor) => supervisor,
        Err(err) => {
            let message = escape_controls(&err.to_string());
            let _ = writeln!(std::io::stderr(), "keyrun: error: {message}");
            audit.error(&err.to_string());
            return Ok(Exit::Code(err.exit_code()));
        }
    };
    let child_pid = supervisor.pid();
    audit.child_started(child_pid);
    harden::scrub_stack();

    let outcome = supervisor.wait(masking.as_ref())?;
    audit.child_exited(child_pid, &outcome);
    match outcome {
        Outcome::Exited(code) => Ok(Exit::Code(code)),
        Outcome::Signaled(sig) => Ok(Exit::Signal(sig)),
    }
}
