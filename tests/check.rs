//! `keyrun check` against the real binary: the per-variable report, its
//! exit status, and `--online` against loopback stand-ins for the OpenAI
//! and Azure OpenAI models endpoints. OPENAI_BASE_URL always points at
//! 127.0.0.1, so no test reaches api.openai.com.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use common::http::{LoopbackServer, ModelsServer, Pki, RawRequest, Response};
use common::{assert_not_leaked, output, stderr, stdout, Sandbox};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A `keyrun check` with `key` as OPENAI_API_KEY and OPENAI_BASE_URL set
/// to `base_url`.
fn check(sandbox: &Sandbox, key: &str, base_url: &str) -> Command {
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", key)
        .env("OPENAI_BASE_URL", base_url)
        .arg("check");
    command
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "stdout is not JSON ({err}): {}\n{}",
            stdout(out),
            stderr(out)
        )
    })
}

fn fingerprint(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn write_config(sandbox: &Sandbox, text: &str) -> PathBuf {
    sandbox.write("keyrun-config.toml", text.as_bytes(), 0o600)
}

#[test]
fn check_reports_variable() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let out = output(check(&sandbox, &key, "http://127.0.0.1:9/v1").arg("--json"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json_of(&out);
    let variable = &report["variables"][0];
    assert_eq!(variable["var"], "OPENAI_API_KEY");
    assert_eq!(variable["source"], "env");
    assert_eq!(variable["reference"], "env:OPENAI_API_KEY");
    assert_eq!(variable["fingerprint"], fingerprint(&key).as_str());
    assert_eq!(variable["format"], "openai");
    assert_eq!(variable["age"], "unknown");
    assert!(variable["age_note"]
        .as_str()
        .unwrap()
        .contains("reports no creation time"));
    assert_eq!(report["online"], Value::Null);
    assert_eq!(report["passed"], true);
    assert_not_leaked(&out.stdout, &key, "check's stdout");
    assert_not_leaked(&out.stderr, &key, "check's stderr");
}

#[test]
fn check_text_never_prints_value() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let out = output(&mut check(&sandbox, &key, "http://127.0.0.1:9/v1"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&fingerprint(&key)),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("every check passed"),
        "{}",
        stdout(&out)
    );
    assert_not_leaked(&out.stdout, &key, "check's stdout");
    assert_not_leaked(&out.stderr, &key, "check's stderr");
}

#[test]
fn check_format_verdict_other() {
    let sandbox = Sandbox::new();
    let out = output(
        check(
            &sandbox,
            "0123456789abcdef0123456789abcdef",
            "http://127.0.0.1:9/v1",
        )
        .arg("--json"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_of(&out)["variables"][0]["format"], "other");
}

#[test]
fn check_masking_under_pipes() {
    let sandbox = Sandbox::new();
    let out = output(check(&sandbox, &common::random_key(), "http://127.0.0.1:9/v1").arg("--json"));
    let masking = &json_of(&out)["masking"];
    assert_eq!(masking["mode"], "auto");
    assert_eq!(masking["applies"], true);
}

#[test]
fn check_lists_withheld_variables() {
    let sandbox = Sandbox::new();
    let config = write_config(
        &sandbox,
        "[profiles.p]\nenv.OPENAI_API_KEY = \"env:MY_KEY\"\nunset = [\"SOME_TOKEN\"]\n",
    );
    let out = output(
        sandbox
            .keyrun()
            .env("MY_KEY", common::random_key())
            .args(["check", "--profile", "p", "--json", "--config"])
            .arg(&config),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json_of(&out);
    let names: Vec<&str> = report["withheld"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"MY_KEY"), "{names:?}");
    assert!(names.contains(&"SOME_TOKEN"), "{names:?}");
    assert_eq!(report["profile"], "p");
}

#[test]
fn check_failed_source_exits_1() {
    let sandbox = Sandbox::new();
    let out = output(
        sandbox
            .keyrun()
            .env("MY_ORG", "org-123")
            .args(["check", "--from", "file:missing.key"])
            .args(["--set", "OPENAI_ORG_ID=env:MY_ORG", "--json"]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json_of(&out);
    let variables = report["variables"].as_array().unwrap();
    assert_eq!(variables.len(), 2);
    let failed = variables
        .iter()
        .find(|v| v["var"] == "OPENAI_API_KEY")
        .unwrap();
    assert!(failed["error"].as_str().unwrap().contains("missing.key"));
    assert_eq!(failed["passed"], false);
    let org = variables
        .iter()
        .find(|v| v["var"] == "OPENAI_ORG_ID")
        .unwrap();
    assert_eq!(org["passed"], true);
    assert_eq!(report["passed"], false);
}

#[test]
fn check_unknown_profile_exits_125() {
    let sandbox = Sandbox::new();
    let out = output(sandbox.keyrun().args(["check", "--profile", "nope"]));
    assert_eq!(out.status.code(), Some(125));
}

/// A key file whose mtime lies `days` days back, and a profile with
/// max_age 90d.
fn old_key_setup(sandbox: &Sandbox, key: &str, days: u64, extra: &str) -> PathBuf {
    let path = sandbox.write("openai.key", key.as_bytes(), 0o600);
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400 + 3600))
        .unwrap();
    write_config(
        sandbox,
        &format!(
            "default_profile = \"p\"\n[profiles.p]\nmax_age = \"90d\"\nenv.OPENAI_API_KEY = \"file:{}\"\n{extra}",
            path.display()
        ),
    )
}

#[test]
fn check_reports_overdue_age() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let config = old_key_setup(&sandbox, &key, 100, "");
    let out = output(
        sandbox
            .keyrun()
            .args(["check", "--json", "--config"])
            .arg(&config),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let variable = &json_of(&out)["variables"][0];
    assert_eq!(variable["age"], "overdue");
    assert_eq!(variable["age_days"], 100);
    assert_eq!(variable["max_age"], "90d");
    assert_eq!(variable["source"], "file");
    assert!(variable["created"].is_string());
    assert_eq!(variable["passed"], true);
    assert_not_leaked(&out.stdout, &key, "check's stdout");
}

#[test]
fn check_enforced_overdue_fails() {
    let sandbox = Sandbox::new();
    let config = old_key_setup(
        &sandbox,
        &common::random_key(),
        100,
        "enforce_max_age = true\n",
    );
    let out = output(sandbox.keyrun().args(["check", "--config"]).arg(&config));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("10 days over max_age 90d"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn online_accepted_by_models_server() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let server = ModelsServer::start(&key);
    let out = output(check(&sandbox, &key, &server.base_url()).args(["--online", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let online = &json_of(&out)["online"];
    assert_eq!(online["verdict"], "accepted");
    assert_eq!(online["status"], 200);
    assert_eq!(online["style"], "openai");
    assert_eq!(server.authorized_requests(), 1);
    assert_not_leaked(&out.stdout, &key, "check's stdout");
}

#[test]
fn online_rejected_by_models_server() {
    let sandbox = Sandbox::new();
    let server = ModelsServer::start(&common::random_key());
    let key = common::random_key();
    let out = output(check(&sandbox, &key, &server.base_url()).args(["--online", "--json"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let online = &json_of(&out)["online"];
    assert_eq!(online["verdict"], "rejected");
    assert_eq!(online["status"], 401);
    assert_eq!(online["code"], "invalid_api_key");
    assert_not_leaked(&out.stdout, &key, "check's stdout");
}

#[test]
fn online_base_url_value_not_quoted() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let out = output(check(&sandbox, &key, &key).arg("--online"));
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert_not_leaked(&out.stderr, &key, "check's stderr");
    assert!(stderr(&out).contains("is not a URL"), "{}", stderr(&out));

    let password = common::random_key();
    let url = format!("http://admin:{password}@127.0.0.1:1/v1");
    let out = output(check(&sandbox, &key, &url).arg("--online"));
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert_not_leaked(&out.stderr, &password, "check's stderr");
    assert_not_leaked(&out.stdout, &password, "check's stdout");
    assert!(
        stderr(&out).contains("user name or password"),
        "{}",
        stderr(&out)
    );
}

/// The response a stand-in sends to a request whose key header is right.
#[derive(Clone, Copy)]
enum Answer {
    Ok,
    Unauthorized,
    RateLimited,
    OutOfQuota,
}

/// A loopback models endpoint for one header style, over TLS with a
/// certificate from `pki` when one is given. A request without the key in
/// that style's header (or, for Azure, without an api-version) gets 400, so
/// a wrong style cannot pass as another verdict.
fn stand_in(key: &str, azure: bool, answer: Answer, pki: Option<&Pki>) -> LoopbackServer {
    let key = key.to_string();
    LoopbackServer::start(pki, move |request: &RawRequest| {
        let header_ok = match azure {
            true => {
                request.headers.get("api-key") == Some(&key)
                    && !request.headers.contains_key("authorization")
                    && request
                        .query()
                        .get("api-version")
                        .is_some_and(|v| !v.is_empty())
            }
            false => request.headers.get("authorization") == Some(&format!("Bearer {key}")),
        };
        let path = if azure {
            "/openai/models"
        } else {
            "/v1/models"
        };
        if request.path() != path || !header_ok {
            return Some(Response::json(
                400,
                json!({"error": {"code": "bad_request"}}),
            ));
        }
        Some(match answer {
            Answer::Ok => Response::json(200, json!({"object": "list", "data": []})),
            Answer::Unauthorized => Response::json(
                401,
                json!({"error": {"code": "invalid_api_key", "type": "invalid_request_error"}}),
            ),
            Answer::RateLimited => Response::json(
                429,
                json!({"error": {"code": "rate_limit_exceeded", "type": "requests"}}),
            ),
            Answer::OutOfQuota => Response::json(
                429,
                json!({"error": {"code": "insufficient_quota", "type": "insufficient_quota"}}),
            ),
        })
    })
}

const CASES: [(Answer, &str, Option<u16>, i32); 4] = [
    (Answer::Ok, "accepted", Some(200), 0),
    (Answer::Unauthorized, "rejected", Some(401), 1),
    (Answer::RateLimited, "rate_limited", Some(429), 1),
    (Answer::OutOfQuota, "out_of_quota", Some(429), 1),
];

fn run_online(sandbox: &Sandbox, key: &str, base_url: &str, azure: bool) -> Output {
    let mut command = check(sandbox, key, base_url);
    command.args(["--online", "--json"]);
    if azure {
        command.args(["--api-style", "azure"]);
    }
    output(&mut command)
}

fn assert_cases(azure: bool) {
    for (answer, verdict, status, code) in CASES {
        let sandbox = Sandbox::new();
        let key = common::random_key();
        let server = stand_in(&key, azure, answer, None);
        let base = match azure {
            true => format!("{}/openai", server.url(false)),
            false => format!("{}/v1", server.url(false)),
        };
        let out = run_online(&sandbox, &key, &base, azure);
        assert_eq!(out.status.code(), Some(code), "{verdict}: {}", stderr(&out));
        let online = &json_of(&out)["online"];
        assert_eq!(online["verdict"], verdict, "{verdict}");
        assert_eq!(online["status"], json!(status), "{verdict}");
        assert_eq!(server.count("/"), 1, "{verdict}: requests sent");
        assert_not_leaked(&out.stdout, &key, "check's stdout");
        assert_not_leaked(&out.stderr, &key, "check's stderr");
    }
}

#[test]
fn online_bearer_style_verdicts() {
    assert_cases(false);
}

#[test]
fn online_azure_style_verdicts() {
    assert_cases(true);
}

#[test]
fn online_azure_style_from_profile() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let server = stand_in(&key, true, Answer::Ok, None);
    let config = write_config(
        &sandbox,
        "default_profile = \"az\"\n[profiles.az]\napi_style = \"azure\"\nenv.OPENAI_API_KEY = \"env:AZ_KEY\"\n",
    );
    let out = output(
        sandbox
            .keyrun()
            .env("AZ_KEY", &key)
            .env("OPENAI_BASE_URL", format!("{}/openai", server.url(false)))
            .args(["check", "--online", "--json", "--config"])
            .arg(&config),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let online = &json_of(&out)["online"];
    assert_eq!(online["style"], "azure");
    assert_eq!(online["verdict"], "accepted");
}

#[test]
fn online_base_url_from_injected_value() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let server = ModelsServer::start(&key);
    let out = output(
        sandbox
            .keyrun()
            .env("MY_KEY", &key)
            .env("MY_BASE", server.base_url())
            .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
            .args(["check", "--from", "env:MY_KEY"])
            .args(["--set", "OPENAI_BASE_URL=env:MY_BASE", "--online", "--json"]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_of(&out)["online"]["verdict"], "accepted");
    assert_eq!(server.authorized_requests(), 1);
}

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn online_closed_port_unreachable() {
    for azure in [false, true] {
        let sandbox = Sandbox::new();
        let base = format!("http://127.0.0.1:{}/v1", closed_port());
        let out = run_online(&sandbox, &common::random_key(), &base, azure);
        assert_eq!(
            out.status.code(),
            Some(1),
            "azure={azure}: {}",
            stderr(&out)
        );
        let online = &json_of(&out)["online"];
        assert_eq!(online["verdict"], "unreachable", "azure={azure}");
        assert_eq!(online["status"], Value::Null, "azure={azure}");
    }
}

/// Runs `keyrun check --online --json` with `key` against a TLS stand-in
/// that accepts it and whose certificate `pki` signed, after `trust` has
/// pointed keyrun at the CA (or not). Returns the output and the stand-in.
fn run_online_tls(
    sandbox: &Sandbox,
    key: &str,
    pki: &Pki,
    trust: impl FnOnce(&mut Command),
) -> (Output, LoopbackServer) {
    let server = stand_in(key, false, Answer::Ok, Some(pki));
    let mut command = check(sandbox, key, &format!("{}/v1", server.url(true)));
    command.args(["--online", "--json"]);
    trust(&mut command);
    let out = output(&mut command);
    assert_not_leaked(&out.stdout, key, "check's stdout");
    assert_not_leaked(&out.stderr, key, "check's stderr");
    (out, server)
}

/// Asserts that `--online` passed after one accepted request to `server`.
fn assert_online_accepted(out: &Output, server: &LoopbackServer) {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    let online = &json_of(out)["online"];
    assert_eq!(online["verdict"], "accepted");
    assert_eq!(online["status"], 200);
    assert_eq!(server.count("/"), 1);
}

#[test]
fn online_trusts_ssl_cert_file() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let pki = Pki::generate();
    let ca = pki.write_ca(sandbox.path());
    let (out, server) = run_online_tls(&sandbox, &key, &pki, |command| {
        command.env("SSL_CERT_FILE", &ca);
    });
    assert_online_accepted(&out, &server);
}

#[test]
fn online_trusts_ssl_cert_dir() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let pki = Pki::generate();
    let folder = sandbox.path().join("certs");
    std::fs::create_dir_all(&folder).unwrap();
    pki.write_ca(&folder);
    let (out, server) = run_online_tls(&sandbox, &key, &pki, |command| {
        command.env("SSL_CERT_DIR", &folder);
    });
    assert_online_accepted(&out, &server);
}

#[test]
fn online_untrusted_certificate_named() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let pki = Pki::generate();
    let (out, server) = run_online_tls(&sandbox, &key, &pki, |_| {});
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let online = &json_of(&out)["online"];
    assert_eq!(online["verdict"], "unreachable");
    assert_eq!(online["status"], Value::Null);
    let detail = online["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("certificate"), "{detail}");
    assert!(detail.contains("SSL_CERT_FILE"), "{detail}");
    assert_eq!(server.count("/"), 0);
}

#[test]
fn online_missing_ssl_cert_file_rejected() {
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let pki = Pki::generate();
    let missing = sandbox.path().join("missing-ca.pem");
    let (out, server) = run_online_tls(&sandbox, &key, &pki, |command| {
        command.env("SSL_CERT_FILE", &missing);
    });
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("SSL_CERT_FILE"), "{message}");
    assert!(message.contains("missing-ca.pem"), "{message}");
    assert_eq!(server.count("/"), 0);
}

#[test]
fn online_without_key_fails() {
    let sandbox = Sandbox::new();
    let out = output(
        sandbox
            .keyrun()
            .env("MY_ORG", "org-123")
            .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
            .args([
                "check",
                "--set",
                "OPENAI_ORG_ID=env:MY_ORG",
                "--online",
                "--json",
            ]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(json_of(&out)["online"]["verdict"], "no_key");
}

#[test]
fn check_records_audit_access() {
    let sandbox = Sandbox::new();
    let log = sandbox.path().join("audit.log");
    let key = common::random_key();
    let out = output(check(&sandbox, &key, "http://127.0.0.1:9/v1").env("KEYRUN_AUDIT_LOG", &log));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&log).unwrap();
    let record: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(record["event"], "secret.resolved");
    assert_eq!(record["argv0"], "keyrun check");
    assert_not_leaked(text.as_bytes(), &key, "the audit log");
}

#[test]
fn check_masking_follows_profile_mode() {
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "keyrun-config.toml",
        b"default_profile = \"p\"\n[profiles.p]\nmask = \"never\"\n",
        0o600,
    );
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", common::random_key())
        .arg("check")
        .arg("--config")
        .arg(&config)
        .arg("--json");
    let out = output(&mut command);
    let masking = &json_of(&out)["masking"];
    assert_eq!(masking["mode"], "never");
    assert_eq!(masking["applies"], false);
}
