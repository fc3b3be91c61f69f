//! Hostile input against the real binary: values pasted where a reference
//! belongs, commands that leak, flood or hang, files that are not what they
//! seem. Each test checks that keyrun fails cleanly (exit 125, a message
//! that names the place) without ever printing the value.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_not_leaked, env_has_command, output, stderr, stdout, Sandbox};

/// keyrun's exit status for its own failures.
const FAILURE: i32 = 125;

fn run(command: &mut Command) -> Output {
    output(command.stdin(Stdio::null()))
}

/// Runs a command that must end within `limit`; kills it and fails the
/// test when it does not, so a hang is a failure and not a stuck suite.
fn run_within(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyrun runs");
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keyrun did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn assert_failed_without(out: &Output, secret: &str) {
    assert_not_leaked(&out.stderr, secret, "stderr");
    assert_not_leaked(&out.stdout, secret, "stdout");
    assert_eq!(out.status.code(), Some(FAILURE), "{}", stderr(out));
}

/// Runs `keyrun --from cmd:sh -c SCRIPT -- true` with `KEY` in the script's
/// environment, so the reference text itself never holds the key.
fn run_cmd(sandbox: &Sandbox, key: &str, script: &str, extra: &[&str]) -> Output {
    let reference = format!("cmd:sh -c '{script}'");
    run(sandbox
        .keyrun()
        .env("KEY", key)
        .args(extra)
        .args(["--from", &reference, "--", "true"]))
}

fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie waits for its parent to reap it; it no longer runs.
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn env_file_value_not_quoted() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let env_file = sandbox.write(".env", format!("OPENAI_API_KEY={key}\n").as_bytes(), 0o600);
    let out = run(sandbox
        .keyrun()
        .arg("--env-file")
        .arg(&env_file)
        .args(["--", "true"]));
    assert_failed_without(&out, &key);
    assert!(stderr(&out).contains("line 1"), "{}", stderr(&out));
    assert!(stderr(&out).contains("no scheme"), "{}", stderr(&out));
}

#[test]
fn url_password_not_quoted() {
    let sandbox = Sandbox::new();
    let password = common::random_key();
    let text = format!("DATABASE_URL=postgres://admin:{password}@127.0.0.1/db\n");
    let env_file = sandbox.write(".env", text.as_bytes(), 0o600);
    let out = run(sandbox
        .keyrun()
        .arg("--env-file")
        .arg(&env_file)
        .args(["--", "true"]));
    assert_failed_without(&out, &password);
    assert!(stderr(&out).contains("\"postgres\""), "{}", stderr(&out));
}

#[test]
fn set_and_from_values_not_quoted() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let set = run(sandbox
        .keyrun()
        .args(["--set", &format!("X={key}"), "--", "true"]));
    assert_failed_without(&set, &key);
    assert!(stderr(&set).contains("--set X"), "{}", stderr(&set));
    let bare = run(sandbox.keyrun().args(["--set", &key, "--", "true"]));
    assert_failed_without(&bare, &key);
    let from = run(sandbox.keyrun().args(["--from", &key, "--", "true"]));
    assert_failed_without(&from, &key);
    assert!(stderr(&from).contains("--from"), "{}", stderr(&from));
}

#[test]
fn profile_value_not_quoted() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let text = format!("[profiles.dev]\nenv.OPENAI_API_KEY = \"{key}\"\n");
    let config = sandbox.write("config.toml", text.as_bytes(), 0o600);
    let out =
        run(sandbox
            .keyrun()
            .arg("--config")
            .arg(&config)
            .args(["--profile", "dev", "--", "true"]));
    assert_failed_without(&out, &key);
    assert!(
        stderr(&out).contains("profiles.dev.env.OPENAI_API_KEY"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn toml_errors_not_quoted() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let cases = [
        format!("{key}\n"),
        format!("[profiles.dev]\nOPENAI_API_KEY = \"{key}\"\n"),
        format!("[profiles.dev]\nenv.A = {{ from = \"file:/x\", value = \"{key}\" }}\n"),
        format!("[profiles.dev]\nenv.A = {{ from = \"file:/x\", raw = \"{key}\" }}\n"),
        format!("OPENAI_API_KEY={key}\n"),
    ];
    for (index, text) in cases.iter().enumerate() {
        let config = sandbox.write(&format!("c{index}.toml"), text.as_bytes(), 0o600);
        let out = run(sandbox
            .keyrun()
            .arg("--config")
            .arg(&config)
            .args(["--", "true"]));
        assert_failed_without(&out, &key);
        assert!(
            stderr(&out).contains(", line "),
            "case {index}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("column"),
            "case {index}: {}",
            stderr(&out)
        );
        let trust = run(sandbox.keyrun().arg("trust").arg(&config));
        assert_failed_without(&trust, &key);
    }
}

#[test]
fn cmd_stderr_quoted_value_hidden() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let out = run_cmd(
        &sandbox,
        &key,
        r#"printf "\"%s\"\n" "$KEY"; echo "auth failed for $KEY" >&2; exit 1"#,
        &[],
    );
    assert_failed_without(&out, &key);
    assert!(stderr(&out).contains("auth failed for"), "{}", stderr(&out));
}

#[test]
fn cmd_stderr_extra_lines_hidden() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let out = run_cmd(
        &sandbox,
        &key,
        r#"printf "%s\nexpires: never\n" "$KEY"; echo "warn: $KEY" >&2; exit 1"#,
        &[],
    );
    assert_failed_without(&out, &key);
    let success = run_cmd(
        &sandbox,
        &key,
        r#"printf "%s\nexpires: never\n" "$KEY"; echo "warn: $KEY" >&2"#,
        &[],
    );
    assert_failed_without(&success, &key);
}

#[test]
fn cmd_stderr_only_value_hidden() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let failed = run_cmd(&sandbox, &key, r#"echo "$KEY" >&2; exit 1"#, &[]);
    assert_failed_without(&failed, &key);
    let succeeded = run_cmd(&sandbox, &key, r#"echo "token: $KEY" >&2"#, &[]);
    assert_failed_without(&succeeded, &key);
    assert!(
        stderr(&succeeded).contains("printed nothing on stdout"),
        "{}",
        stderr(&succeeded)
    );
}

#[test]
fn cmd_failure_keeps_stderr_message() {
    let sandbox = Sandbox::new();
    let out = run(sandbox.keyrun().args([
        "--from",
        "cmd:sh -c 'echo \"item openai not found\" >&2; exit 3'",
        "--",
        "true",
    ]));
    assert_eq!(out.status.code(), Some(FAILURE));
    assert!(
        stderr(&out).contains("item openai not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn cmd_display_hides_credentials() {
    let sandbox = Sandbox::new();
    let (token, password, user_password) = ("tok0a1b2c3d4", "hunter2zz", "hunter3zz");
    let reference = format!(
        "cmd:false -H \"Authorization: Bearer {token}\" --pw {password} -u admin:{user_password}"
    );
    let out = run(sandbox
        .keyrun()
        .args(["-v", "--from", &reference, "--", "true"]));
    assert_eq!(out.status.code(), Some(FAILURE));
    for secret in [token, password, user_password] {
        assert_not_leaked(&out.stderr, secret, "stderr");
    }
    assert!(stderr(&out).contains("cmd:false -H"), "{}", stderr(&out));
}

#[test]
fn cmd_stderr_flood_bounded() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let config = sandbox.write("c.toml", b"[command]\ntimeout = \"2s\"\n", 0o600);
    let out = run(sandbox
        .keyrun()
        .env("KEY", &key)
        .arg("--config")
        .arg(&config)
        .args(["--from", "cmd:sh -c 'yes \"$KEY\" >&2'", "--", "true"]));
    assert_failed_without(&out, &key);
    assert!(
        stderr(&out).contains("did not finish within 2s"),
        "{}",
        stderr(&out)
    );
    // The message carries at most the kept tail of stderr.
    assert!(out.stderr.len() < 8 * 1024, "{} bytes", out.stderr.len());
}

#[test]
fn cmd_stdout_flood_stops_early() {
    let sandbox = Sandbox::new();
    let started = Instant::now();
    let out = run(sandbox.keyrun().args(["--from", "cmd:yes", "--", "true"]));
    assert_eq!(out.status.code(), Some(FAILURE));
    assert!(
        stderr(&out).contains("more than 65536 bytes"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn cmd_timeout_covers_wait() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let config = sandbox.write("c.toml", b"[command]\ntimeout = \"2s\"\n", 0o600);
    let started = Instant::now();
    let out = run_cmd(
        &sandbox,
        &key,
        r#"echo "$KEY"; exec >&- 2>&-; sleep 8"#,
        &["--config", config.to_str().unwrap()],
    );
    assert_failed_without(&out, &key);
    assert!(
        stderr(&out).contains("did not finish within 2s"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn cmd_grandchild_killed() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let pid_file = sandbox.path().join("grandchild.pid");
    let script = format!(
        r#"echo "$KEY"; sleep 30 & echo $! > {}"#,
        pid_file.display()
    );
    let started = Instant::now();
    let out = run_cmd(&sandbox, &key, &script, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let pid = read_pid(&pid_file);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!process_alive(pid), "the grandchild {pid} still runs");
}

#[test]
fn cmd_group_killed_on_sigterm() {
    let sandbox = Sandbox::new();
    let pid_file = sandbox.path().join("fetch.pid");
    let reference = format!(
        "cmd:sh -c 'sleep 30 & echo $! > {}; wait'",
        pid_file.display()
    );
    let mut keyrun = sandbox
        .keyrun()
        .args(["--from", &reference, "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = read_pid(&pid_file);
    let keyrun_pid = nix::unistd::Pid::from_raw(keyrun.id() as i32);
    nix::sys::signal::kill(keyrun_pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = keyrun.wait().unwrap();
    assert!(!status.success());
    std::thread::sleep(Duration::from_millis(200));
    assert!(!process_alive(pid), "the fetch process {pid} still runs");
}

#[test]
fn tls_settings_fifo_and_device_rejected() {
    let sandbox = Sandbox::new();
    let fifo = sandbox.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let limit = Duration::from_secs(5);
    // Nothing listens on the address: each run must fail on the setting,
    // before any connection.
    let cases = [
        ("VAULT_CACERT", fifo.clone()),
        ("VAULT_CACERT", PathBuf::from("/dev/zero")),
        ("SSL_CERT_FILE", fifo.clone()),
        ("SSL_CERT_FILE", PathBuf::from("/dev/zero")),
    ];
    for (variable, path) in cases {
        let out = run_within(
            sandbox
                .keyrun()
                .env("VAULT_ADDR", "https://127.0.0.1:1")
                .env("VAULT_TOKEN", common::random_key())
                .env(variable, &path)
                .args(["--from", "vault:secret/openai?kv=2#api_key", "--", "true"]),
            limit,
        );
        assert_eq!(out.status.code(), Some(FAILURE), "{variable}={path:?}");
        assert!(
            stderr(&out).contains("not a regular file"),
            "{variable}={path:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(variable), "{}", stderr(&out));
    }
}

#[test]
fn vault_address_password_not_quoted() {
    let sandbox = Sandbox::new();
    let password = common::random_key();
    for address in [
        format!("http://admin:{password}@127.0.0.1:1"),
        format!("http://:{password}@127.0.0.1:1"),
    ] {
        let out = run_within(
            sandbox
                .keyrun()
                .env("VAULT_ADDR", &address)
                .env("VAULT_TOKEN", common::random_key())
                .args(["--from", "vault:secret/openai?kv=2#api_key", "--", "true"]),
            Duration::from_secs(10),
        );
        assert_failed_without(&out, &password);
        assert!(
            stderr(&out).contains("user name or password"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn error_controls_escaped() {
    let sandbox = Sandbox::new();
    let from = "file:/nonexistent/%1b]0;title%07%1b[2J";
    let out = run(sandbox.keyrun().args(["--from", from, "--", "true"]));
    assert_eq!(out.status.code(), Some(FAILURE), "{}", stderr(&out));
    assert!(!out.stderr.contains(&0x1b), "raw ESC on stderr");
    assert!(!out.stderr.contains(&0x07), "raw BEL on stderr");
    assert!(stderr(&out).contains("\\u{1b}"), "{}", stderr(&out));
}

#[test]
fn file_fifo_rejected() {
    let sandbox = Sandbox::new();
    let fifo = sandbox.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let limit = Duration::from_secs(5);
    let from = format!("file:{}", fifo.display());
    let out = run_within(
        sandbox.keyrun().args(["--from", &from, "--", "true"]),
        limit,
    );
    assert_eq!(out.status.code(), Some(FAILURE));
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    for flag in ["--config", "--env-file"] {
        let out = run_within(
            sandbox.keyrun().arg(flag).arg(&fifo).args(["--", "true"]),
            limit,
        );
        assert_eq!(out.status.code(), Some(FAILURE), "{flag}");
        assert!(
            stderr(&out).contains("not a regular file"),
            "{flag}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn config_device_rejected() {
    let sandbox = Sandbox::new();
    let limit = Duration::from_secs(5);
    let out = run_within(
        sandbox
            .keyrun()
            .args(["--config", "/dev/zero", "--", "true"]),
        limit,
    );
    assert_eq!(out.status.code(), Some(FAILURE));
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    let big = sandbox.write("big.toml", &vec![b'#'; 2 * 1024 * 1024], 0o600);
    let out = run_within(
        sandbox
            .keyrun()
            .arg("--config")
            .arg(&big)
            .args(["--", "true"]),
        limit,
    );
    assert_eq!(out.status.code(), Some(FAILURE));
    assert!(stderr(&out).contains("byte limit"), "{}", stderr(&out));
}

#[test]
fn file_writable_by_others_rejected() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    for mode in [0o622, 0o620] {
        let path = sandbox.write("key", key.as_bytes(), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let from = format!("file:{}", path.display());
        let out = run(sandbox.keyrun().args(["--from", &from, "--", "true"]));
        assert_failed_without(&out, &key);
        assert!(
            stderr(&out).contains("written by other users"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn huge_timeouts_rejected() {
    let sandbox = Sandbox::new();
    let cases = [
        "timeout = \"99999999999999999999s\"",
        "timeout = 9223372036854775807",
        "timeout = \"2d\"",
        "timeout = 0",
        "timeout = \"0.0000000001s\"",
    ];
    for case in cases {
        let config = sandbox.write("c.toml", format!("[command]\n{case}\n").as_bytes(), 0o600);
        let out = run(sandbox.keyrun().arg("--config").arg(&config).args([
            "--from",
            "cmd:echo sk-test-0123456789abcdef",
            "--",
            "true",
        ]));
        assert_eq!(out.status.code(), Some(FAILURE), "{case}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("panicked"),
            "{case}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("[command] timeout"),
            "{case}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn unknown_option_rejected() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let path = sandbox.write("key", key.as_bytes(), 0o600);
    let from = format!("file:{}?allow_readabel=true", path.display());
    let out = run(sandbox.keyrun().args(["--from", &from, "--", "true"]));
    assert_failed_without(&out, &key);
    assert!(
        stderr(&out).contains("\"allow_readabel\""),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("known options: allow_readable"),
        "{}",
        stderr(&out)
    );

    let field = format!("file:{}#api_key", path.display());
    let out = run(sandbox.keyrun().args(["--from", &field, "--", "true"]));
    assert_failed_without(&out, &key);
    assert!(stderr(&out).contains("#field"), "{}", stderr(&out));

    let env = run(sandbox
        .keyrun()
        .env("A", &key)
        .args(["--from", "env:A?x=1", "--", "true"]));
    assert_failed_without(&env, &key);
    assert!(stderr(&env).contains("take no options"), "{}", stderr(&env));
}

#[test]
fn value_bom_stripped_with_warning() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let path = sandbox.write("key", format!("\u{feff}{key}\n").as_bytes(), 0o600);
    let from = format!("file:{}", path.display());
    let out = run(sandbox
        .keyrun()
        .args(["--from", &from, "--"])
        .args(common::check_var_command("OPENAI_API_KEY", &key)));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("OPENAI_API_KEY=match"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("byte order mark"), "{}", stderr(&out));
}

#[test]
fn value_invisible_characters_rejected() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let cases: [Vec<u8>; 3] = [
        format!("{key}\u{a0}").into_bytes(),
        format!("{}\u{200b}{}", &key[..10], &key[10..]).into_bytes(),
        [key.as_bytes(), b"\xff\xfe"].concat(),
    ];
    for (index, content) in cases.iter().enumerate() {
        let path = sandbox.write(&format!("key{index}"), content, 0o600);
        let from = format!("file:{}", path.display());
        let out = run(sandbox.keyrun().args(["--from", &from, "--", "true"]));
        assert_failed_without(&out, &key);
    }
}

#[test]
fn value_dotenv_line_warns() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let path = sandbox.write("key", format!("OPENAI_API_KEY={key}\n").as_bytes(), 0o600);
    let from = format!("file:{}", path.display());
    let out = run(sandbox.keyrun().args(["--from", &from, "--", "true"]));
    assert_not_leaked(&out.stderr, &key, "stderr");
    assert!(
        stderr(&out).contains("starts with NAME="),
        "{}",
        stderr(&out)
    );
}

#[test]
fn env_file_syntax_edges() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let text = "\u{feff}export\tA=env:SRC\nB=\"env:SRC\"\n";
    let env_file = sandbox.write(".env", text.as_bytes(), 0o600);
    let out = run(sandbox
        .keyrun()
        .env("SRC", &key)
        .arg("--env-file")
        .arg(&env_file)
        .arg("--")
        .args(common::check_var_command("A", &key)));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("A=match"), "{}", stdout(&out));

    let bad = sandbox.write("bad.env", b"A=\"env:SRC\" \"x\"\n", 0o600);
    let out = run(sandbox
        .keyrun()
        .env("SRC", &key)
        .arg("--env-file")
        .arg(&bad)
        .args(["--", "true"]));
    assert_failed_without(&out, &key);
    assert!(
        stderr(&out).contains("after the closing quote"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn env_copy_keeps_default_variable() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let out = run(sandbox
        .keyrun()
        .env("OPENAI_API_KEY", &key)
        .args(["--set", "COPY=env:OPENAI_API_KEY", "--"])
        .args(env_has_command("OPENAI_API_KEY")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("OPENAI_API_KEY=present"),
        "{}",
        stdout(&out)
    );
}
