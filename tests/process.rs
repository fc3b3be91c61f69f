//! keyrun as a process, on the real binary: trust records that a path
//! cannot forge, closed or broken standard streams, the exit status of a
//! child killed by a real-time signal, and a script whose interpreter is
//! missing.

mod common;

use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_not_leaked, output, stderr, Sandbox};

/// A configuration whose default profile resolves OPENAI_API_KEY with a
/// `cmd:` that creates `marker`, so a test can check whether it ran.
fn marker_config(marker: &Path, key: &str) -> String {
    format!(
        "default_profile = \"dev\"\n\n[profiles.dev]\nenv.OPENAI_API_KEY = \"cmd:sh -c 'touch {} && echo {key}'\"\n",
        marker.display()
    )
}

fn store(sandbox: &Sandbox) -> PathBuf {
    sandbox.path().join("state/keyrun/trusted")
}

/// `keyrun -- true` with `dir` as the working directory.
fn run_in(sandbox: &Sandbox, dir: &Path) -> std::process::Output {
    let mut command = sandbox.keyrun();
    command
        .current_dir(dir)
        .env("OPENAI_API_KEY", common::random_key())
        .args(["--", "true"]);
    output(&mut command)
}

fn sha256_hex(content: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn trust_rejects_newline_in_path() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let marker = sandbox.path().join("ran");
    let other = sandbox.path().join("other");
    let hostile = marker_config(&marker, &key);
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("keyrun.toml"), &hostile).unwrap();

    // A folder whose name, written as one store line, would end that line
    // and add a record for other/keyrun.toml with the hostile file's hash.
    let forged = format!(
        "inner\n{} {}",
        sha256_hex(hostile.as_bytes()),
        other.join("keyrun.toml").display()
    );
    let inner = sandbox.path().join(forged);
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::write(inner.join("keyrun.toml"), b"# reviewed\n").unwrap();

    let mut trust = sandbox.keyrun();
    trust.current_dir(&inner).arg("trust");
    let out = output(&mut trust);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("control character"),
        "{}",
        stderr(&out)
    );
    let records = std::fs::read_to_string(store(&sandbox)).unwrap_or_default();
    assert!(!records.contains("other"), "{records}");

    let out = run_in(&sandbox, &other);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not trusted"), "{}", stderr(&out));
    assert!(!marker.exists(), "the untrusted cmd: ran");
    assert_not_leaked(&out.stderr, &key, "stderr");
}

#[test]
fn discovery_rejects_newline_in_path() {
    let sandbox = Sandbox::new();
    let inner = sandbox.path().join("a\nb");
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::write(inner.join("keyrun.toml"), b"# reviewed\n").unwrap();

    let out = run_in(&sandbox, &inner);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("control character"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn trust_store_rejects_invalid_record() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let marker = sandbox.path().join("ran");
    let project = sandbox.path().join("project");
    let config = marker_config(&marker, &key);
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("keyrun.toml"), &config).unwrap();

    // A valid record for the file, after a line that is not a record.
    let record = format!(
        "{} {}\n",
        sha256_hex(config.as_bytes()),
        project.join("keyrun.toml").display()
    );
    std::fs::create_dir_all(store(&sandbox).parent().unwrap()).unwrap();
    std::fs::write(store(&sandbox), format!("inner\n{record}")).unwrap();

    let out = run_in(&sandbox, &project);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("line 1"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid trust record"),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists(), "the cmd: ran with an invalid store");
}

#[test]
fn trust_stores_encoded_path() {
    let sandbox = Sandbox::new();
    let project = sandbox.path().join("my project %41");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("keyrun.toml"), b"# reviewed\n").unwrap();

    let mut trust = sandbox.keyrun();
    trust.current_dir(&project).arg("trust");
    let out = output(&mut trust);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = std::fs::read_to_string(store(&sandbox)).unwrap();
    assert!(records.contains("my%20project%20%2541"), "{records}");

    let out = run_in(&sandbox, &project);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn trust_through_symlinked_folder() {
    let sandbox = Sandbox::new();
    let real = sandbox.path().join("real");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(real.join("keyrun.toml"), b"# reviewed\n").unwrap();
    let link = sandbox.path().join("link");
    symlink(&real, &link).unwrap();

    let mut trust = sandbox.keyrun();
    trust.args(["trust", link.join("keyrun.toml").to_str().unwrap()]);
    let out = output(&mut trust);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = run_in(&sandbox, &real);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run_in(&sandbox, &link);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn trust_not_shared_by_symlinked_file() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let marker = sandbox.path().join("ran");
    let trusted = sandbox.path().join("trusted");
    std::fs::create_dir_all(&trusted).unwrap();
    std::fs::write(trusted.join("keyrun.toml"), marker_config(&marker, &key)).unwrap();
    let mut trust = sandbox.keyrun();
    trust.current_dir(&trusted).arg("trust");
    assert_eq!(output(&mut trust).status.code(), Some(0));

    // Another folder whose keyrun.toml links to the trusted file: its cmd:
    // would run in a folder the user never reviewed.
    let other = sandbox.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    symlink(trusted.join("keyrun.toml"), other.join("keyrun.toml")).unwrap();

    let out = run_in(&sandbox, &other);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not trusted"), "{}", stderr(&out));
    assert!(!marker.exists(), "the cmd: ran through the link");
}

/// Runs `script` with `sh`, passing the keyrun binary as `$0`, and waits at
/// most 20 seconds.
fn run_shell(sandbox: &Sandbox, script: &str) -> (Option<i32>, Duration) {
    let mut command = sandbox.keyrun();
    command.env("OPENAI_API_KEY", common::random_key());
    let program = command.get_program().to_owned();
    let mut shell = Command::new("sh");
    shell
        .args(["-c", script])
        .arg(program)
        .current_dir(sandbox.path())
        .env_clear()
        .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = shell.spawn().unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            return (None, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn closed_streams_do_not_hang() {
    let sandbox = Sandbox::new();
    let done = sandbox.path().join("done");
    let script = format!(
        "exec \"$0\" -v -- sh -c 'sleep 1; echo done > {}' >&- 2>&-",
        done.display()
    );
    let (code, elapsed) = run_shell(&sandbox, &script);
    assert_eq!(code, Some(0), "after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_eq!(std::fs::read_to_string(&done).unwrap(), "done\n");
}

#[test]
fn closed_streams_opened_as_null() {
    let sandbox = Sandbox::new();
    let seen = sandbox.path().join("seen");
    // The child reports which of its standard streams are open.
    let script = format!(
        "exec \"$0\" -- sh -c 'for fd in 0 1 2; do if [ -e /proc/self/fd/$fd ]; then echo open; else echo closed; fi; done > {}' <&- >&- 2>&-",
        seen.display()
    );
    let (code, _) = run_shell(&sandbox, &script);
    assert_eq!(code, Some(0));
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        "open\nopen\nopen\n"
    );
}

/// Returns the write end of a pipe whose read end is closed, so every
/// write to it fails with EPIPE.
fn broken_pipe() -> Stdio {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    Stdio::from(writer)
}

#[test]
fn broken_stderr_with_logs_runs_child() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", common::random_key())
        .args(["-v", "--", "sh", "-c", "exit 7"])
        .stderr(broken_pipe());
    let status = command.status().unwrap();
    assert_eq!(status.code(), Some(7), "{status:?}");
}

#[test]
fn broken_stderr_on_error_exits_125() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.keyrun();
    command
        .args(["--from", "env:KEYRUN_TEST_UNSET", "--", "true"])
        .stderr(broken_pipe());
    let status = command.status().unwrap();
    assert_eq!(status.code(), Some(125), "{status:?}");
}

#[test]
fn broken_stderr_on_missing_command() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", common::random_key())
        .args(["--", "keyrun-test-no-such-command"])
        .stderr(broken_pipe());
    let status = command.status().unwrap();
    assert_eq!(status.code(), Some(127), "{status:?}");
}

#[test]
fn completions_to_broken_pipe() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.keyrun();
    command
        .args(["completions", "bash"])
        .stdout(broken_pipe())
        .stderr(Stdio::piped());
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", out.status);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn ci_mask_to_broken_pipe_fails() {
    let sandbox = Sandbox::new();
    let marker = sandbox.path().join("ran");
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", common::random_key())
        .env("GITHUB_ACTIONS", "true")
        .args(["--", "touch"])
        .arg(&marker)
        .stdout(broken_pipe())
        .stderr(Stdio::piped());
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(!marker.exists(), "the command ran without its CI masks");
    assert!(
        stderr(&out).contains("cannot register the values"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn failed_check_to_broken_pipe_keeps_status() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.keyrun();
    command
        .args(["check", "--from", "file:/nonexistent/keyrun-test"])
        .stdout(broken_pipe());
    let status = command.status().unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}");
}

#[test]
fn broken_log_verify_to_broken_pipe_keeps_status() {
    let sandbox = Sandbox::new();
    let log = sandbox.write("audit.log", b"{\"seq\":5,\"prev\":\"bad\"}\n", 0o600);
    let mut command = sandbox.keyrun();
    command
        .args(["audit", "verify"])
        .arg(&log)
        .stdout(broken_pipe());
    let status = command.status().unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}");
}

#[cfg(target_os = "linux")]
#[test]
fn realtime_signal_reraised() {
    let sandbox = Sandbox::new();
    let number = libc::SIGRTMIN() + 3;
    let mut command = sandbox.keyrun();
    command.env("OPENAI_API_KEY", common::random_key()).args([
        "--",
        "sh",
        "-c",
        &format!("kill -{number} $$"),
    ]);
    let out = output(&mut command);
    assert_eq!(out.status.signal(), Some(number), "{:?}", out.status);
    assert_eq!(out.status.code(), None);
}

#[test]
fn missing_interpreter_named() {
    let sandbox = Sandbox::new();
    let script = sandbox.write(
        "bin/keyrun-test-script",
        b"#!/nonexistent/interp\necho hi\n",
        0o755,
    );

    let mut by_path = sandbox.keyrun();
    by_path
        .env("OPENAI_API_KEY", common::random_key())
        .arg("--")
        .arg(&script);
    let out = output(&mut by_path);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("interpreter \"/nonexistent/interp\" was not found"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("command not found"),
        "{}",
        stderr(&out)
    );

    let path = format!(
        "{}:{}",
        sandbox.path().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut by_name = sandbox.keyrun();
    by_name
        .env("OPENAI_API_KEY", common::random_key())
        .env("PATH", path)
        .args(["--", "keyrun-test-script"]);
    let out = output(&mut by_name);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("/nonexistent/interp"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_command_still_not_found() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", common::random_key())
        .args(["--", "keyrun-test-no-such-command"]);
    let out = output(&mut command);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("command not found"),
        "{}",
        stderr(&out)
    );
}
