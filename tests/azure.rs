//! The `azure-kv:` source against loopback stand-ins for the identity
//! platform, the App Service managed identity endpoint and Key Vault
//! (`azure_support`), reached over TLS with a CA the test generates and
//! passes through `SSL_CERT_FILE`. Nothing here reaches an Azure host or
//! the instance metadata address: the vault is `127.0.0.1:PORT` and
//! `AZURE_AUTHORITY_HOST` points at the same loopback server.

mod azure_support;
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use azure_support::{random_hex, Behavior, FakeAzure, Pki, StoredSecret, VaultMode};
use common::{
    assert_failed, assert_matched, assert_not_leaked, assert_pair_failed, assert_unknown_key,
    check_var_command, env_has_command, openai, output, run_pair, stderr, stdout, Sandbox,
};

/// A sandbox, a fake Azure and the credentials it accepts.
struct Setup {
    sandbox: Sandbox,
    ca: PathBuf,
    azure: FakeAzure,
    key: String,
    tenant: String,
    client_id: String,
    client_secret: String,
    assertion: String,
    identity_header: String,
    access_token: String,
}

fn setup() -> Setup {
    setup_with(VaultMode::Normal, |_| {})
}

fn setup_with(mode: VaultMode, edit: impl FnOnce(&mut Vec<StoredSecret>)) -> Setup {
    let sandbox = Sandbox::new();
    let pki = Pki::generate();
    let ca = pki.write_ca(sandbox.path());
    let key = common::random_key();
    let mut secrets = vec![StoredSecret::new("openai-key", &key)];
    edit(&mut secrets);

    let tenant = format!("{}-tenant", random_hex(4));
    let client_id = random_hex(8);
    let client_secret = format!("cs~{}", random_hex(16));
    let assertion = format!(
        "eyJ{}.eyJ{}.{}",
        random_hex(8),
        random_hex(16),
        random_hex(16)
    );
    let identity_header = random_hex(16);
    let access_token = format!("eyJ0eXAi.{}", random_hex(24));
    let azure = FakeAzure::start(
        &pki,
        Behavior {
            tenant: tenant.clone(),
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
            federated_assertion: assertion.clone(),
            identity_header: identity_header.clone(),
            access_token: access_token.clone(),
            secrets,
            vault_mode: mode,
        },
    );

    // A PATH with only the programs the child commands use, so whether `az`
    // exists is up to each test.
    let bin = sandbox.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for program in ["sh", "sleep"] {
        let target = ["/usr/bin", "/bin"]
            .iter()
            .map(|dir| PathBuf::from(dir).join(program))
            .find(|path| path.exists())
            .unwrap();
        std::os::unix::fs::symlink(target, bin.join(program)).unwrap();
    }

    Setup {
        sandbox,
        ca,
        azure,
        key,
        tenant,
        client_id,
        client_secret,
        assertion,
        identity_header,
        access_token,
    }
}

impl Setup {
    fn reference(&self, rest: &str) -> String {
        format!("azure-kv:{}/{rest}", self.azure.vault())
    }

    /// keyrun with the test CA, the loopback authority and the sandbox's
    /// PATH, and no Azure credentials.
    fn keyrun(&self) -> Command {
        let mut command = self.sandbox.keyrun();
        command
            .env("PATH", self.sandbox.path().join("bin"))
            .env("SSL_CERT_FILE", &self.ca)
            .env("AZURE_AUTHORITY_HOST", self.azure.authority_host());
        command
    }

    /// keyrun with client secret credentials in its environment.
    fn keyrun_secret(&self) -> Command {
        let mut command = self.keyrun();
        command
            .env("AZURE_TENANT_ID", &self.tenant)
            .env("AZURE_CLIENT_ID", &self.client_id)
            .env("AZURE_CLIENT_SECRET", &self.client_secret);
        command
    }

    /// Installs a stand-in `az` that prints `az account get-access-token`'s
    /// JSON with the fake's token and records its arguments.
    fn install_az(&self, body: &str) -> PathBuf {
        let args = self.sandbox.path().join("az-args");
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n{body}\n",
            args.display()
        );
        self.sandbox.write("bin/az", script.as_bytes(), 0o755);
        args
    }

    fn install_working_az(&self) -> PathBuf {
        self.install_az(&format!(
            "printf '%s\\n' '{{\"accessToken\": \"{}\", \"expiresOn\": \"2030-01-01 00:00:00.000000\", \"expires_on\": 1893456000, \"subscription\": \"00000000-0000-0000-0000-000000000000\", \"tenant\": \"{}\", \"tokenType\": \"Bearer\"}}'",
            self.access_token, self.tenant
        ))
    }

    /// Runs keyrun with `reference` and a child that reports whether
    /// OPENAI_API_KEY contains the stored key.
    fn run_check(&self, mut command: Command, reference: &str) -> std::process::Output {
        command
            .args(["--from", reference, "--"])
            .args(check_var_command("OPENAI_API_KEY", &self.key));
        output(&mut command)
    }

    fn assert_clean(&self, result: &std::process::Output) {
        for secret in [&self.key, &self.client_secret, &self.access_token] {
            assert_not_leaked(&result.stdout, secret, "stdout");
            assert_not_leaked(&result.stderr, secret, "stderr");
        }
    }
}

#[test]
fn client_secret_injects_value() {
    let setup = setup();
    let result = setup.run_check(setup.keyrun_secret(), &setup.reference("openai-key"));
    assert_matched(&result);
    setup.assert_clean(&result);
}

#[test]
fn client_secret_posts_token_request() {
    let setup = setup();
    let result = setup.run_check(setup.keyrun_secret(), &setup.reference("openai-key"));
    assert_matched(&result);
    let tokens = setup
        .azure
        .requests_to(&format!("/{}/oauth2/v2.0/token", setup.tenant));
    assert_eq!(tokens.len(), 1);
    let form = azure_support::parse_form(&tokens[0].body);
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "https://vault.azure.net/.default");
    let reads = setup.azure.requests_to("/secrets/openai-key");
    assert_eq!(reads.len(), 1);
    assert!(reads[0].query().contains_key("api-version"));
}

#[test]
fn client_secret_removed_from_child() {
    let setup = setup();
    let mut command = setup.keyrun_secret();
    command
        .args(["--from", &setup.reference("openai-key"), "--"])
        .args(env_has_command("AZURE_CLIENT_SECRET"));
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(stdout(&result).trim(), "AZURE_CLIENT_SECRET=absent");
}

#[test]
fn keep_backend_env_keeps_client_secret() {
    let setup = setup();
    let mut command = setup.keyrun_secret();
    command
        .args([
            "--keep-backend-env",
            "--from",
            &setup.reference("openai-key"),
            "--",
        ])
        .args(env_has_command("AZURE_CLIENT_SECRET"));
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(stdout(&result).trim(), "AZURE_CLIENT_SECRET=present");
}

#[test]
fn version_selects_older_value() {
    let old_key = common::random_key();
    let old_version = random_hex(16);
    let setup = setup_with(VaultMode::Normal, |secrets| {
        let mut old = StoredSecret::new("openai-key", &old_key);
        old.version = old_version.clone();
        secrets.insert(0, old);
    });
    let mut command = setup.keyrun_secret();
    command
        .args([
            "--from",
            &setup.reference(&format!("openai-key/{old_version}")),
            "--",
        ])
        .args(check_var_command("OPENAI_API_KEY", &old_key));
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(stdout(&result).trim(), "OPENAI_API_KEY=match");
    let reads = setup
        .azure
        .requests_to(&format!("/secrets/openai-key/{old_version}"));
    assert_eq!(reads.len(), 1);
}

#[test]
fn same_secret_read_once() {
    let setup = setup();
    let reference = setup.reference("openai-key");
    let mut command = setup.keyrun_secret();
    command
        .args(["--set", &format!("FIRST={reference}")])
        .args(["--set", &format!("SECOND={reference}"), "--"])
        .args(check_var_command("SECOND", &setup.key));
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(stdout(&result).trim(), "SECOND=match");
    assert_eq!(
        setup
            .azure
            .requests_to(&format!("/{}/", setup.tenant))
            .len(),
        1
    );
    assert_eq!(setup.azure.requests_to("/secrets/").len(), 1);
}

#[test]
fn shared_read_error_names_each_reference() {
    let setup = setup();
    // The default timeout is 10s, so both references read one secret with
    // the same settings.
    let first = setup.reference("no-such-key");
    let second = setup.reference("no-such-key?timeout=10s");
    let command = setup.keyrun_secret();
    let result = run_pair(command, &first, &second);
    setup.assert_clean(&result);
    let message = assert_failed(&result);
    let line = assert_pair_failed(&message, &first, &second);
    assert!(line.contains("404 SecretNotFound"), "{line}");
    assert_eq!(setup.azure.requests_to("/secrets/").len(), 1);
}

#[test]
fn shared_token_error_names_each_reference() {
    let setup = setup();
    let first = setup.reference("openai-key");
    let second = setup.reference("anthropic-key");
    let mut command = setup.keyrun_secret();
    command.env("AZURE_CLIENT_SECRET", format!("cs~{}", random_hex(16)));
    let result = run_pair(command, &first, &second);
    setup.assert_clean(&result);
    let message = assert_failed(&result);
    let line = assert_pair_failed(&message, &first, &second);
    assert!(line.contains("invalid_client"), "{line}");
    assert!(setup.azure.requests_to("/secrets/").is_empty());
}

#[test]
fn workload_identity_sends_assertion() {
    let setup = setup();
    let token_file = setup.sandbox.write(
        "federated-token",
        format!("{}\n", setup.assertion).as_bytes(),
        0o600,
    );
    let mut command = setup.keyrun();
    command
        .env("AZURE_TENANT_ID", &setup.tenant)
        .env("AZURE_CLIENT_ID", &setup.client_id)
        .env("AZURE_FEDERATED_TOKEN_FILE", &token_file);
    let result = setup.run_check(command, &setup.reference("openai-key"));
    assert_matched(&result);
    let tokens = setup
        .azure
        .requests_to(&format!("/{}/oauth2/v2.0/token", setup.tenant));
    assert_eq!(tokens.len(), 1);
    let form = azure_support::parse_form(&tokens[0].body);
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert!(!form.contains_key("client_secret"));
}

#[test]
fn managed_identity_uses_identity_endpoint() {
    let setup = setup();
    let mut command = setup.keyrun();
    command
        .env("IDENTITY_ENDPOINT", setup.azure.identity_endpoint())
        .env("IDENTITY_HEADER", &setup.identity_header);
    let result = setup.run_check(command, &setup.reference("openai-key"));
    assert_matched(&result);
    let calls = setup.azure.requests_to("/msi/token");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].query()["resource"], "https://vault.azure.net");
    assert_eq!(calls[0].query()["api-version"], "2019-08-01");
}

#[test]
fn managed_identity_error_is_reported() {
    let setup = setup();
    let mut command = setup.keyrun();
    command
        .env("IDENTITY_ENDPOINT", setup.azure.identity_endpoint())
        .env("IDENTITY_HEADER", random_hex(16));
    let result = setup.run_check(command, &setup.reference("openai-key"));
    let message = assert_failed(&result);
    assert!(message.contains("400 Bad Request"), "{message}");
    assert!(message.contains("Invalid request."), "{message}");
    assert!(message.contains("system-assigned identity"), "{message}");
    assert!(setup.azure.requests_to("/secrets/").is_empty());
}

#[test]
fn cli_auth_runs_az() {
    let setup = setup();
    let args_file = setup.install_working_az();
    let result = setup.run_check(setup.keyrun(), &setup.reference("openai-key?auth=cli"));
    assert_matched(&result);
    let args = std::fs::read_to_string(args_file).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(&args[..2], ["account", "get-access-token"]);
    let resource = args.iter().position(|a| *a == "--resource").unwrap();
    assert_eq!(args[resource + 1], "https://vault.azure.net");
}

#[test]
fn auto_falls_back_to_cli() {
    let setup = setup();
    setup.install_working_az();
    let result = setup.run_check(setup.keyrun(), &setup.reference("openai-key"));
    assert_matched(&result);
    assert!(setup
        .azure
        .requests_to(&format!("/{}/", setup.tenant))
        .is_empty());
}

#[test]
fn auto_lists_what_it_tried() {
    let setup = setup();
    let result = setup.run_check(setup.keyrun(), &setup.reference("openai-key"));
    let message = assert_failed(&result);
    for tried in [
        "client secret (AZURE_CLIENT_SECRET is not set)",
        "workload identity (AZURE_FEDERATED_TOKEN_FILE is not set)",
        "managed identity (IDENTITY_ENDPOINT is not set",
        "Azure CLI (az is not on PATH)",
    ] {
        assert!(message.contains(tried), "missing {tried:?} in: {message}");
    }
    assert!(setup.azure.log().is_empty());
}

#[test]
fn cli_missing_az_is_reported() {
    let setup = setup();
    let result = setup.run_check(setup.keyrun(), &setup.reference("openai-key?auth=cli"));
    let message = assert_failed(&result);
    assert!(message.contains("is not on PATH"), "{message}");
    assert!(message.contains("az login"), "{message}");
}

#[test]
fn cli_hang_bounded_by_timeout() {
    let setup = setup();
    setup.install_az("exec sleep 30");
    let started = Instant::now();
    let result = setup.run_check(
        setup.keyrun(),
        &setup.reference("openai-key?auth=cli&timeout=1s"),
    );
    let message = assert_failed(&result);
    assert!(message.contains("did not finish within 1s"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn cli_failure_shows_stderr() {
    let setup = setup();
    setup.install_az("echo \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1");
    let result = setup.run_check(setup.keyrun(), &setup.reference("openai-key?auth=cli"));
    let message = assert_failed(&result);
    assert!(message.contains("Please run 'az login'"), "{message}");
    assert!(message.contains("exit status 1"), "{message}");
}

#[test]
fn token_error_shows_error_description() {
    let setup = setup();
    let mut command = setup.keyrun_secret();
    let wrong = format!("cs~{}", random_hex(16));
    command.env("AZURE_CLIENT_SECRET", &wrong);
    let result = setup.run_check(command, &setup.reference("openai-key"));
    let message = assert_failed(&result);
    assert!(message.contains("invalid_client"), "{message}");
    assert!(message.contains("AADSTS7000215"), "{message}");
    assert!(message.contains("AZURE_CLIENT_SECRET"), "{message}");
    assert_not_leaked(&result.stderr, &wrong, "stderr");
    assert!(setup.azure.requests_to("/secrets/").is_empty());
}

#[test]
fn unknown_tenant_shows_error_description() {
    let setup = setup();
    let mut command = setup.keyrun_secret();
    command.env("AZURE_TENANT_ID", "other-tenant");
    let result = setup.run_check(command, &setup.reference("openai-key"));
    let message = assert_failed(&result);
    assert!(message.contains("invalid_request"), "{message}");
    assert!(message.contains("AADSTS90002"), "{message}");
    setup.assert_clean(&result);
}

#[test]
fn rejected_token_reports_401() {
    let setup = setup_with(VaultMode::RejectToken, |_| {});
    let result = setup.run_check(setup.keyrun_secret(), &setup.reference("openai-key"));
    let message = assert_failed(&result);
    assert!(message.contains("401 Unauthorized"), "{message}");
    assert!(message.contains("AKV10032"), "{message}");
    assert!(message.contains("tenant_id"), "{message}");
    setup.assert_clean(&result);
}

#[test]
fn forbidden_names_secrets_user_role() {
    let setup = setup_with(VaultMode::Forbidden, |_| {});
    let result = setup.run_check(setup.keyrun_secret(), &setup.reference("openai-key"));
    let message = assert_failed(&result);
    assert!(message.contains("403 Forbidden"), "{message}");
    assert!(message.contains("Key Vault Secrets User"), "{message}");
    assert!(
        message.contains("access policy with get permission"),
        "{message}"
    );
    assert!(message.contains(&setup.azure.vault()), "{message}");
}

#[test]
fn missing_secret_reports_not_found() {
    let setup = setup();
    let result = setup.run_check(setup.keyrun_secret(), &setup.reference("no-such-key"));
    let message = assert_failed(&result);
    assert!(message.contains("404 SecretNotFound"), "{message}");
    assert!(message.contains("secret no-such-key in vault"), "{message}");
}

#[test]
fn disabled_secret_is_rejected() {
    let setup = setup_with(VaultMode::Normal, |secrets| secrets[0].enabled = false);
    let result = setup.run_check(setup.keyrun_secret(), &setup.reference("openai-key"));
    let message = assert_failed(&result);
    assert!(message.contains("is disabled"), "{message}");
    assert!(message.contains("--enabled true"), "{message}");
    setup.assert_clean(&result);
}

#[test]
fn disabled_error_code_is_rejected() {
    let setup = setup_with(VaultMode::DisabledByCode, |_| {});
    let result = setup.run_check(setup.keyrun_secret(), &setup.reference("openai-key"));
    let message = assert_failed(&result);
    assert!(message.contains("is disabled"), "{message}");
}

#[test]
fn expired_secret_is_rejected() {
    let setup = setup_with(VaultMode::Normal, |secrets| {
        secrets[0].exp = Some(1_500_000_000)
    });
    let result = setup.run_check(setup.keyrun_secret(), &setup.reference("openai-key"));
    let message = assert_failed(&result);
    assert!(
        message.contains("expired at 2017-07-14T02:40:00Z"),
        "{message}"
    );
    setup.assert_clean(&result);
}

#[test]
fn future_secret_is_rejected() {
    let setup = setup_with(VaultMode::Normal, |secrets| {
        secrets[0].nbf = Some(4_102_444_800)
    });
    let result = setup.run_check(setup.keyrun_secret(), &setup.reference("openai-key"));
    let message = assert_failed(&result);
    assert!(
        message.contains("not valid before 2100-01-01T00:00:00Z"),
        "{message}"
    );
    setup.assert_clean(&result);
}

#[test]
fn refused_connection_is_reported() {
    let setup = setup();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut command = setup.keyrun_secret();
    command.env("AZURE_AUTHORITY_HOST", format!("https://127.0.0.1:{port}"));
    let result = setup.run_check(command, &setup.reference("openai-key"));
    let message = assert_failed(&result);
    assert!(message.contains("refused"), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
}

#[test]
fn silent_vault_bounded_by_timeout() {
    let setup = setup_with(VaultMode::Silent, |_| {});
    let started = Instant::now();
    let result = setup.run_check(
        setup.keyrun_secret(),
        &setup.reference("openai-key?timeout=1s"),
    );
    let message = assert_failed(&result);
    assert!(message.contains("did not answer within 1s"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn throttling_retried_then_reported() {
    let setup = setup_with(VaultMode::Throttle { retry_after: 1 }, |_| {});
    let result = setup.run_check(setup.keyrun_secret(), &setup.reference("openai-key"));
    let message = assert_failed(&result);
    assert!(message.contains("429 Too Many Requests"), "{message}");
    assert!(message.contains("Retry-After: 1s"), "{message}");
    assert!(setup.azure.requests_to("/secrets/").len() > 1);
}

#[test]
fn server_error_retried_then_succeeds() {
    let setup = setup_with(
        VaultMode::FailFirst {
            times: 2,
            status: 503,
        },
        |_| {},
    );
    let result = setup.run_check(setup.keyrun_secret(), &setup.reference("openai-key"));
    assert_matched(&result);
    assert_eq!(setup.azure.requests_to("/secrets/").len(), 3);
}

#[test]
fn server_error_reported_after_retries() {
    let setup = setup_with(
        VaultMode::FailFirst {
            times: 100,
            status: 500,
        },
        |_| {},
    );
    let result = setup.run_check(setup.keyrun_secret(), &setup.reference("openai-key"));
    let message = assert_failed(&result);
    assert!(message.contains("500 Internal Server Error"), "{message}");
    assert!(message.contains("try again later"), "{message}");
    assert_eq!(setup.azure.requests_to("/secrets/").len(), 4);
}

#[test]
fn untrusted_certificate_names_ssl_cert_file() {
    let setup = setup();
    let mut command = setup.keyrun_secret();
    command.env_remove("SSL_CERT_FILE");
    let result = setup.run_check(command, &setup.reference("openai-key"));
    let message = assert_failed(&result);
    assert!(message.contains("certificate"), "{message}");
    assert!(message.contains("SSL_CERT_FILE"), "{message}");
    assert!(setup.azure.log().is_empty());
}

#[test]
fn ssl_cert_dir_is_trusted() {
    let setup = setup();
    let folder = setup.sandbox.path().join("certs");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(&setup.ca, folder.join("test-ca.pem")).unwrap();
    let mut command = setup.keyrun_secret();
    command
        .env_remove("SSL_CERT_FILE")
        .env("SSL_CERT_DIR", &folder);
    let result = setup.run_check(command, &setup.reference("openai-key"));
    assert_matched(&result);
    setup.assert_clean(&result);
}

#[test]
fn profile_section_overrides_top_level() {
    let setup = setup();
    setup.install_working_az();
    let config = setup.sandbox.write(
        "keyrun.toml",
        format!(
            "[azure]\nauth = \"secret\"\n\n[profiles.dev.azure]\nauth = \"cli\"\n\n[profiles.dev]\nenv.OPENAI_API_KEY = \"{}\"\n",
            setup.reference("openai-key")
        )
        .as_bytes(),
        0o600,
    );
    let mut command = setup.keyrun();
    command
        .args([
            "--config",
            config.to_str().unwrap(),
            "--profile",
            "dev",
            "--",
        ])
        .args(check_var_command("OPENAI_API_KEY", &setup.key));
    let result = output(&mut command);
    assert_matched(&result);
}

#[test]
fn unknown_section_key_names_line() {
    let setup = setup();
    let config = setup.sandbox.write(
        "keyrun.toml",
        b"[azure]\nauth = \"cli\"\ntenant = \"x\"\n",
        0o600,
    );
    assert_unknown_key(setup.keyrun(), &config, "azure.tenant", 3, "tenant_id");
}

#[test]
fn unknown_auth_is_rejected() {
    let setup = setup();
    let result = setup.run_check(
        setup.keyrun_secret(),
        &setup.reference("openai-key?auth=magic"),
    );
    let message = assert_failed(&result);
    assert!(
        message.contains("auto, secret, workload, managed or cli"),
        "{message}"
    );
    assert!(setup.azure.log().is_empty());
}

#[cfg(target_os = "linux")]
#[test]
fn memory_clean_with_azure_source() {
    let setup = setup();
    let mut command = setup.keyrun_secret();
    command.args(["--from", &setup.reference("openai-key")]);
    common::memory::assert_value_absent(command, &setup.key);
}

/// The official `openai` Python client lists models with the key from
/// Key Vault. Needs `KEYRUN_TEST_PYTHON` (set by tests/run.sh).
#[test]
fn openai_client_lists_models() {
    let Some(python) = openai::python() else {
        return;
    };
    let setup = setup();
    let mut command = setup.keyrun_secret();
    command.args(["--from", &setup.reference("openai-key")]);
    let result = openai::assert_lists_models(command, python, &setup.key);
    setup.assert_clean(&result);
}
