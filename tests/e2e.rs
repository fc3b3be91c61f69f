//! End to end: the official `openai` Python client, run under keyrun, lists
//! models from a loopback stand-in for `GET /v1/models` that answers only
//! for the right key, with the key from each core source. The client comes
//! from `KEYRUN_TEST_PYTHON`, which tests/run.sh sets.

mod common;

use std::ffi::OsString;
use std::process::Command;

use common::http::ModelsServer;
use common::{assert_not_leaked, output, random_key, stderr, stdout, Sandbox};

const PROGRAM: &str = "from openai import OpenAI\n\
                       ids = [model.id for model in OpenAI().models.list()]\n\
                       print('models:', ','.join(ids))\n";

/// Returns the Python with the `openai` package, or `None` outside tests/run.sh;
/// under CI a missing Python is a failure, not a skip.
fn python() -> Option<OsString> {
    let python = std::env::var_os("KEYRUN_TEST_PYTHON");
    if python.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "KEYRUN_TEST_PYTHON is not set; run tests/run.sh"
        );
        eprintln!("skipped: KEYRUN_TEST_PYTHON is not set; run tests/run.sh");
    }
    python
}

/// Runs the client under `command` against `models` and checks that it
/// listed the models with the key, and that no output carries the key.
fn assert_lists_models(mut command: Command, python: OsString, models: &ModelsServer, key: &str) {
    command
        .env("OPENAI_BASE_URL", models.base_url())
        .arg("--")
        .arg(python)
        .args(["-c", PROGRAM]);
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(
        stdout(&result).trim(),
        "models: gpt-4o-mini,text-embedding-3-small"
    );
    assert_eq!(models.authorized_requests(), 1);
    assert_not_leaked(&result.stdout, key, "stdout");
    assert_not_leaked(&result.stderr, key, "stderr");
}

#[test]
fn openai_client_with_env_source() {
    let Some(python) = python() else { return };
    let sandbox = Sandbox::new();
    let key = random_key();
    let models = ModelsServer::start(&key);
    let mut command = sandbox.keyrun();
    command.env("OPENAI_API_KEY", &key);
    assert_lists_models(command, python, &models, &key);
}

#[test]
fn openai_client_with_file_source() {
    let Some(python) = python() else { return };
    let sandbox = Sandbox::new();
    let key = random_key();
    sandbox.write(
        "home/.config/keyrun/openai.key",
        format!("{key}\n").as_bytes(),
        0o600,
    );
    let models = ModelsServer::start(&key);
    let mut command = sandbox.keyrun();
    command.args(["--from", "file:~/.config/keyrun/openai.key"]);
    assert_lists_models(command, python, &models, &key);
}

#[test]
fn openai_client_with_cmd_source() {
    let Some(python) = python() else { return };
    let sandbox = Sandbox::new();
    let key = random_key();
    let script = sandbox.write(
        "bin/fetch-key",
        format!("#!/bin/sh\nprintf '%s\\n' {key}\n").as_bytes(),
        0o700,
    );
    let models = ModelsServer::start(&key);
    let mut command = sandbox.keyrun();
    command.args(["--from", &format!("cmd:{} read openai", script.display())]);
    assert_lists_models(command, python, &models, &key);
}

#[test]
fn openai_client_rejected_with_wrong_key() {
    let Some(python) = python() else { return };
    let sandbox = Sandbox::new();
    let key = random_key();
    let wrong = random_key();
    let models = ModelsServer::start(&key);
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", &wrong)
        .env("OPENAI_BASE_URL", models.base_url())
        .arg("--")
        .arg(python)
        .args(["-c", PROGRAM]);
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(1));
    assert!(
        stderr(&result).contains("AuthenticationError"),
        "{}",
        stderr(&result)
    );
    assert_eq!(models.authorized_requests(), 0);
}
