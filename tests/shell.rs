//! `keyrun shell` without a terminal: $SHELL is a script that prints what
//! it receives, so the profile's name, the nesting check and the exit status
//! can be read from its output.

mod common;

use common::{assert_not_leaked, output, random_key, stderr, stdout, Sandbox};

/// A stand-in for $SHELL that prints KEYRUN_SHELL, whether it has the
/// expected value, and exits with status 7.
fn fake_shell(sandbox: &Sandbox, expected: &str) -> std::path::PathBuf {
    sandbox.write(
        "fake-shell",
        format!(
            "#!/bin/sh\necho \"marker=$KEYRUN_SHELL\"\n\
             if [ \"$OPENAI_API_KEY\" = '{expected}' ]; then echo value=match; else echo value=mismatch; fi\n\
             exit 7\n"
        )
        .as_bytes(),
        0o700,
    )
}

#[test]
fn shell_without_profile_is_default() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let shell = fake_shell(&sandbox, &key);
    let run = output(
        sandbox
            .keyrun()
            .env("SHELL", &shell)
            .env("OPENAI_API_KEY", &key)
            .arg("shell"),
    );
    assert_eq!(run.status.code(), Some(7), "{}", stderr(&run));
    let text = stdout(&run);
    assert!(text.contains("marker=default\n"), "{text}");
    assert!(text.contains("value=match\n"), "{text}");
    assert_not_leaked(&run.stderr, &key, "the stderr of keyrun shell");
}

#[test]
fn shell_marker_names_profile() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let shell = fake_shell(&sandbox, &key);
    let config = sandbox.write(
        "config.toml",
        b"[profiles.dev]\nenv.OPENAI_API_KEY = \"env:MY_KEY\"\n",
        0o600,
    );
    let run = output(
        sandbox
            .keyrun()
            .env("SHELL", &shell)
            .env("MY_KEY", &key)
            .arg("shell")
            .arg("--config")
            .arg(&config)
            .args(["--profile", "dev"]),
    );
    assert_eq!(run.status.code(), Some(7), "{}", stderr(&run));
    let text = stdout(&run);
    assert!(text.contains("marker=dev\n"), "{text}");
    assert!(text.contains("value=match\n"), "{text}");
}

#[test]
fn shell_refuses_nesting() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let shell = fake_shell(&sandbox, &key);
    let run = output(
        sandbox
            .keyrun()
            .env("SHELL", &shell)
            .env("OPENAI_API_KEY", &key)
            .env("KEYRUN_SHELL", "dev")
            .arg("shell"),
    );
    assert_eq!(run.status.code(), Some(125));
    assert_eq!(stdout(&run), "", "the shell started");
    let message = stderr(&run);
    assert!(message.contains("profile dev"), "{message}");
    assert!(message.contains("`exit`"), "{message}");
    assert!(message.contains("--force"), "{message}");
}

#[test]
fn shell_force_nests() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let shell = fake_shell(&sandbox, &key);
    let run = output(
        sandbox
            .keyrun()
            .env("SHELL", &shell)
            .env("OPENAI_API_KEY", &key)
            .env("KEYRUN_SHELL", "dev")
            .args(["shell", "--force"]),
    );
    assert_eq!(run.status.code(), Some(7), "{}", stderr(&run));
    assert!(
        stdout(&run).contains("marker=default\n"),
        "{}",
        stdout(&run)
    );
}

#[test]
fn shell_falls_back_to_bin_sh() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", &key)
        .arg("shell")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo \"marker=$KEYRUN_SHELL\"\n")
        .unwrap();
    let run = child.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert!(
        stdout(&run).contains("marker=default\n"),
        "{}",
        stdout(&run)
    );
    assert!(stderr(&run).contains("/bin/sh"), "{}", stderr(&run));
}
