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
