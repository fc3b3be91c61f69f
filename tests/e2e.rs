//! End to end: the official `openai` Python client, run under keyrun, lists
//! models from a loopback stand-in for `GET /v1/models` that answers only
//! for the right key, with the key from each core source. The client comes
//! from `KEYRUN_TEST_PYTHON`, which tests/run.sh sets.

mod common;

use common::http::ModelsServer;
use common::openai::{self, assert_lists_models};
use common::{random_key, stderr, Sandbox};

#[test]
fn openai_client_with_env_source() {
    let Some(python) = openai::python() else {
        return;
    };
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command.env("OPENAI_API_KEY", &key);
    assert_lists_models(command, python, &key);
}

#[test]
fn openai_client_with_file_source() {
    let Some(python) = openai::python() else {
        return;
    };
    let sandbox = Sandbox::new();
    let key = random_key();
    sandbox.write(
        "home/.config/keyrun/openai.key",
        format!("{key}\n").as_bytes(),
        0o600,
    );
    let mut command = sandbox.keyrun();
    command.args(["--from", "file:~/.config/keyrun/openai.key"]);
    assert_lists_models(command, python, &key);
}

#[test]
fn openai_client_with_cmd_source() {
    let Some(python) = openai::python() else {
        return;
    };
    let sandbox = Sandbox::new();
    let key = random_key();
    let script = sandbox.write(
        "bin/fetch-key",
        format!("#!/bin/sh\nprintf '%s\\n' {key}\n").as_bytes(),
        0o700,
    );
    let mut command = sandbox.keyrun();
    command.args(["--from", &format!("cmd:{} read openai", script.display())]);
    assert_lists_models(command, python, &key);
}

#[test]
fn openai_client_rejected_with_wrong_key() {
    let Some(python) = openai::python() else {
        return;
    };
    let sandbox = Sandbox::new();
    let key = random_key();
    let wrong = random_key();
    let models = ModelsServer::start(&key);
    let mut command = sandbox.keyrun();
    command.env("OPENAI_API_KEY", &wrong);
    let result = openai::run_client(command, python, &models);
    assert_eq!(result.status.code(), Some(1));
    assert!(
        stderr(&result).contains("AuthenticationError"),
        "{}",
        stderr(&result)
    );
    assert_eq!(models.authorized_requests(), 0);
}
