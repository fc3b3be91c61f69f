//! After the child starts, keyrun's address space holds no copy of the
//! injected value: not on the heap, not on its stacks, not in its original
//! environment block. The test reads `/proc/<pid>/mem` of the running
//! keyrun, so it needs root (keyrun makes itself non-dumpable) and Linux.

#![cfg(target_os = "linux")]

mod common;

use common::memory::assert_value_absent;
use common::{random_key, Sandbox};

#[test]
fn memory_clean_with_env_source() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command.env("OPENAI_API_KEY", &key);
    assert_value_absent(command, &key);
}

#[test]
fn memory_clean_with_env_source_renamed() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command.env("MY_KEY", &key).args(["--from", "env:MY_KEY"]);
    assert_value_absent(command, &key);
}

#[test]
fn memory_clean_with_replaced_variable() {
    let sandbox = Sandbox::new();
    let old = random_key();
    let key = random_key();
    let path = sandbox.write("key", key.as_bytes(), 0o600);
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", &old)
        .args(["--from", &format!("file:{}", path.display())]);
    assert_value_absent(command, &key);
}

#[test]
fn memory_clean_with_file_source() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let path = sandbox.write("key", format!("{key}\n").as_bytes(), 0o600);
    let mut command = sandbox.keyrun();
    command.args(["--from", &format!("file:{}", path.display())]);
    assert_value_absent(command, &key);
}

#[test]
fn memory_clean_with_cmd_source() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let script = sandbox.write(
        "print-key",
        format!("#!/bin/sh\nprintf '%s\\n' {key}\n").as_bytes(),
        0o700,
    );
    let mut command = sandbox.keyrun();
    command.args(["--from", &format!("cmd:{}", script.display())]);
    assert_value_absent(command, &key);
}

/// Returns the forms the masker matches besides the value itself: base64 in both
/// alphabets and all three alignments, and percent-encoding.
fn encoded_forms(key: &str) -> Vec<(String, Vec<u8>)> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    use base64::Engine as _;

    let mut forms = Vec::new();
    for (alphabet, engine) in [
        ("standard", &STANDARD_NO_PAD),
        ("URL-safe", &URL_SAFE_NO_PAD),
    ] {
        for offset in 0..3 {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(key.as_bytes());
            let encoded = engine.encode(&shifted);
            // The characters that depend on the value alone.
            let first = (8 * offset).div_ceil(6);
            let end = 8 * (offset + key.len()) / 6;
            forms.push((
                format!("{alphabet} base64 at offset {offset}"),
                encoded.as_bytes()[first..end].to_vec(),
            ));
        }
    }
    let percent: String = key
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    forms.push(("percent-encoded".to_string(), percent.into_bytes()));
    forms
}

#[test]
fn memory_clean_while_masking_encoded_forms() {
    use std::io::BufRead;

    let sandbox = Sandbox::new();
    let key = format!("{}+/?&", random_key());
    let marker = format!("marker-{}", &random_key()[8..]);
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", &key)
        .args(["--mask", "auto", "--", "sh", "-c"])
        .arg(r#"echo "$OPENAI_API_KEY"; printf %s "$OPENAI_API_KEY" | base64 -w0; echo; echo ready; exec sleep 30"#)
        .arg(&marker)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut keyrun = command.spawn().expect("start keyrun");
    let mut reader = std::io::BufReader::new(keyrun.stdout.take().unwrap());
    let mut masked = String::new();
    reader.read_line(&mut masked).unwrap();
    let mut masked_base64 = String::new();
    reader.read_line(&mut masked_base64).unwrap();
    let mut ready = String::new();
    reader.read_line(&mut ready).unwrap();

    let forms = encoded_forms(&key);
    let mut needles: Vec<&[u8]> = vec![key.as_bytes(), marker.as_bytes()];
    needles.extend(forms.iter().map(|(_, form)| form.as_slice()));
    let (bytes, found) = common::memory::scan_memory(keyrun.id(), &needles);
    let _ = keyrun.kill();
    let _ = keyrun.wait();

    assert_eq!(masked, "***\n", "the child's output was not masked");
    assert!(
        masked_base64.starts_with("***"),
        "the base64 form was not masked"
    );
    assert_eq!(ready, "ready\n");
    assert!(bytes > 100_000, "the scan read only {bytes} bytes");
    assert!(found[1], "the scan did not find the marker it must find");
    assert!(!found[0], "the injected value is still in keyrun's memory");
    for ((name, _), found) in forms.iter().zip(&found[2..]) {
        assert!(!found, "the {name} form is in keyrun's memory");
    }
}
