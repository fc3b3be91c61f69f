//! Output masking on the real binary: the child's output reaches the
//! test through pipes (masked under `--mask auto`) or through a
//! pseudo-terminal the test opens (`--mask always`). No test prints a
//! value: checks compare without formatting it.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::{assert_not_leaked, output, random_key, stderr, stdout, Sandbox};

/// A key with characters that base64, percent-encoding and JSON change.
fn awkward_key() -> String {
    format!("{}+/?\"&", random_key())
}

/// keyrun with `key` as OPENAI_API_KEY, running `script` under `sh -c`.
fn keyrun_sh(sandbox: &Sandbox, key: &str, script: &str) -> Command {
    keyrun_with(sandbox, key, &[], script)
}

/// keyrun with `options`, `key` as OPENAI_API_KEY, running `script` under
/// `sh -c`.
fn keyrun_with(sandbox: &Sandbox, key: &str, options: &[&str], script: &str) -> Command {
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", key)
        .args(options)
        .args(["--", "sh", "-c", script]);
    command
}

/// Writes a configuration file and returns the options that select its
/// profile `p`.
fn profile_options(sandbox: &Sandbox, toml: &str) -> [String; 4] {
    let path = sandbox.write("keyrun.toml", toml.as_bytes(), 0o600);
    [
        "--config".to_string(),
        path.to_str().unwrap().to_string(),
        "--profile".to_string(),
        "p".to_string(),
    ]
}

fn refs(options: &[String]) -> Vec<&str> {
    options.iter().map(String::as_str).collect()
}

#[test]
fn echoed_key_is_masked() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let out = output(&mut keyrun_sh(
        &sandbox,
        &key,
        r#"echo "key=$OPENAI_API_KEY done""#,
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_not_leaked(&out.stdout, &key, "stdout");
    assert_eq!(stdout(&out), "key=*** done\n");
}

#[test]
fn key_split_across_writes_is_masked() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let (head, tail) = key.split_at(10);
    let (middle, tail) = tail.split_at(12);
    let mut command = keyrun_sh(
        &sandbox,
        &key,
        r#"printf 'x %s' "$A"; sleep 0.005; printf '%s' "$B"; sleep 0.005; printf '%s y\n' "$C""#,
    );
    command.env("A", head).env("B", middle).env("C", tail);
    let out = output(&mut command);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_not_leaked(&out.stdout, &key, "stdout");
    assert_eq!(stdout(&out), "x *** y\n");
}

#[test]
fn key_on_stderr_is_masked_separately() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let out = output(&mut keyrun_sh(
        &sandbox,
        &key,
        r#"echo "out $OPENAI_API_KEY"; echo "err $OPENAI_API_KEY" >&2; echo out2"#,
    ));
    assert!(out.status.success());
    assert_not_leaked(&out.stdout, &key, "stdout");
    assert_not_leaked(&out.stderr, &key, "stderr");
    assert_eq!(stdout(&out), "out ***\nout2\n");
    assert_eq!(stderr(&out), "err ***\n");
}

#[test]
fn binary_output_passes_byte_exact() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let out = output(&mut keyrun_sh(
        &sandbox,
        &key,
        r#"printf 'a\000b\377\r\n\tc'; printf '%s\000' "$OPENAI_API_KEY""#,
    ));
    assert!(out.status.success());
    assert_eq!(out.stdout, b"a\0b\xff\r\n\tc***\0");
}

#[test]
fn encoded_forms_are_masked() {
    let sandbox = Sandbox::new();
    let key = awkward_key();
    let forms = [
        ("standard base64", STANDARD.encode(&key)),
        ("URL-safe base64", URL_SAFE_NO_PAD.encode(&key)),
        ("base64 after one byte", STANDARD.encode(format!("u{key}"))),
        (
            "base64 after two bytes",
            STANDARD.encode(format!("us{key}")),
        ),
        (
            "Basic authorization",
            STANDARD.encode(format!("user:{key}")),
        ),
        ("percent-encoded", percent_encode(&key)),
        ("JSON-escaped", key.replace('"', "\\\"")),
    ];
    for (name, form) in forms {
        let mut command = keyrun_sh(&sandbox, &key, r#"printf '<%s>\n' "$FORM""#);
        command.env("FORM", &form);
        let out = output(&mut command);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_not_leaked(&out.stdout, &form, name);
        assert!(stdout(&out).contains("***"), "{name}: no replacement");
        // What is left is at most the characters that encode the bytes
        // around the value ("u", "us", "user:") and one on each side that
        // mixes them with it.
        assert!(
            out.stdout.len() <= "<***>\n".len() + 8,
            "{name}: more than the edges is left"
        );
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn json_fields_are_masked_on_their_own() {
    let sandbox = Sandbox::new();
    let user = format!("user-{}", &random_key()[8..20]);
    let password = random_key();
    let secret = format!(r#"{{"user":"{user}","password":"{password}"}}"#);
    let config = sandbox.write(
        "keyrun.toml",
        b"[profiles.p]\nenv.CREDS = { from = \"env:CREDS_JSON\", raw = true }\n",
        0o600,
    );
    let mut command = sandbox.keyrun();
    command
        .env("CREDS_JSON", &secret)
        .env("P", &password)
        .env("U", &user)
        .arg("--config")
        .arg(&config)
        .args(["--profile", "p", "--", "sh", "-c"])
        .arg(r#"echo "password=$P"; echo "user=$U"; echo "all=$CREDS""#);
    let out = output(&mut command);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_not_leaked(&out.stdout, &password, "stdout");
    assert_not_leaked(&out.stdout, &user, "stdout");
    assert_eq!(stdout(&out), "password=***\nuser=***\nall=***\n");
}

#[test]
fn mask_never_passes_output_through() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = keyrun_with(
        &sandbox,
        &key,
        &["--mask", "never"],
        r#"echo "$OPENAI_API_KEY""#,
    );
    let out = output(&mut command);
    assert!(out.status.success());
    assert!(
        out.stdout == format!("{key}\n").as_bytes(),
        "the value did not pass through unchanged"
    );
}

#[test]
fn mask_with_and_delay_from_profile() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let options = profile_options(&sandbox, "[profiles.p]\nenv.OPENAI_API_KEY = \"env:OPENAI_API_KEY\"\nmask_with = \"[hidden]\"\nmask_delay = \"5ms\"\n");
    let mut command = keyrun_with(
        &sandbox,
        &key,
        &refs(&options),
        r#"echo "k=$OPENAI_API_KEY""#,
    );
    let out = output(&mut command);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "k=[hidden]\n");
}

#[test]
fn invalid_mask_delay_is_rejected() {
    let sandbox = Sandbox::new();
    let options = profile_options(&sandbox, "[profiles.p]\nmask_delay = \"soon\"\n");
    let mut command = keyrun_with(&sandbox, &random_key(), &refs(&options), "true");
    let out = output(&mut command);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("profiles.p.mask_delay"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn short_value_is_not_masked_with_warning() {
    let sandbox = Sandbox::new();
    let out = output(&mut keyrun_sh(
        &sandbox,
        "sk-1234",
        r#"echo "$OPENAI_API_KEY""#,
    ));
    assert!(out.status.success());
    assert_eq!(stdout(&out), "sk-1234\n");
    assert!(
        stderr(&out).contains("shorter than 8 bytes"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn child_closing_stdout_early() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let out = output(&mut keyrun_sh(
        &sandbox,
        &key,
        r#"echo "a $OPENAI_API_KEY"; exec >&-; sleep 0.2; echo "b $OPENAI_API_KEY" >&2; exit 3"#,
    ));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "a ***\n");
    assert_eq!(stderr(&out), "b ***\n");
}

#[test]
fn partial_line_is_flushed_after_delay() {
    let sandbox = Sandbox::new();
    let mut command = keyrun_sh(
        &sandbox,
        &random_key(),
        "printf 'waiting-for-input'; sleep 3",
    );
    command.stdout(Stdio::piped()).stderr(Stdio::null());
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    let mut reader = child.stdout.take().unwrap();
    let mut buffer = [0u8; 64];
    let read = reader.read(&mut buffer).unwrap();
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(&buffer[..read], b"waiting-for-input");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[test]
fn reader_going_away_ends_child_output() {
    let sandbox = Sandbox::new();
    let mut command = keyrun_sh(&sandbox, &random_key(), "yes line; echo gone >&2");
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut reader = child.stdout.take().unwrap();
    let mut buffer = [0u8; 5];
    reader.read_exact(&mut buffer).unwrap();
    drop(reader);
    let out = child.wait_with_output().unwrap();
    assert_eq!(&buffer, b"line\n");
    assert!(out.status.success(), "keyrun ended with {:?}", out.status);
    assert_eq!(stderr(&out), "gone\n");
}

// CI registration -----------------------------------------------------

#[test]
fn github_add_mask_line_on_pipe() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = keyrun_sh(&sandbox, &key, "echo child");
    command.env("GITHUB_ACTIONS", "true");
    let out = output(&mut command);
    assert!(out.status.success());
    let text = stdout(&out);
    let mut lines = text.lines();
    let expected = format!("::add-mask::{key}");
    assert!(
        lines.next() == Some(expected.as_str()),
        "the first line is not the add-mask command for the value"
    );
    assert_eq!(lines.next(), Some("child"));
    assert_eq!(lines.next(), None);
}

#[test]
fn azure_setsecret_line_on_pipe() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = keyrun_sh(&sandbox, &key, "true");
    command.env("TF_BUILD", "True");
    let out = output(&mut command);
    assert!(out.status.success());
    let expected = format!("##vso[task.setsecret]{key}\n");
    assert!(
        out.stdout == expected.as_bytes(),
        "the output is not the setsecret command for the value"
    );
}

#[test]
fn add_mask_lines_split_raw_value() {
    let sandbox = Sandbox::new();
    let long_line = random_key();
    let value = format!("{long_line}\nshort\n");
    let options = profile_options(
        &sandbox,
        "[profiles.p]\nenv.PEM = { from = \"env:PEM_SOURCE\", raw = true }\n",
    );
    let mut command = keyrun_with(&sandbox, &random_key(), &refs(&options), "true");
    command
        .env("GITHUB_ACTIONS", "true")
        .env("PEM_SOURCE", &value);
    let out = output(&mut command);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = format!("::add-mask::{long_line}\n");
    assert!(
        out.stdout == expected.as_bytes(),
        "expected one add-mask command, for the long line only"
    );
}

#[test]
fn no_add_mask_line_to_file() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let path = sandbox.path().join("out.log");
    let file = std::fs::File::create(&path).unwrap();
    let mut command = keyrun_sh(&sandbox, &key, "echo child");
    command.env("GITHUB_ACTIONS", "true").stdout(file);
    let status = command.status().unwrap();
    assert!(status.success());
    let written = std::fs::read(&path).unwrap();
    assert_not_leaked(&written, &key, "the output file");
    assert_eq!(written, b"child\n");
}

#[test]
fn ci_mask_false_writes_no_line() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let options = profile_options(
        &sandbox,
        "[profiles.p]\nenv.OPENAI_API_KEY = \"env:OPENAI_API_KEY\"\nci_mask = false\n",
    );
    let mut command = keyrun_with(&sandbox, &key, &refs(&options), "echo child");
    command.env("GITHUB_ACTIONS", "true");
    let out = output(&mut command);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_not_leaked(&out.stdout, &key, "stdout");
    assert_eq!(stdout(&out), "child\n");
}
