//! The official `openai` Python client run under keyrun against the
//! loopback [`ModelsServer`], for the end-to-end test of each source. The
//! client comes from `KEYRUN_TEST_PYTHON`, which tests/run.sh sets.

use std::ffi::OsString;
use std::process::{Command, Output};

use super::http::ModelsServer;
use super::{assert_not_leaked, output, report_unset, stderr, stdout};

/// A program that lists the models and prints their ids.
pub const PROGRAM: &str = "from openai import OpenAI\n\
                           ids = [model.id for model in OpenAI().models.list()]\n\
                           print('models:', ','.join(ids))\n";

/// Returns the Python with the `openai` package, or `None` outside
/// tests/run.sh. Under CI a missing Python is a failure, not a skip.
pub fn python() -> Option<OsString> {
    let python = std::env::var_os("KEYRUN_TEST_PYTHON");
    if python.is_none() {
        report_unset("KEYRUN_TEST_PYTHON");
    }
    python
}

/// Runs [`PROGRAM`] with `python` as the child of `command`, which has its
/// source options but no `--` yet, with the client pointed at `models`.
pub fn run_client(mut command: Command, python: OsString, models: &ModelsServer) -> Output {
    command
        .env("OPENAI_BASE_URL", models.base_url())
        .arg("--")
        .arg(python)
        .args(["-c", PROGRAM]);
    output(&mut command)
}

/// Runs the client under `command`, whose source resolves OPENAI_API_KEY
/// to `key`, against a [`ModelsServer`] that accepts only `key`. Asserts
/// that the client listed the models in one authorized request and that
/// neither output contains the key. Returns the output, so that a test
/// can check it for the source's own credentials.
pub fn assert_lists_models(command: Command, python: OsString, key: &str) -> Output {
    let models = ModelsServer::start(key);
    let result = run_client(command, python, &models);
    // The leak checks come first, so that no later message prints the key.
    assert_not_leaked(&result.stdout, key, "stdout");
    assert_not_leaked(&result.stderr, key, "stderr");
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(
        stdout(&result).trim(),
        "models: gpt-4o-mini,text-embedding-3-small"
    );
    assert_eq!(models.authorized_requests(), 1);
    result
}
