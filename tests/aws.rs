//! The `aws-sm:` source against `moto_server` and, for faults moto cannot
//! produce, against a loopback server that sends Secrets Manager's JSON
//! error bodies. keyrun reaches both through
//! `AWS_ENDPOINT_URL_SECRETS_MANAGER` (or `endpoint_url=`) with `test`
//! credentials and `AWS_EC2_METADATA_DISABLED=true`, so nothing reaches an
//! AWS endpoint or the instance metadata address. The moto tests need
//! `KEYRUN_TEST_MOTO` (set by tests/run.sh) and are skipped without it,
//! except under CI.

mod aws_support;
mod common;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_support::{
    count_calls, counting_proxy, error_response, secret_name, value_response, LoopbackServer, Moto,
    REGION,
};
use common::{
    assert_failed, assert_matched, assert_not_leaked, assert_pair_failed, assert_unknown_key,
    check_var_command, env_has_command, openai, output, run_pair, run_with_config, stderr, stdout,
    Sandbox,
};

/// The shared moto server, or `None` to skip outside CI.
fn moto() -> Option<&'static Moto> {
    let moto = Moto::shared();
    if moto.is_none() {
        common::report_unset("KEYRUN_TEST_MOTO");
    }
    moto
}

/// keyrun with test credentials, the region, and Secrets Manager at
/// `endpoint`.
fn keyrun(sandbox: &Sandbox, endpoint: &str) -> Command {
    let mut command = sandbox.keyrun();
    command
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", REGION);
    command
}

/// Runs keyrun with `reference` and a child that reports whether
/// OPENAI_API_KEY equals `expected`.
fn run_check(mut command: Command, reference: &str, expected: &str) -> Output {
    command
        .args(["--from", reference, "--"])
        .args(check_var_command("OPENAI_API_KEY", expected));
    output(&mut command)
}

fn assert_clean(result: &Output, secret: &str) {
    assert_not_leaked(&result.stdout, secret, "stdout");
    assert_not_leaked(&result.stderr, secret, "stderr");
}

/// A loopback Secrets Manager that answers every request with `respond`,
/// given the number of requests before it.
fn fake(
    respond: impl Fn(usize) -> Option<aws_support::Response> + Send + Sync + 'static,
) -> LoopbackServer {
    let seen = Arc::new(AtomicUsize::new(0));
    LoopbackServer::start(None, move |_| respond(seen.fetch_add(1, Ordering::SeqCst)))
}

#[test]
fn plain_string_injected() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let name = secret_name("plain");
    moto.create_string(&name, &key);
    let result = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{name}"),
        &key,
    );
    assert_matched(&result);
    assert_clean(&result, &key);
}

#[test]
fn secret_arn_injected() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let name = secret_name("arn");
    moto.create_string(&name, &key);
    let (_, described) = moto.call("DescribeSecret", serde_json::json!({"SecretId": name}));
    let arn = described["ARN"].as_str().unwrap();
    let result = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{arn}"),
        &key,
    );
    assert_matched(&result);
}

#[test]
fn json_field_injected() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let other = common::random_key();
    let name = secret_name("json");
    moto.create_string(
        &name,
        &serde_json::json!({"api_key": key, "other": other}).to_string(),
    );
    let result = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{name}#api_key"),
        &key,
    );
    assert_matched(&result);
    assert_clean(&result, &other);
}

#[test]
fn json_object_without_field_hints() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let spaced = secret_name("json-spaced");
    moto.create_string(&spaced, &format!("{{\"api_key\": \"{key}\"}}"));
    let result = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{spaced}"),
        &key,
    );
    assert_eq!(result.status.code(), Some(125), "{}", stderr(&result));
    assert_clean(&result, &key);
    assert!(
        stderr(&result).contains("pick one field with #FIELD"),
        "{}",
        stderr(&result)
    );

    let compact = secret_name("json-compact");
    moto.create_string(&compact, &format!("{{\"api_key\":\"{key}\"}}"));
    let result = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{compact}"),
        &key,
    );
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_clean(&result, &key);
    assert!(
        stderr(&result).contains("is a JSON object; pick one field with #FIELD"),
        "{}",
        stderr(&result)
    );
}

#[test]
fn two_fields_one_call() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let org = format!("org-{}", aws_support::random_hex(8));
    let name = secret_name("fields");
    moto.create_string(
        &name,
        &serde_json::json!({"api_key": key, "org_id": org}).to_string(),
    );
    let proxy = counting_proxy(moto);
    let mut command = keyrun(&sandbox, &proxy.url(false));
    command
        .args(["--from", &format!("aws-sm:{name}#api_key")])
        .args(["--set", &format!("OPENAI_ORG_ID=aws-sm:{name}#org_id")])
        .args(["--", "sh", "-c"])
        .arg(format!(
            "[ \"$OPENAI_API_KEY\" = '{key}' ] && echo key=match; \
             [ \"$OPENAI_ORG_ID\" = '{org}' ] && echo org=match; true"
        ));
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let lines: Vec<String> = stdout(&result).lines().map(str::to_string).collect();
    assert_eq!(lines, ["key=match", "org=match"]);
    assert_eq!(count_calls(&proxy, "GetSecretValue"), 1);
}

#[test]
fn shared_read_error_names_each_reference() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let name = secret_name("absent-fields");
    let first = format!("aws-sm:{name}#api_key");
    let second = format!("aws-sm:{name}#org_id");
    let proxy = counting_proxy(moto);
    let command = keyrun(&sandbox, &proxy.url(false));
    let result = run_pair(command, &first, &second);
    let message = assert_failed(&result);
    let line = assert_pair_failed(&message, &first, &second);
    assert!(line.contains("ResourceNotFoundException"), "{line}");
    assert_eq!(count_calls(&proxy, "GetSecretValue"), 1);
}

#[test]
fn shared_client_error_names_each_reference() {
    let sandbox = Sandbox::new();
    let server = LoopbackServer::start(None, |_| Some(value_response("x", "y")));
    let mut command = keyrun(&sandbox, &server.url(false));
    command.env_remove("AWS_REGION");
    let result = run_pair(command, "aws-sm:openai", "aws-sm:anthropic");
    let message = assert_failed(&result);
    let line = assert_pair_failed(&message, "aws-sm:openai", "aws-sm:anthropic");
    assert!(line.contains("no AWS region"), "{line}");
    assert!(!line.contains("openai"), "{line}");
    assert_eq!(server.count("/"), 0);
}

#[test]
fn binary_utf8_injected() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let name = secret_name("binary");
    moto.create_binary(&name, key.as_bytes());
    let result = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{name}"),
        &key,
    );
    assert_matched(&result);
}

#[test]
fn binary_not_utf8_rejected() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let name = secret_name("bytes");
    moto.create_binary(&name, &[0x73, 0x6b, 0xff, 0xfe, 0x00, 0x80]);
    let result = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{name}"),
        "x",
    );
    let message = assert_failed(&result);
    assert!(message.contains("not UTF-8"), "{message}");
    assert!(message.contains(&name), "{message}");
    assert!(message.contains("SecretString"), "{message}");
}

#[test]
fn previous_version_after_put() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let old = common::random_key();
    let new = common::random_key();
    let name = secret_name("rotated");
    moto.create_string(&name, &old);
    moto.put_string(&name, &new);

    let previous = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{name}?version_stage=AWSPREVIOUS"),
        &old,
    );
    assert_matched(&previous);
    let current = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{name}"),
        &new,
    );
    assert_matched(&current);
}

#[test]
fn version_id_selects_value() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let old = common::random_key();
    let name = secret_name("versioned");
    let old_version = moto.create_string(&name, &old);
    moto.put_string(&name, &common::random_key());
    moto.put_string(&name, &common::random_key());
    let result = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{name}?version_id={old_version}"),
        &old,
    );
    assert_matched(&result);
}

#[test]
fn config_section_sets_endpoint_and_region() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let name = secret_name("config");
    moto.create_string(&name, &key);
    let config = sandbox.write(
        "keyrun.toml",
        format!(
            "[aws]\nregion = \"eu-west-1\"\nendpoint_url = \"{}\"\ntimeout = \"5s\"\n\n\
             [profiles.dev.aws]\nregion = \"{REGION}\"\n\n\
             [profiles.dev]\nenv.OPENAI_API_KEY = \"aws-sm:{name}\"\n",
            moto.url()
        )
        .as_bytes(),
        0o600,
    );
    let mut command = sandbox.keyrun();
    command
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .args([
            "--config",
            config.to_str().unwrap(),
            "--profile",
            "dev",
            "--",
        ])
        .args(check_var_command("OPENAI_API_KEY", &key));
    assert_matched(&output(&mut command));
}

#[test]
fn region_option_is_used() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let name = secret_name("regional");
    moto.create_string(&name, &common::random_key());
    let result = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{name}?region=eu-west-1"),
        "x",
    );
    let message = assert_failed(&result);
    assert!(message.contains("ResourceNotFoundException"), "{message}");
    assert!(message.contains("region eu-west-1"), "{message}");
}

#[test]
fn unknown_section_key_names_line() {
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "keyrun.toml",
        b"[aws]\nregion = \"us-east-1\"\nversion = \"x\"\n",
        0o600,
    );
    assert_unknown_key(sandbox.keyrun(), &config, "aws.version", 3, "version_stage");
}

#[test]
fn missing_secret_not_found() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let name = secret_name("absent");
    let result = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{name}"),
        "x",
    );
    let message = assert_failed(&result);
    assert!(message.contains("ResourceNotFoundException"), "{message}");
    assert!(message.contains(&name), "{message}");
    assert!(message.contains(&format!("region {REGION}")), "{message}");
    assert!(message.contains("list-secrets"), "{message}");
}

#[test]
fn scheduled_deletion_rejected() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let name = secret_name("deleted");
    moto.create_string(&name, &key);
    moto.schedule_deletion(&name);
    let result = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{name}"),
        &key,
    );
    let message = assert_failed(&result);
    assert!(message.contains("InvalidRequestException"), "{message}");
    assert!(message.contains("restore-secret"), "{message}");
    assert!(message.contains(&name), "{message}");
    assert_clean(&result, &key);
}

#[test]
fn missing_json_key_lists_fields() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let org = common::random_key();
    let name = secret_name("fields");
    moto.create_string(
        &name,
        &serde_json::json!({"api_key": key, "org_id": org}).to_string(),
    );
    let result = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{name}#apikey"),
        &key,
    );
    let message = assert_failed(&result);
    assert!(message.contains("no field \"apikey\""), "{message}");
    assert!(message.contains("api_key, org_id"), "{message}");
    assert_clean(&result, &key);
    assert_clean(&result, &org);
}

#[test]
fn json_key_on_plain_value_rejected() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let name = secret_name("plain");
    moto.create_string(&name, &key);
    let result = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{name}#api_key"),
        &key,
    );
    let message = assert_failed(&result);
    assert!(message.contains("needs a JSON object"), "{message}");
    assert!(message.contains("drop #api_key"), "{message}");
    assert_clean(&result, &key);
}

#[test]
fn json_key_on_array_rejected() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let name = secret_name("array");
    moto.create_string(&name, &serde_json::json!([key]).to_string());
    let result = run_check(
        keyrun(&sandbox, &moto.url()),
        &format!("aws-sm:{name}#api_key"),
        &key,
    );
    let message = assert_failed(&result);
    assert!(message.contains("holds a JSON array"), "{message}");
    assert_clean(&result, &key);
}

#[test]
fn empty_value_rejected() {
    let server = LoopbackServer::start(None, |_| Some(value_response("empty", "")));
    let sandbox = Sandbox::new();
    let result = run_check(keyrun(&sandbox, &server.url(false)), "aws-sm:empty", "x");
    let message = assert_failed(&result);
    assert!(message.contains("empty value"), "{message}");
    assert!(message.contains("secret empty"), "{message}");
    assert!(message.contains("put-secret-value"), "{message}");
}

#[test]
fn no_region_reported() {
    let sandbox = Sandbox::new();
    let server = LoopbackServer::start(None, |_| Some(value_response("x", "y")));
    let mut command = keyrun(&sandbox, &server.url(false));
    command.env_remove("AWS_REGION");
    let result = run_check(command, "aws-sm:openai", "x");
    let message = assert_failed(&result);
    assert!(message.contains("no AWS region"), "{message}");
    assert!(message.contains("AWS_REGION"), "{message}");
    assert!(message.contains("aws-sm:openai"), "{message}");
    assert_eq!(server.count("/"), 0);
}

#[test]
fn no_credentials_fail_fast() {
    let sandbox = Sandbox::new();
    let server = LoopbackServer::start(None, |_| Some(value_response("x", "y")));
    let mut command = keyrun(&sandbox, &server.url(false));
    command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    let started = Instant::now();
    let result = run_check(command, "aws-sm:openai", "x");
    let elapsed = started.elapsed();
    let message = assert_failed(&result);
    assert!(message.contains("no AWS credentials"), "{message}");
    assert!(message.contains("AWS_ACCESS_KEY_ID"), "{message}");
    assert!(message.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{message}");
    assert!(
        message.contains("skipped: AWS_EC2_METADATA_DISABLED=true"),
        "{message}"
    );
    assert!(message.contains(&format!("region {REGION}")), "{message}");
    assert_eq!(server.count("/"), 0);
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[test]
fn refused_endpoint_reported() {
    let sandbox = Sandbox::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let endpoint = format!("http://127.0.0.1:{port}");
    let result = run_check(keyrun(&sandbox, &endpoint), "aws-sm:openai", "x");
    let message = assert_failed(&result);
    assert!(message.contains("refused the connection"), "{message}");
    assert!(message.contains(&endpoint), "{message}");
    assert!(
        message.contains("AWS_ENDPOINT_URL_SECRETS_MANAGER"),
        "{message}"
    );
}

#[test]
fn silent_endpoint_bounded_by_timeout() {
    let server = LoopbackServer::start(None, |_| None);
    let sandbox = Sandbox::new();
    let started = Instant::now();
    let result = run_check(
        keyrun(&sandbox, &server.url(false)),
        "aws-sm:openai?timeout=1s",
        "x",
    );
    let elapsed = started.elapsed();
    let message = assert_failed(&result);
    assert!(message.contains("did not answer within 1s"), "{message}");
    assert!(message.contains("raise timeout="), "{message}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[test]
fn access_denied_names_action() {
    let server = LoopbackServer::start(None, |_| {
        Some(error_response(
            400,
            "AccessDeniedException",
            "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: secretsmanager:GetSecretValue on resource: openai because no identity-based policy allows the secretsmanager:GetSecretValue action",
        ))
    });
    let sandbox = Sandbox::new();
    let result = run_check(keyrun(&sandbox, &server.url(false)), "aws-sm:openai", "x");
    let message = assert_failed(&result);
    assert!(message.contains("access to secret openai"), "{message}");
    assert!(
        message.contains("grant the identity secretsmanager:GetSecretValue"),
        "{message}"
    );
    assert!(message.contains("user/ci"), "{message}");
    assert!(message.contains(&format!("region {REGION}")), "{message}");
    assert_eq!(server.count("/"), 1);
}

#[test]
fn decryption_failure_names_kms_decrypt() {
    let server = LoopbackServer::start(None, |_| {
        Some(error_response(
            400,
            "DecryptionFailure",
            "Secrets Manager can't decrypt the protected secret text using the provided KMS key.",
        ))
    });
    let sandbox = Sandbox::new();
    let result = run_check(keyrun(&sandbox, &server.url(false)), "aws-sm:openai", "x");
    let message = assert_failed(&result);
    assert!(
        message.contains("cannot decrypt secret openai"),
        "{message}"
    );
    assert!(message.contains("kms:Decrypt"), "{message}");
    assert!(message.contains(&format!("region {REGION}")), "{message}");
}

#[test]
fn throttling_retried_then_succeeds() {
    let key = common::random_key();
    let value = key.clone();
    let server = fake(move |seen| {
        Some(if seen < 2 {
            error_response(400, "ThrottlingException", "Rate exceeded")
        } else {
            value_response("openai", &value)
        })
    });
    let sandbox = Sandbox::new();
    let result = run_check(keyrun(&sandbox, &server.url(false)), "aws-sm:openai", &key);
    assert_matched(&result);
    assert_eq!(server.count("/"), 3);
}

#[test]
fn throttling_reported_after_retries() {
    let server = fake(|_| Some(error_response(400, "ThrottlingException", "Rate exceeded")));
    let sandbox = Sandbox::new();
    let result = run_check(keyrun(&sandbox, &server.url(false)), "aws-sm:openai", "x");
    let message = assert_failed(&result);
    assert!(message.contains("throttled"), "{message}");
    assert!(
        message.contains("ThrottlingException: Rate exceeded"),
        "{message}"
    );
    assert!(message.contains("try again later"), "{message}");
    assert_eq!(server.count("/"), 3);
}

#[test]
fn server_error_retried_then_succeeds() {
    let key = common::random_key();
    let value = key.clone();
    let server = fake(move |seen| {
        Some(if seen < 1 {
            error_response(500, "InternalFailure", "")
        } else {
            value_response("openai", &value)
        })
    });
    let sandbox = Sandbox::new();
    let result = run_check(keyrun(&sandbox, &server.url(false)), "aws-sm:openai", &key);
    assert_matched(&result);
    assert_eq!(server.count("/"), 2);
}

#[test]
fn server_error_reported_after_retries() {
    let server = fake(|_| {
        Some(error_response(
            500,
            "InternalServiceError",
            "An error occurred on the server side.",
        ))
    });
    let sandbox = Sandbox::new();
    let result = run_check(keyrun(&sandbox, &server.url(false)), "aws-sm:openai", "x");
    let message = assert_failed(&result);
    assert!(
        message.contains("failed to return secret openai"),
        "{message}"
    );
    assert!(message.contains("InternalServiceError"), "{message}");
    assert!(message.contains("try again later"), "{message}");
    assert_eq!(server.count("/"), 3);
}

#[test]
fn user_agent_names_keyrun() {
    let key = common::random_key();
    let value = key.clone();
    let server = LoopbackServer::start(None, move |_| Some(value_response("openai", &value)));
    let sandbox = Sandbox::new();
    let result = run_check(keyrun(&sandbox, &server.url(false)), "aws-sm:openai", &key);
    assert_matched(&result);
    let agents = server.with_log(|log| {
        log.iter()
            .map(|r| {
                format!(
                    "{} | {}",
                    r.headers.get("user-agent").cloned().unwrap_or_default(),
                    r.headers
                        .get("x-amz-user-agent")
                        .cloned()
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(agents.len(), 1);
    assert!(agents[0].contains("app/keyrun"), "{}", agents[0]);
}

#[test]
fn request_names_secret_and_stage() {
    let key = common::random_key();
    let value = key.clone();
    let server = LoopbackServer::start(None, move |_| Some(value_response("openai", &value)));
    let sandbox = Sandbox::new();
    let result = run_check(
        keyrun(&sandbox, &server.url(false)),
        "aws-sm:prod/openai",
        &key,
    );
    assert_matched(&result);
    let bodies = server.with_log(|log| {
        log.iter()
            .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["SecretId"], "prod/openai");
    assert_eq!(bodies[0]["VersionStage"], "AWSCURRENT");
    assert!(bodies[0].get("VersionId").is_none());
}

#[test]
fn aws_credentials_stay_in_child() {
    let server = LoopbackServer::start(None, |_| Some(value_response("openai", "sk-abcdefghijk")));
    let sandbox = Sandbox::new();
    let mut command = keyrun(&sandbox, &server.url(false));
    command
        .args(["--from", "aws-sm:openai", "--"])
        .args(env_has_command("AWS_SECRET_ACCESS_KEY"));
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(stdout(&result).trim(), "AWS_SECRET_ACCESS_KEY=present");
}

#[test]
fn unset_removes_aws_credentials() {
    let server = LoopbackServer::start(None, |_| Some(value_response("openai", "sk-abcdefghijk")));
    let sandbox = Sandbox::new();
    let mut command = keyrun(&sandbox, &server.url(false));
    command
        .args(["--from", "aws-sm:openai"])
        .args(["--unset", "AWS_SECRET_ACCESS_KEY", "--"])
        .args(env_has_command("AWS_SECRET_ACCESS_KEY"));
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(stdout(&result).trim(), "AWS_SECRET_ACCESS_KEY=absent");
}

#[test]
fn trace_log_omits_value() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let name = secret_name("logged");
    moto.create_string(&name, &key);
    let mut command = keyrun(&sandbox, &moto.url());
    command.env("KEYRUN_LOG", "trace");
    let result = run_check(command, &format!("aws-sm:{name}"), &key);
    assert_matched(&result);
    assert!(
        stderr(&result).contains("GetSecretValue"),
        "the trace log is missing"
    );
    assert_clean(&result, &key);
}

#[cfg(target_os = "linux")]
#[test]
fn memory_clean_with_aws_source() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let name = secret_name("memory");
    moto.create_string(
        &name,
        &serde_json::json!({"api_key": key, "org_id": "org-x"}).to_string(),
    );
    let mut command = keyrun(&sandbox, &moto.url());
    command.args(["--from", &format!("aws-sm:{name}#api_key")]);
    common::memory::assert_value_absent(command, &key);
}

#[cfg(target_os = "linux")]
#[test]
fn memory_clean_with_plain_aws_value() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let name = secret_name("memory");
    moto.create_string(&name, &key);
    let mut command = keyrun(&sandbox, &moto.url());
    command.args(["--from", &format!("aws-sm:{name}")]);
    common::memory::assert_value_absent(command, &key);
}

/// The official `openai` Python client lists models with the key from
/// Secrets Manager. Needs `KEYRUN_TEST_PYTHON` (set by tests/run.sh).
#[test]
fn openai_client_lists_models() {
    let Some(moto) = moto() else { return };
    let Some(python) = openai::python() else {
        return;
    };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let name = secret_name("openai");
    moto.create_string(&name, &key);
    let mut command = keyrun(&sandbox, &moto.url());
    command.args(["--from", &format!("aws-sm:{name}")]);
    openai::assert_lists_models(command, python, &key);
}

/// A profile that reads `name` from moto with the given `max_age`.
fn age_config(sandbox: &Sandbox, name: &str, max_age: &str, extra: &str) -> std::path::PathBuf {
    let text = format!(
        "default_profile = \"p\"\n[profiles.p]\nenv.OPENAI_API_KEY = {{ from = \"aws-sm:{name}\", max_age = \"{max_age}\" }}\n{extra}"
    );
    sandbox.write("keyrun-config.toml", text.as_bytes(), 0o600)
}

#[test]
fn max_age_uses_created_date() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let name = secret_name("age");
    moto.create_string(&name, &key);
    // The version moto just created is younger than a day and, after this
    // pause, older than one second.
    std::thread::sleep(Duration::from_millis(2100));

    let fresh = age_config(&sandbox, &name, "1d", "");
    let within = run_with_config(keyrun(&sandbox, &moto.url()), &fresh);
    assert_eq!(within.status.code(), Some(0), "{}", stderr(&within));
    assert!(!stderr(&within).contains("max_age"), "{}", stderr(&within));

    let stale = age_config(&sandbox, &name, "1s", "");
    let overdue = run_with_config(keyrun(&sandbox, &moto.url()), &stale);
    assert_eq!(overdue.status.code(), Some(0), "{}", stderr(&overdue));
    assert!(
        stderr(&overdue).contains("over max_age 1s"),
        "{}",
        stderr(&overdue)
    );
    assert_clean(&overdue, &key);
}

#[test]
fn max_age_enforced_with_moto_secret() {
    let Some(moto) = moto() else { return };
    let sandbox = Sandbox::new();
    let key = common::random_key();
    let name = secret_name("age-enforced");
    moto.create_string(&name, &key);
    std::thread::sleep(Duration::from_millis(2100));

    let config = age_config(&sandbox, &name, "1s", "enforce_max_age = true\n");
    let mut command = keyrun(&sandbox, &moto.url());
    command
        .arg("--config")
        .arg(&config)
        .args(["--", "sh", "-c", "echo child ran"]);
    let result = output(&mut command);
    let text = assert_failed(&result);
    assert!(text.contains("enforce_max_age"), "{text}");
    assert!(
        !stdout(&result).contains("child ran"),
        "the command ran despite an overdue key"
    );
    assert_clean(&result, &key);
}
