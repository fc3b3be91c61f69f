//! `keyring:NAME`, `keyrun set` and `keyrun delete` against the real Linux
//! kernel key store (keyutils), each test in a session keyring of its own.

#![cfg(target_os = "linux")]

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::keyutils::{entry_name, join_session_keyring, EntryGuard};
use common::{assert_not_leaked, check_var_command, output, random_key, stderr, stdout, Sandbox};

/// A keyrun command that uses the keyutils store whatever the desktop
/// offers, so a test never writes to a developer's Secret Service.
fn keyrun(sandbox: &Sandbox) -> Command {
    let mut command = sandbox.keyrun();
    command.env("KEYRUN_KEYRING_STORE", "keyutils");
    command
}

/// Runs `keyrun set ARGS` with `input` on stdin.
fn set_with_stdin(sandbox: &Sandbox, args: &[&str], input: &[u8]) -> Output {
    let mut command = keyrun(sandbox);
    command
        .arg("set")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("keyrun starts");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs a child through `keyring:NAME` that reports whether
/// OPENAI_API_KEY equals `expected`.
fn run_with_entry(sandbox: &Sandbox, name: &str, expected: &str) -> Output {
    output(
        keyrun(sandbox)
            .args(["--from", &format!("keyring:{name}"), "--"])
            .args(check_var_command("OPENAI_API_KEY", expected)),
    )
}

#[test]
fn keyring_set_read_delete() {
    join_session_keyring();
    let sandbox = Sandbox::new();
    let name = entry_name("round_trip");
    let _guard = EntryGuard { name: name.clone() };
    let key = random_key();

    let set = set_with_stdin(&sandbox, &[&name], format!("{key}\n").as_bytes());
    assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));
    assert_not_leaked(&set.stderr, &key, "the stderr of keyrun set");
    assert!(stderr(&set).contains("kernel keyring (keyutils)"));

    let run = run_with_entry(&sandbox, &name, &key);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert_eq!(stdout(&run).trim(), "OPENAI_API_KEY=match");
    assert_not_leaked(&run.stderr, &key, "the stderr of keyrun");

    let delete = output(keyrun(&sandbox).args(["delete", &name]));
    assert_eq!(delete.status.code(), Some(0), "{}", stderr(&delete));

    let after = run_with_entry(&sandbox, &name, &key);
    assert_eq!(after.status.code(), Some(125));
    let message = stderr(&after);
    assert!(message.contains("no entry"), "{message}");
    assert!(message.contains(&format!("keyrun set {name}")), "{message}");
    assert_eq!(stdout(&after), "", "the child ran without its value");
}

#[test]
fn set_rejects_value_argument() {
    join_session_keyring();
    let sandbox = Sandbox::new();
    let name = entry_name("argument");
    let _guard = EntryGuard { name: name.clone() };
    let key = random_key();

    let set = output(keyrun(&sandbox).args(["set", &name, &key]));
    assert_eq!(set.status.code(), Some(125));
    let message = stderr(&set);
    assert!(message.contains("history"), "{message}");
    assert_not_leaked(&set.stderr, &key, "the error of keyrun set");

    let run = run_with_entry(&sandbox, &name, &key);
    assert_eq!(run.status.code(), Some(125), "nothing was stored");
}

#[test]
fn set_rejects_inner_whitespace() {
    join_session_keyring();
    let sandbox = Sandbox::new();
    let name = entry_name("whitespace");
    let _guard = EntryGuard { name: name.clone() };
    let key = random_key();

    let set = set_with_stdin(&sandbox, &[&name], format!("{key} extra\n").as_bytes());
    assert_eq!(set.status.code(), Some(125));
    assert!(stderr(&set).contains("whitespace"), "{}", stderr(&set));
    assert_not_leaked(&set.stderr, &key, "the error of keyrun set");

    let run = run_with_entry(&sandbox, &name, &key);
    assert_eq!(run.status.code(), Some(125), "nothing was stored");
}

#[test]
fn set_trims_quotes_with_warning() {
    join_session_keyring();
    let sandbox = Sandbox::new();
    let name = entry_name("quotes");
    let _guard = EntryGuard { name: name.clone() };
    let key = random_key();

    let set = set_with_stdin(&sandbox, &[&name], format!("'{key}'\n").as_bytes());
    assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));
    assert!(stderr(&set).contains("quotes"), "{}", stderr(&set));

    let run = run_with_entry(&sandbox, &name, &key);
    assert_eq!(stdout(&run).trim(), "OPENAI_API_KEY=match");
}

#[test]
fn set_rejects_empty_input() {
    join_session_keyring();
    let sandbox = Sandbox::new();
    let name = entry_name("empty");
    let set = set_with_stdin(&sandbox, &[&name], b"\n");
    assert_eq!(set.status.code(), Some(125));
    assert!(stderr(&set).contains("empty"), "{}", stderr(&set));
}

#[test]
fn set_imports_from_file() {
    join_session_keyring();
    let sandbox = Sandbox::new();
    let name = entry_name("import");
    let _guard = EntryGuard { name: name.clone() };
    let key = random_key();
    let path = sandbox.write("key", format!("{key}\n").as_bytes(), 0o600);

    let set = output(keyrun(&sandbox).args([
        "set",
        &name,
        "--from",
        &format!("file:{}", path.display()),
    ]));
    assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));
    assert_not_leaked(&set.stderr, &key, "the stderr of keyrun set");

    let run = run_with_entry(&sandbox, &name, &key);
    assert_eq!(stdout(&run).trim(), "OPENAI_API_KEY=match");
}

#[test]
fn set_import_failure_names_reference() {
    join_session_keyring();
    let sandbox = Sandbox::new();
    let name = entry_name("import_missing");
    let set = output(keyrun(&sandbox).args(["set", &name, "--from", "env:KEYRUN_TEST_UNSET"]));
    assert_eq!(set.status.code(), Some(125));
    assert!(
        stderr(&set).contains("env:KEYRUN_TEST_UNSET"),
        "{}",
        stderr(&set)
    );
}

#[test]
fn delete_missing_entry_fails() {
    join_session_keyring();
    let sandbox = Sandbox::new();
    let name = entry_name("missing");
    let delete = output(keyrun(&sandbox).args(["delete", &name]));
    assert_eq!(delete.status.code(), Some(125));
    assert!(stderr(&delete).contains("no entry"), "{}", stderr(&delete));
}

#[test]
fn keyring_rejects_field_and_unknown_option() {
    join_session_keyring();
    let sandbox = Sandbox::new();
    for (reference, expected) in [
        ("keyring:A#field", "no field"),
        ("keyring:A?region=x", "unknown option"),
        ("keyring:A?store=gnome", "not a store"),
        ("keyring:A?store=keychain", "not available"),
    ] {
        let run = output(keyrun(&sandbox).args(["--from", reference, "--", "true"]));
        assert_eq!(run.status.code(), Some(125), "{reference}");
        assert!(
            stderr(&run).contains(expected),
            "{reference}: {}",
            stderr(&run)
        );
    }
}

#[test]
fn memory_clean_with_keyring_source() {
    join_session_keyring();
    let sandbox = Sandbox::new();
    let name = entry_name("memory");
    let _guard = EntryGuard { name: name.clone() };
    let key = random_key();
    let set = set_with_stdin(&sandbox, &[&name], key.as_bytes());
    assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));

    let mut command = keyrun(&sandbox);
    command.args(["--from", &format!("keyring:{name}")]);
    common::memory::assert_value_absent(command, &key);
}
