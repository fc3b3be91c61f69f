//! The audit log, `keyrun audit verify` and `report`, and the key-age
//! policy, against the real keyrun binary and real files.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use common::{assert_not_leaked, output, run_with_config, stderr, stdout, Sandbox};
use serde_json::Value;
use sha2::{Digest, Sha256};

const DAY: u64 = 86_400;

/// A keyrun command that logs to `log` and gets `key` as OPENAI_API_KEY.
fn keyrun_logged(sandbox: &Sandbox, log: &Path, key: &str) -> Command {
    let mut command = sandbox.keyrun();
    command.env("KEYRUN_AUDIT_LOG", log);
    command.env("OPENAI_API_KEY", key);
    command
}

fn records(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn events(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["event"].as_str().unwrap_or("").to_string())
        .collect()
}

fn fingerprint(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn verify(sandbox: &Sandbox, log: &Path) -> Output {
    output(sandbox.keyrun().arg("audit").arg("verify").arg(log))
}

#[test]
fn log_file_and_folder_modes() {
    let sandbox = Sandbox::new();
    let log = sandbox.path().join("logs/keyrun/audit.log");
    let out = output(keyrun_logged(&sandbox, &log, &common::random_key()).args(["--", "true"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&log), 0o600);
    assert_eq!(mode(log.parent().unwrap()), 0o700);
    assert_eq!(mode(&sandbox.path().join("logs")), 0o700);
}

#[test]
fn run_records_each_event() {
    let sandbox = Sandbox::new();
    let log = sandbox.path().join("audit.log");
    let key = common::random_key();
    let out = output(keyrun_logged(&sandbox, &log, &key).args([
        "--reason",
        "nightly eval",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    let records = records(&log);
    assert_eq!(
        events(&records),
        ["secret.resolved", "child.started", "child.exited"]
    );
    let resolved = &records[0];
    assert_eq!(resolved["var"], "OPENAI_API_KEY");
    assert_eq!(resolved["source"], "env");
    assert_eq!(resolved["reference"], "env:OPENAI_API_KEY");
    assert_eq!(resolved["fingerprint"], fingerprint(&key).as_str());
    assert_eq!(resolved["reason"], "nightly eval");
    assert_eq!(resolved["argv0"], "sh");
    assert!(
        resolved.get("argv").is_none(),
        "argv logged without log_args"
    );
    assert_eq!(resolved["keyrun_version"], env!("CARGO_PKG_VERSION"));
    assert!(resolved["uid"].is_u64());
    assert!(resolved["user"].is_string());
    assert!(resolved["host"].is_string());
    assert!(resolved["pid"].is_u64());
    assert!(resolved["ppid"].is_i64());
    assert_eq!(
        resolved["cwd"].as_str().map(PathBuf::from),
        Some(sandbox.path().canonicalize().unwrap())
    );
    let time = resolved["time"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).is_ok(),
        "time {time:?} is not RFC 3339"
    );
    let offset = &time[time.len() - 6..];
    assert!(
        offset.starts_with('+') || offset.starts_with('-'),
        "time {time:?} has no numeric offset"
    );

    let started = &records[1];
    let exited = &records[2];
    assert!(started["child_pid"].is_u64());
    assert_eq!(started["child_pid"], exited["child_pid"]);
    assert_eq!(exited["exit_code"], 3);
    assert!(exited["duration_ms"].is_u64());
}

#[test]
fn signal_is_recorded() {
    let sandbox = Sandbox::new();
    let log = sandbox.path().join("audit.log");
    let out = output(keyrun_logged(&sandbox, &log, &common::random_key()).args([
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ]));
    assert_eq!(out.status.code(), None);
    let records = records(&log);
    assert_eq!(records[2]["event"], "child.exited");
    assert_eq!(records[2]["signal"], "SIGTERM");
    assert!(records[2].get("exit_code").is_none());
}

#[test]
fn reason_from_environment() {
    let sandbox = Sandbox::new();
    let log = sandbox.path().join("audit.log");
    let out = output(
        keyrun_logged(&sandbox, &log, &common::random_key())
            .env("KEYRUN_REASON", "incident 42")
            .args(["--", "true"]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for record in records(&log) {
        assert_eq!(record["reason"], "incident 42");
    }
}

#[test]
fn log_args_redacts_injected_value() {
    let sandbox = Sandbox::new();
    let log = sandbox.path().join("audit.log");
    let config = sandbox.write(
        "keyrun-config.toml",
        format!(
            "[audit]\npath = {:?}\nlog_args = true\n",
            log.display().to_string()
        )
        .as_bytes(),
        0o600,
    );
    let key = common::random_key();
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", &key)
        .arg("--config")
        .arg(&config)
        .args(["--", "sh", "-c", "true"])
        .arg(format!("Bearer {key}"));
    let out = output(&mut command);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&key), "an audit record contains the value");
    let records = records(&log);
    assert_eq!(records.len(), 3);
    for record in &records {
        assert_eq!(record["argv"][3], "Bearer ***", "argv not redacted");
    }
}

#[test]
fn log_args_records_argv() {
    let sandbox = Sandbox::new();
    let log = sandbox.path().join("audit.log");
    let config = sandbox.write(
        "keyrun-config.toml",
        format!(
            "[audit]\npath = {:?}\nlog_args = true\n",
            log.display().to_string()
        )
        .as_bytes(),
        0o600,
    );
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", common::random_key())
        .arg("--config")
        .arg(&config)
        .args(["--", "sh", "-c", "true", "second"]);
    let out = output(&mut command);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = records(&log);
    assert_eq!(
        records[0]["argv"],
        serde_json::json!(["sh", "-c", "true", "second"])
    );
}

#[test]
fn value_never_in_log() {
    let sandbox = Sandbox::new();
    let log = sandbox.path().join("audit.log");
    let key = common::random_key();
    let org = common::random_key();
    let key_file = sandbox.write("openai.key", key.as_bytes(), 0o600);
    let out = output(
        sandbox
            .keyrun()
            .env("KEYRUN_AUDIT_LOG", &log)
            .env("MY_ORG", &org)
            .arg("--from")
            .arg(format!("file:{}", key_file.display()))
            .args(["--set", "OPENAI_ORG_ID=env:MY_ORG", "--", "true"]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&log).unwrap();
    assert_eq!(records(&log).len(), 4);
    assert_not_leaked(&bytes, &key, "the audit log");
    assert_not_leaked(&bytes, &org, "the audit log");
    assert_not_leaked(&out.stderr, &key, "keyrun's stderr");
}

#[test]
fn concurrent_runs_chain_correctly() {
    const RUNS: usize = 16;
    let sandbox = Sandbox::new();
    let log = sandbox.path().join("audit.log");
    let children: Vec<_> = (0..RUNS)
        .map(|_| {
            keyrun_logged(&sandbox, &log, &common::random_key())
                .env("MY_ORG", common::random_key())
                .args(["--from", "env:OPENAI_API_KEY"])
                .args(["--set", "OPENAI_ORG_ID=env:MY_ORG", "--", "true"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), RUNS * 4);
    for (index, line) in lines.iter().enumerate() {
        let record: Result<Value, _> = serde_json::from_str(line);
        assert!(record.is_ok(), "line {} is not JSON", index + 1);
        assert_eq!(record.unwrap()["seq"], index as u64 + 1);
    }
    let out = verify(&sandbox, &log);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("chain intact"), "{}", stdout(&out));
}

#[test]
fn github_actions_context() {
    let sandbox = Sandbox::new();
    let log = sandbox.path().join("audit.log");
    let out = output(
        keyrun_logged(&sandbox, &log, &common::random_key())
            .env("CI", "true")
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_RUN_ID", "9876543210")
            .env("GITHUB_REPOSITORY", "octo/app")
            .env("GITHUB_WORKFLOW", "eval")
            .env("GITHUB_ACTOR", "octocat")
            .args(["--", "true"]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let record = &records(&log)[0];
    let ci = &record["ci"];
    assert_eq!(ci["provider"], "github-actions");
    assert_eq!(ci["run_id"], "9876543210");
    assert_eq!(ci["repository"], "octo/app");
    assert_eq!(ci["workflow"], "eval");
    assert_eq!(ci["actor"], "octocat");
}

#[test]
fn no_ci_context_outside_ci() {
    let sandbox = Sandbox::new();
    let log = sandbox.path().join("audit.log");
    let out = output(keyrun_logged(&sandbox, &log, &common::random_key()).args(["--", "true"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(records(&log)[0].get("ci").is_none());
}

#[test]
fn failed_run_records_error() {
    let sandbox = Sandbox::new();
    let log = sandbox.path().join("audit.log");
    let out = output(sandbox.keyrun().env("KEYRUN_AUDIT_LOG", &log).args([
        "--from",
        "file:missing.key",
        "--",
        "true",
    ]));
    assert_eq!(out.status.code(), Some(125));
    let records = records(&log);
    assert_eq!(events(&records), ["error"]);
    let message = records[0]["error"].as_str().unwrap();
    assert!(message.contains("missing.key"), "{message}");
}

#[test]
fn stderr_target_writes_records() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let out = output(
        sandbox
            .keyrun()
            .env("KEYRUN_AUDIT_LOG", "-")
            .env("OPENAI_API_KEY", &key)
            .args(["--", "true"]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let records: Vec<Value> = stderr(&out)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert_eq!(
        events(&records),
        ["secret.resolved", "child.started", "child.exited"]
    );
    assert_not_leaked(&out.stderr, &key, "keyrun's stderr");
}

/// A log path keyrun cannot create: its folder would sit under a file.
fn unwritable_log(sandbox: &Sandbox) -> PathBuf {
    sandbox.write("not-a-folder", b"", 0o600);
    sandbox.path().join("not-a-folder/audit.log")
}

#[test]
fn unwritable_log_fails_closed() {
    let sandbox = Sandbox::new();
    let log = unwritable_log(&sandbox);
    let marker = sandbox.path().join("ran");
    let out = output(
        keyrun_logged(&sandbox, &log, &common::random_key())
            .arg("--")
            .arg("touch")
            .arg(&marker),
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(!marker.exists(), "the command ran without its audit log");
    assert!(
        stderr(&out).contains("required = false"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unwritable_log_not_required_runs() {
    let sandbox = Sandbox::new();
    let log = unwritable_log(&sandbox);
    let config = sandbox.write(
        "keyrun-config.toml",
        format!(
            "[audit]\npath = {:?}\nrequired = false\n",
            log.display().to_string()
        )
        .as_bytes(),
        0o600,
    );
    let marker = sandbox.path().join("ran");
    let out = output(
        sandbox
            .keyrun()
            .env("OPENAI_API_KEY", common::random_key())
            .arg("--config")
            .arg(&config)
            .arg("--")
            .arg("touch")
            .arg(&marker),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(marker.exists(), "the command did not run");
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn unknown_audit_key_names_line() {
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "keyrun-config.toml",
        b"[audit]\npath = \"a.log\"\nrequierd = false\n",
        0o600,
    );
    let out = run_with_config(sandbox.keyrun(), &config);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("requierd"), "{}", stderr(&out));
    assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));
}

/// Writes a key file whose mtime lies `days` days back.
fn old_key_file(sandbox: &Sandbox, key: &str, days: u64) -> PathBuf {
    let path = sandbox.write("openai.key", key.as_bytes(), 0o600);
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(days * DAY + 3600))
        .unwrap();
    path
}

fn age_config(sandbox: &Sandbox, key_file: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "default_profile = \"p\"\n[profiles.p]\nenv.OPENAI_API_KEY = {{ from = \"file:{}\", max_age = \"90d\" }}\n{extra}",
        key_file.display()
    );
    sandbox.write("keyrun-config.toml", text.as_bytes(), 0o600)
}

#[test]
fn max_age_overdue_warns() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let key_file = old_key_file(&sandbox, &key, 100);
    let config = age_config(&sandbox, &key_file, "");
    let out = run_with_config(sandbox.keyrun(), &config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("100 days old"), "{text}");
    assert!(text.contains("10 days over max_age 90d"), "{text}");
    assert!(text.contains("rotate it"), "{text}");
    assert_not_leaked(&out.stderr, &key, "keyrun's stderr");
}

#[test]
fn max_age_enforced_exits_125() {
    let sandbox = Sandbox::new();
    let key_file = old_key_file(&sandbox, &common::random_key(), 100);
    let config = age_config(&sandbox, &key_file, "enforce_max_age = true\n");
    let marker = sandbox.path().join("ran");
    let log = sandbox.path().join("audit.log");
    let out = output(
        sandbox
            .keyrun()
            .env("KEYRUN_AUDIT_LOG", &log)
            .arg("--config")
            .arg(&config)
            .arg("--")
            .arg("touch")
            .arg(&marker),
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(!marker.exists(), "an overdue key reached the command");
    assert!(stderr(&out).contains("enforce_max_age"), "{}", stderr(&out));
    assert_eq!(events(&records(&log)), ["secret.resolved", "error"]);
}

#[test]
fn max_age_within_limit_is_silent() {
    let sandbox = Sandbox::new();
    let key_file = old_key_file(&sandbox, &common::random_key(), 30);
    let config = age_config(&sandbox, &key_file, "enforce_max_age = true\n");
    let out = run_with_config(sandbox.keyrun(), &config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("max_age"), "{}", stderr(&out));
}

#[test]
fn max_age_recorded_as_age_days() {
    let sandbox = Sandbox::new();
    let log = sandbox.path().join("audit.log");
    let key_file = old_key_file(&sandbox, &common::random_key(), 100);
    let config = age_config(&sandbox, &key_file, "");
    let out = output(
        sandbox
            .keyrun()
            .env("KEYRUN_AUDIT_LOG", &log)
            .arg("--config")
            .arg(&config)
            .args(["--", "true"]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let record = &records(&log)[0];
    assert_eq!(record["age_days"], 100);
    assert_eq!(record["profile"], "p");
}

#[test]
fn invalid_max_age_is_rejected() {
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "keyrun-config.toml",
        b"[profiles.p]\nmax_age = \"ninety days\"\n",
        0o600,
    );
    let out = run_with_config(sandbox.keyrun(), &config);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("profiles.p.max_age"),
        "{}",
        stderr(&out)
    );
}

/// A log of three runs, nine records.
fn three_run_log(sandbox: &Sandbox) -> (PathBuf, Vec<String>) {
    let log = sandbox.path().join("audit.log");
    for _ in 0..3 {
        let out = output(keyrun_logged(sandbox, &log, &common::random_key()).args(["--", "true"]));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().map(str::to_string).collect();
    (log, lines)
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

#[test]
fn verify_passes_intact_log() {
    let sandbox = Sandbox::new();
    let (log, lines) = three_run_log(&sandbox);
    assert_eq!(lines.len(), 9);
    let out = verify(&sandbox, &log);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("9 records"), "{}", stdout(&out));
}

#[test]
fn verify_finds_edited_line() {
    let sandbox = Sandbox::new();
    let (log, mut lines) = three_run_log(&sandbox);
    lines[3] = lines[3].replace("\"OPENAI_API_KEY\"", "\"OPENAI_ORG_ID\"");
    write_lines(&log, &lines);
    let out = verify(&sandbox, &log);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("line 4 (seq 4) was edited"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn verify_finds_removed_line() {
    let sandbox = Sandbox::new();
    let (log, mut lines) = three_run_log(&sandbox);
    lines.remove(4);
    write_lines(&log, &lines);
    let out = verify(&sandbox, &log);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("seq 5 was removed before line 5"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn verify_finds_swapped_lines() {
    let sandbox = Sandbox::new();
    let (log, mut lines) = three_run_log(&sandbox);
    lines.swap(5, 6);
    write_lines(&log, &lines);
    let out = verify(&sandbox, &log);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("line 6 (seq 7) is out of order"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("reordered"), "{}", stdout(&out));
}

#[test]
fn verify_missing_log_exits_125() {
    let sandbox = Sandbox::new();
    let out = verify(&sandbox, &sandbox.path().join("nothing.log"));
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn report_flags_reused_and_replaced() {
    let sandbox = Sandbox::new();
    let log = sandbox.path().join("audit.log");
    let old_key = common::random_key();
    let new_key = common::random_key();
    let key_file = sandbox.path().join("openai.key");
    let from_file = format!("file:{}", key_file.display());

    let run = |key: &str, from: &str| {
        let out = output(
            keyrun_logged(&sandbox, &log, key)
                .args(["--from", from])
                .args(["--", "true"]),
        );
        assert!(out.status.success(), "{}", stderr(&out));
    };
    sandbox.write("openai.key", old_key.as_bytes(), 0o600);
    run(&old_key, &from_file);
    // The same key from a second source.
    run(&old_key, "env:OPENAI_API_KEY");
    // The file gets a new key, and the old one is used again after that.
    sandbox.write("openai.key", new_key.as_bytes(), 0o600);
    run(&new_key, &from_file);
    run(&old_key, "env:OPENAI_API_KEY");

    let out = output(
        sandbox
            .keyrun()
            .args(["audit", "report", "--json"])
            .arg(&log),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_not_leaked(&out.stdout, &old_key, "the report");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let usages = report["fingerprints"].as_array().unwrap();
    assert_eq!(usages.len(), 2);

    let old = &usages[0];
    assert_eq!(old["fingerprint"], fingerprint(&old_key).as_str());
    assert_eq!(old["count"], 3);
    assert_eq!(old["sources"].as_array().unwrap().len(), 2);
    assert_eq!(old["commands"], serde_json::json!(["true"]));
    assert!(old["first_use"].is_string());
    assert!(old["last_use"].is_string());
    let kinds: Vec<&str> = old["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["new_source", "replaced"]);

    let new = &usages[1];
    assert_eq!(new["fingerprint"], fingerprint(&new_key).as_str());
    assert_eq!(new["count"], 1);
    assert_eq!(new["flags"], serde_json::json!([]));

    let text = output(sandbox.keyrun().args(["audit", "report"]).arg(&log));
    assert!(stdout(&text).contains("replaced"), "{}", stdout(&text));
    assert!(
        stdout(&text).contains(&fingerprint(&new_key)),
        "{}",
        stdout(&text)
    );
}

#[cfg(target_os = "linux")]
#[test]
fn memory_clean_with_audit_log() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let path = sandbox.write("key", key.as_bytes(), 0o600);
    let mut command = sandbox.keyrun();
    command
        .env("KEYRUN_AUDIT_LOG", sandbox.path().join("audit.log"))
        .args(["--from", &format!("file:{}", path.display())]);
    common::memory::assert_value_absent(command, &key);
}

#[test]
fn time_offset_follows_tz() {
    let sandbox = Sandbox::new();
    let log = sandbox.path().join("audit.log");
    // A POSIX TZ rule, so no zoneinfo file is needed: 5:30 east of UTC.
    let out = output(
        keyrun_logged(&sandbox, &log, &common::random_key())
            .env("TZ", "KRT-5:30")
            .args(["--", "true"]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let time = records(&log)[0]["time"].as_str().unwrap().to_string();
    assert!(time.ends_with("+05:30"), "{time}");
}
