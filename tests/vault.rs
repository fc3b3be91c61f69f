//! The `vault:` source against a loopback stand-in for Vault's HTTP API
//! (`vault_support`), reached over TLS with a CA the test generates and
//! passes through `VAULT_CACERT`. Nothing here reaches a host beyond
//! 127.0.0.1.

mod common;
mod vault_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    assert_failed, assert_failure_names, assert_matched, assert_not_leaked, assert_pair_failed,
    check_var_command, env_has_command, failure_line, openai, output, run_pair, stderr, stdout,
    Sandbox,
};
use vault_support::{
    random_hex, ActionsTokenServer, Behavior, FakeVault, Mode, Pki, StoredSecret, StoredVersion,
};

/// A sandbox, a fake Vault and the credentials it accepts.
struct Setup {
    sandbox: Sandbox,
    ca: PathBuf,
    vault: FakeVault,
    key: String,
    token: String,
    role_id: String,
    secret_id: String,
    jwt: String,
}

fn behavior(key: &str) -> Behavior {
    Behavior {
        mounts: vec![("secret/".to_string(), 2), ("kv/".to_string(), 1)],
        secrets: vec![
            StoredSecret {
                path: "secret/openai".to_string(),
                versions: vec![StoredVersion::new(&[("api_key", key)])],
            },
            StoredSecret {
                path: "kv/openai".to_string(),
                versions: vec![StoredVersion::new(&[("api_key", key)])],
            },
        ],
        token: format!("hvs.{}", random_hex(12)),
        denied: Vec::new(),
        namespace: None,
        role_id: format!("{}-role", random_hex(8)),
        secret_id: format!("{}-secret", random_hex(8)),
        jwt: (
            "ci".to_string(),
            format!(
                "eyJ{}.eyJ{}.{}",
                random_hex(8),
                random_hex(16),
                random_hex(16)
            ),
        ),
        kubernetes: (
            "app".to_string(),
            format!(
                "eyJ{}.eyJ{}.{}",
                random_hex(8),
                random_hex(16),
                random_hex(16)
            ),
        ),
        mode: Mode::Normal,
    }
}

fn setup() -> Setup {
    setup_with(|_| {})
}

fn setup_with(edit: impl FnOnce(&mut Behavior)) -> Setup {
    let sandbox = Sandbox::new();
    let pki = Pki::generate();
    let ca = pki.write_ca(sandbox.path());
    let key = common::random_key();
    let mut behavior = behavior(&key);
    edit(&mut behavior);
    let token = behavior.token.clone();
    let role_id = behavior.role_id.clone();
    let secret_id = behavior.secret_id.clone();
    let jwt = behavior.jwt.1.clone();
    let vault = FakeVault::start(&pki, behavior);
    Setup {
        sandbox,
        ca,
        vault,
        key,
        token,
        role_id,
        secret_id,
        jwt,
    }
}

impl Setup {
    /// keyrun with the fake's address and CA, and no credentials.
    fn keyrun(&self) -> Command {
        let mut command = self.sandbox.keyrun();
        command
            .env("VAULT_ADDR", self.vault.address())
            .env("VAULT_CACERT", &self.ca);
        command
    }

    /// keyrun with `VAULT_TOKEN`.
    fn keyrun_token(&self) -> Command {
        let mut command = self.keyrun();
        command.env("VAULT_TOKEN", &self.token);
        command
    }

    /// Runs `command` with `--from REF` and a child that checks the key.
    fn run_check(&self, mut command: Command, reference: &str) -> std::process::Output {
        command
            .args(["--from", reference, "--"])
            .args(check_var_command("OPENAI_API_KEY", &self.key));
        output(&mut command)
    }

    fn assert_clean(&self, result: &std::process::Output) {
        for secret in [&self.key, &self.token, &self.secret_id, &self.jwt] {
            assert_not_leaked(&result.stdout, secret, "stdout");
            assert_not_leaked(&result.stderr, secret, "stderr");
        }
        for token in self.vault.issued() {
            assert_not_leaked(&result.stdout, &token, "stdout");
            assert_not_leaked(&result.stderr, &token, "stderr");
        }
    }
}

#[test]
fn token_reads_kv2_field() {
    let setup = setup();
    let result = setup.run_check(setup.keyrun_token(), "vault:secret/openai#api_key");
    assert_matched(&result);
    assert_eq!(setup.vault.count("sys/internal/ui/mounts/secret/openai"), 1);
    assert_eq!(setup.vault.count("secret/data/openai"), 1);
    assert_eq!(setup.vault.targets().len(), 2);
    setup.assert_clean(&result);
}

#[test]
fn only_field_is_the_default() {
    let setup = setup();
    let result = setup.run_check(setup.keyrun_token(), "vault:secret/openai");
    assert_matched(&result);
}

#[test]
fn several_fields_need_a_field() {
    let setup = setup_with(|b| {
        b.secrets[0].versions[0]
            .fields
            .push(("org_id".to_string(), "org-hidden-value".to_string()));
    });
    let result = setup.run_check(setup.keyrun_token(), "vault:secret/openai");
    let message = assert_failed(&result);
    assert!(message.contains("api_key, org_id"), "{message}");
    assert!(message.contains("#FIELD"), "{message}");
    assert!(!message.contains("org-hidden-value"), "{message}");
    setup.assert_clean(&result);
}

#[test]
fn unknown_field_lists_names() {
    let setup = setup();
    let result = setup.run_check(setup.keyrun_token(), "vault:secret/openai#missing");
    let message = assert_failed(&result);
    assert!(message.contains("no field \"missing\""), "{message}");
    assert!(message.contains("api_key"), "{message}");
    setup.assert_clean(&result);
}

#[test]
fn kv1_read_uses_plain_path() {
    let setup = setup();
    let result = setup.run_check(setup.keyrun_token(), "vault:kv/openai#api_key");
    assert_matched(&result);
    assert_eq!(setup.vault.count("kv/openai"), 1);
    assert_eq!(setup.vault.count("kv/data"), 0);
}

#[test]
fn explicit_kv_skips_mount_lookup() {
    let setup = setup();
    let result = setup.run_check(setup.keyrun_token(), "vault:secret/openai?kv=2#api_key");
    assert_matched(&result);
    assert_eq!(setup.vault.count("sys/internal/ui/mounts"), 0);
    assert_eq!(setup.vault.count("secret/data/openai"), 1);
}

#[test]
fn path_starting_with_data_is_not_mangled() {
    let key = common::random_key();
    let setup = setup_with(|b| {
        b.secrets.push(StoredSecret {
            path: "secret/database/openai".to_string(),
            versions: vec![StoredVersion::new(&[("api_key", &key)])],
        });
    });
    let mut command = setup.keyrun_token();
    command
        .args(["--from", "vault:secret/database/openai#api_key", "--"])
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(setup.vault.count("secret/data/database/openai"), 1);
}

#[test]
fn spelled_data_path_gains_no_second_data() {
    let setup = setup();
    let result = setup.run_check(setup.keyrun_token(), "vault:secret/data/openai#api_key");
    assert_matched(&result);
    assert_eq!(setup.vault.count("secret/data/openai"), 1);
    assert_eq!(setup.vault.count("secret/data/data"), 0);
}

#[test]
fn version_option_reads_that_version() {
    let old = common::random_key();
    let setup = setup_with(|b| {
        b.secrets[0]
            .versions
            .insert(0, StoredVersion::new(&[("api_key", &old)]));
    });
    let mut command = setup.keyrun_token();
    command
        .args(["--from", "vault:secret/openai?version=1#api_key", "--"])
        .args(check_var_command("OPENAI_API_KEY", &old));
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert!(setup
        .vault
        .targets()
        .contains(&"/v1/secret/data/openai?version=1".to_string()));
}

#[test]
fn deleted_version_is_an_error() {
    let setup = setup_with(|b| {
        b.secrets[0].versions[0].deletion_time = "2018-03-22T02:36:43.986212308Z".to_string();
    });
    let result = setup.run_check(setup.keyrun_token(), "vault:secret/openai#api_key");
    let message = assert_failed(&result);
    assert!(message.contains("was deleted"), "{message}");
    assert!(message.contains("undelete"), "{message}");
}

#[test]
fn destroyed_version_is_an_error() {
    let setup = setup_with(|b| {
        b.secrets[0].versions[0].destroyed = true;
    });
    let result = setup.run_check(setup.keyrun_token(), "vault:secret/openai#api_key");
    let message = assert_failed(&result);
    assert!(message.contains("is destroyed"), "{message}");
}

#[test]
fn token_helper_file_is_used() {
    let setup = setup();
    std::fs::write(
        setup.sandbox.home().join(".vault-token"),
        format!("{}\n", setup.token),
    )
    .unwrap();
    let result = setup.run_check(setup.keyrun(), "vault:secret/openai#api_key");
    assert_matched(&result);
}

#[test]
fn missing_token_says_how_to_log_in() {
    let setup = setup();
    let result = setup.run_check(setup.keyrun(), "vault:secret/openai#api_key");
    let message = assert_failed(&result);
    assert!(message.contains("VAULT_TOKEN"), "{message}");
    assert!(message.contains("vault login"), "{message}");
    assert_eq!(setup.vault.targets().len(), 0);
}

#[test]
fn vault_token_is_removed_from_child() {
    let setup = setup();
    let mut command = setup.keyrun_token();
    command
        .args(["--from", "vault:secret/openai#api_key", "--"])
        .args(env_has_command("VAULT_TOKEN"));
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(stdout(&result).trim(), "VAULT_TOKEN=absent");
}

#[test]
fn namespace_is_sent() {
    let setup = setup_with(|b| b.namespace = Some("team-a".to_string()));
    let mut command = setup.keyrun_token();
    command.env("VAULT_NAMESPACE", "team-a");
    let result = setup.run_check(command, "vault:secret/openai#api_key");
    assert_matched(&result);
    let namespaces = setup.vault.namespaces();
    assert_eq!(namespaces.len(), 2);
    assert!(namespaces.iter().all(|ns| ns.as_deref() == Some("team-a")));
}

#[test]
fn namespace_option_beats_environment() {
    let setup = setup_with(|b| b.namespace = Some("team-b".to_string()));
    let mut command = setup.keyrun_token();
    command.env("VAULT_NAMESPACE", "team-a");
    let result = setup.run_check(command, "vault:secret/openai?namespace=team-b#api_key");
    assert_matched(&result);
}

#[test]
fn fields_of_one_secret_cost_one_read() {
    let org = format!("org-{}", random_hex(8));
    let setup = setup_with(|b| {
        b.secrets[0].versions[0]
            .fields
            .push(("org_id".to_string(), org.clone()));
    });
    let mut command = setup.keyrun_token();
    command
        .args(["--set", "OPENAI_API_KEY=vault:secret/openai#api_key"])
        .args(["--set", "OPENAI_ORG_ID=vault:secret/openai#org_id", "--"])
        .args([
            "sh",
            "-c",
            &format!(
                "[ \"$OPENAI_API_KEY\" = '{}' ] && [ \"$OPENAI_ORG_ID\" = '{org}' ] && echo both",
                setup.key
            ),
        ]);
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(stdout(&result).trim(), "both");
    assert_eq!(setup.vault.count("secret/data/openai"), 1);
    assert_eq!(setup.vault.count("sys/internal/ui/mounts"), 1);
}

#[test]
fn shared_read_error_names_each_reference() {
    let setup = setup();
    let first = "vault:secret/missing#api_key";
    let second = "vault:secret/missing#org_id";
    let command = setup.keyrun_token();
    let result = run_pair(command, first, second);
    let message = assert_failed(&result);
    let line = assert_pair_failed(&message, first, second);
    assert!(line.contains("404"), "{line}");
    assert_eq!(setup.vault.count("secret/data/missing"), 1);
}

#[test]
fn missing_field_names_its_reference() {
    let setup = setup();
    let first = "vault:secret/openai#api_key";
    let second = "vault:secret/openai#org_id";
    let command = setup.keyrun_token();
    let result = run_pair(command, first, second);
    setup.assert_clean(&result);
    let message = assert_failed(&result);
    assert_failure_names(&message, "SECOND", second, first);
    let line = failure_line(&message, "SECOND");
    assert!(line.contains("no field \"org_id\""), "{line}");
    assert!(!message.contains("FIRST (from"), "{message}");
    assert_eq!(setup.vault.count("secret/data/openai"), 1);
}

#[test]
fn shared_login_error_names_each_reference() {
    let setup = setup();
    let first = "vault:secret/openai#api_key";
    let second = "vault:kv/openai#api_key";
    let command = setup.keyrun();
    let result = run_pair(command, first, second);
    let message = assert_failed(&result);
    let line = assert_pair_failed(&message, first, second);
    assert!(line.contains("no Vault token"), "{line}");
    assert_eq!(setup.vault.targets().len(), 0);
}

#[test]
fn approle_logs_in_reads_and_revokes() {
    let setup = setup();
    let mut command = setup.keyrun();
    command
        .env("VAULT_ROLE_ID", &setup.role_id)
        .env("VAULT_SECRET_ID", &setup.secret_id);
    let result = setup.run_check(command, "vault:secret/openai?auth=approle#api_key");
    assert_matched(&result);
    assert_eq!(setup.vault.count("auth/approle/login"), 1);
    let issued = setup.vault.issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(setup.vault.revoked(), issued);
    assert_eq!(setup.vault.targets().len(), 4);
    setup.assert_clean(&result);
}

#[test]
fn approle_credentials_are_removed_from_child() {
    let setup = setup();
    let mut command = setup.keyrun();
    command
        .env("VAULT_ROLE_ID", &setup.role_id)
        .env("VAULT_SECRET_ID", &setup.secret_id)
        .args(["--from", "vault:secret/openai?auth=approle#api_key", "--"])
        .args([
            "sh",
            "-c",
            "echo role=${VAULT_ROLE_ID:-absent} secret=${VAULT_SECRET_ID:+present}",
        ]);
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(stdout(&result).trim(), "role=absent secret=");
}

#[test]
fn approle_from_files_and_config() {
    let setup = setup();
    let role_file = setup
        .sandbox
        .write("role-id", setup.role_id.as_bytes(), 0o600);
    let secret_file = setup.sandbox.write(
        "secret-id",
        format!("{}\n", setup.secret_id).as_bytes(),
        0o600,
    );
    let config = setup.sandbox.write(
        "keyrun.toml",
        format!(
            "[vault]\nauth = \"approle\"\nrole_id_file = \"{}\"\nsecret_id_file = \"{}\"\n",
            role_file.display(),
            secret_file.display()
        )
        .as_bytes(),
        0o600,
    );
    let mut command = setup.keyrun();
    command.arg("--config").arg(&config);
    let result = setup.run_check(command, "vault:secret/openai#api_key");
    assert_matched(&result);
    assert_eq!(setup.vault.revoked().len(), 1);
}

#[test]
fn approle_bad_secret_id_fails_login() {
    let setup = setup();
    let mut command = setup.keyrun();
    command
        .env("VAULT_ROLE_ID", &setup.role_id)
        .env("VAULT_SECRET_ID", "wrong-secret-id");
    let result = setup.run_check(command, "vault:secret/openai?auth=approle#api_key");
    let message = assert_failed(&result);
    assert!(message.contains("approle login failed"), "{message}");
    assert!(message.contains("POST /v1/auth/approle/login"), "{message}");
    assert!(message.contains("invalid secret id"), "{message}");
    assert!(message.contains(&setup.vault.address()), "{message}");
    assert!(!message.contains("wrong-secret-id"), "{message}");
    assert_eq!(setup.vault.count("secret/"), 0);
}

#[test]
fn approle_mount_is_configurable() {
    let setup = setup();
    let mut command = setup.keyrun();
    command
        .env("VAULT_ROLE_ID", &setup.role_id)
        .env("VAULT_SECRET_ID", &setup.secret_id);
    let result = setup.run_check(
        command,
        "vault:secret/openai?auth=approle&auth_mount=ci-approle#api_key",
    );
    let message = assert_failed(&result);
    assert!(message.contains("auth/ci-approle/login"), "{message}");
    assert!(message.contains("set auth_mount"), "{message}");
}

#[test]
fn jwt_from_github_actions() {
    let setup = setup();
    let request_token = random_hex(16);
    let actions = ActionsTokenServer::start(&request_token, &setup.jwt);
    let mut command = setup.keyrun();
    command
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", actions.request_url())
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &request_token);
    let result = setup.run_check(
        command,
        "vault:secret/openai?auth=jwt&role=ci&jwt_audience=https%3A%2F%2Fvault.example#api_key",
    );
    assert_matched(&result);
    assert_eq!(
        actions.audiences(),
        vec![Some("https://vault.example".to_string())]
    );
    assert_eq!(setup.vault.count("auth/jwt/login"), 1);
    assert_eq!(setup.vault.revoked().len(), 1);
    assert_not_leaked(&result.stderr, &request_token, "stderr");
}

#[test]
fn jwt_from_variable() {
    let setup = setup();
    let mut command = setup.keyrun();
    command.env("VAULT_ID_TOKEN", &setup.jwt);
    command
        .args([
            "--from",
            "vault:secret/openai?auth=jwt&role=ci&jwt_env=VAULT_ID_TOKEN#api_key",
            "--",
        ])
        .args(env_has_command("VAULT_ID_TOKEN"));
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(stdout(&result).trim(), "VAULT_ID_TOKEN=absent");
    assert_eq!(setup.vault.revoked().len(), 1);
}

#[test]
fn jwt_wrong_token_fails_login() {
    let setup = setup();
    let jwt_file = setup.sandbox.write("jwt", b"eyJwrong.eyJwrong.sig", 0o600);
    let config = setup.sandbox.write(
        "keyrun.toml",
        format!(
            "[vault]\nauth = \"jwt\"\nrole = \"ci\"\njwt_file = \"{}\"\n",
            jwt_file.display()
        )
        .as_bytes(),
        0o600,
    );
    let mut command = setup.keyrun();
    command.arg("--config").arg(&config);
    let result = setup.run_check(command, "vault:secret/openai#api_key");
    let message = assert_failed(&result);
    assert!(message.contains("jwt login failed"), "{message}");
    assert!(message.contains("bound_audiences"), "{message}");
}

#[test]
fn jwt_without_token_source_is_an_error() {
    let setup = setup();
    let result = setup.run_check(
        setup.keyrun(),
        "vault:secret/openai?auth=jwt&role=ci#api_key",
    );
    let message = assert_failed(&result);
    assert!(
        message.contains("ACTIONS_ID_TOKEN_REQUEST_URL"),
        "{message}"
    );
    assert!(message.contains("jwt_env"), "{message}");
    assert_eq!(setup.vault.targets().len(), 0);
}

#[test]
fn kubernetes_login_with_token_file() {
    let setup = setup_with(|b| b.kubernetes.1 = "eyJk8s.eyJpod.sig".to_string());
    let token_file = setup.sandbox.write("sa-token", b"eyJk8s.eyJpod.sig", 0o600);
    let mut command = setup.keyrun();
    command.env("VAULT_ROLE_ID", "unused");
    let result = setup.run_check(
        command,
        &format!(
            "vault:secret/openai?auth=kubernetes&role=app&jwt_file={}#api_key",
            token_file.display()
        ),
    );
    assert_matched(&result);
    assert_eq!(setup.vault.count("auth/kubernetes/login"), 1);
    assert_eq!(setup.vault.revoked().len(), 1);
}

#[test]
fn kubernetes_wrong_role_fails_login() {
    let setup = setup();
    let token_file = setup
        .sandbox
        .write("sa-token", b"eyJother.eyJpod.sig", 0o600);
    let result = setup.run_check(
        setup.keyrun(),
        &format!(
            "vault:secret/openai?auth=kubernetes&role=app&jwt_file={}#api_key",
            token_file.display()
        ),
    );
    let message = assert_failed(&result);
    assert!(message.contains("kubernetes login failed"), "{message}");
    assert!(message.contains("bound_service_account_names"), "{message}");
}

#[test]
fn forbidden_names_policy_path() {
    let setup = setup_with(|b| b.denied.push("secret/data/openai".to_string()));
    let result = setup.run_check(setup.keyrun_token(), "vault:secret/openai#api_key");
    let message = assert_failed(&result);
    assert!(message.contains("403"), "{message}");
    assert!(message.contains("path \"secret/data/openai\""), "{message}");
    assert!(message.contains(&setup.vault.address()), "{message}");
    assert!(message.contains("GET /v1/secret/data/openai"), "{message}");
}

#[test]
fn not_found_names_api_path() {
    let setup = setup();
    let result = setup.run_check(setup.keyrun_token(), "vault:secret/missing#api_key");
    let message = assert_failed(&result);
    assert!(message.contains("404"), "{message}");
    assert!(message.contains("secret/data/missing"), "{message}");
}

#[test]
fn invalid_token_is_reported() {
    let setup = setup();
    let mut command = setup.keyrun();
    command.env("VAULT_TOKEN", "hvs.revoked");
    let result = setup.run_check(command, "vault:secret/openai#api_key");
    let message = assert_failed(&result);
    assert!(message.contains("invalid or expired"), "{message}");
    assert!(message.contains("vault login"), "{message}");
}

#[test]
fn unknown_mount_says_to_set_kv() {
    let setup = setup();
    let result = setup.run_check(setup.keyrun_token(), "vault:other/openai#api_key");
    let message = assert_failed(&result);
    assert!(message.contains("cannot tell the KV version"), "{message}");
    assert!(message.contains("kv = 1 or kv = 2"), "{message}");
}

#[test]
fn sealed_vault_is_reported() {
    let setup = setup_with(|b| b.mode = Mode::Sealed);
    let result = setup.run_check(setup.keyrun_token(), "vault:secret/openai?kv=2#api_key");
    let message = assert_failed(&result);
    assert!(message.contains("sealed"), "{message}");
    assert!(message.contains("Vault is sealed"), "{message}");
    // 503 is retried before it is reported.
    assert_eq!(setup.vault.count("secret/data/openai"), 4);
}

#[test]
fn throttling_is_retried_then_reported() {
    let setup = setup_with(|b| b.mode = Mode::Throttled);
    let result = setup.run_check(setup.keyrun_token(), "vault:secret/openai?kv=2#api_key");
    let message = assert_failed(&result);
    assert!(message.contains("429"), "{message}");
    assert!(message.contains("throttled 4 requests"), "{message}");
    assert_eq!(setup.vault.count("secret/data/openai"), 4);
}

#[test]
fn silent_server_times_out() {
    let setup = setup_with(|b| b.mode = Mode::Silent);
    let started = Instant::now();
    let result = setup.run_check(
        setup.keyrun_token(),
        "vault:secret/openai?kv=2&timeout=1s#api_key",
    );
    let message = assert_failed(&result);
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(message.contains("did not answer within 1s"), "{message}");
    assert!(message.contains("[vault]"), "{message}");
}

#[test]
fn refused_connection_is_reported() {
    let setup = setup();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut command = setup.keyrun_token();
    command.env("VAULT_ADDR", format!("https://127.0.0.1:{port}"));
    let result = setup.run_check(command, "vault:secret/openai#api_key");
    let message = assert_failed(&result);
    assert!(message.contains("refused"), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
}

#[test]
fn unknown_ca_names_vault_cacert() {
    let setup = setup();
    let mut command = setup.keyrun_token();
    command.env_remove("VAULT_CACERT");
    let result = setup.run_check(command, "vault:secret/openai#api_key");
    let message = assert_failed(&result);
    assert!(message.contains("certificate"), "{message}");
    assert!(message.contains("VAULT_CACERT"), "{message}");
}

#[test]
fn capath_folder_is_trusted() {
    let setup = setup();
    let folder = setup.sandbox.path().join("cas");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(&setup.ca, folder.join("ca.pem")).unwrap();
    let mut command = setup.keyrun_token();
    command
        .env_remove("VAULT_CACERT")
        .env("VAULT_CAPATH", &folder);
    let result = setup.run_check(command, "vault:secret/openai#api_key");
    assert_matched(&result);
}

#[test]
fn skip_verify_works_and_warns() {
    let setup = setup();
    let mut command = setup.keyrun_token();
    command
        .env_remove("VAULT_CACERT")
        .env("VAULT_SKIP_VERIFY", "true");
    let result = setup.run_check(command, "vault:secret/openai#api_key");
    assert_matched(&result);
    assert!(
        stderr(&result).contains("VAULT_SKIP_VERIFY"),
        "{}",
        stderr(&result)
    );
}

#[test]
fn client_cert_needs_its_key() {
    let setup = setup();
    let mut command = setup.keyrun_token();
    command.env("VAULT_CLIENT_CERT", &setup.ca);
    let result = setup.run_check(command, "vault:secret/openai#api_key");
    let message = assert_failed(&result);
    assert!(message.contains("VAULT_CLIENT_KEY"), "{message}");
}

#[test]
fn client_cert_is_presented() {
    let sandbox = Sandbox::new();
    let pki = Pki::generate();
    let ca = pki.write_ca(sandbox.path());
    let cert = sandbox.write("client.pem", pki.client_cert_pem.as_bytes(), 0o600);
    let client_key = sandbox.write("client-key.pem", pki.client_key_pem.as_bytes(), 0o600);
    let key = common::random_key();
    let behavior = behavior(&key);
    let token = behavior.token.clone();
    let vault = FakeVault::start_mutual(&pki, behavior);
    let command = |with_cert: bool| {
        let mut command = sandbox.keyrun();
        command
            .env("VAULT_ADDR", vault.address())
            .env("VAULT_CACERT", &ca)
            .env("VAULT_TOKEN", &token);
        if with_cert {
            command
                .env("VAULT_CLIENT_CERT", &cert)
                .env("VAULT_CLIENT_KEY", &client_key);
        }
        command
            .args(["--from", "vault:secret/openai#api_key", "--"])
            .args(check_var_command("OPENAI_API_KEY", &key));
        command
    };

    let result = output(&mut command(true));
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(stdout(&result).trim(), "OPENAI_API_KEY=match");

    let result = output(&mut command(false));
    assert_eq!(result.status.code(), Some(125), "{}", stderr(&result));
}

#[test]
fn plain_http_is_loopback_only() {
    let setup = setup();
    let mut command = setup.keyrun_token();
    command.env("VAULT_ADDR", "http://vault.invalid:8200");
    let result = setup.run_check(command, "vault:secret/openai#api_key");
    let message = assert_failed(&result);
    assert!(message.contains("allow_http"), "{message}");
}

#[test]
fn malformed_reference_is_rejected() {
    let setup = setup();
    for reference in ["vault:secret", "vault:secret/../sys", "vault:secret/x?kv=3"] {
        let result = setup.run_check(setup.keyrun_token(), reference);
        assert_failed(&result);
    }
    assert_eq!(setup.vault.targets().len(), 0);
}

#[cfg(target_os = "linux")]
#[test]
fn memory_clean_with_vault_source() {
    let setup = setup();
    let mut command = setup.keyrun_token();
    command.args(["--from", "vault:secret/openai#api_key"]);
    common::memory::assert_value_absent(command, &setup.key);
}

/// The official `openai` Python client lists models with the key from
/// Vault. Needs `KEYRUN_TEST_PYTHON` (set by tests/run.sh).
#[test]
fn openai_client_lists_models() {
    let Some(python) = openai::python() else {
        return;
    };
    let setup = setup();
    let mut command = setup.keyrun_token();
    command.args(["--from", "vault:secret/openai#api_key"]);
    let result = openai::assert_lists_models(command, python, &setup.key);
    setup.assert_clean(&result);
}

/// Serves the fake Vault over TLS until killed, for benches/vault.sh. It
/// writes the address, CA, token and AppRole credentials as shell
/// assignments to `$KEYRUN_BENCH_ENV`.
#[test]
#[ignore = "serves until killed; started by benches/vault.sh"]
fn serve_for_benchmark() {
    let Some(env_file) = std::env::var_os("KEYRUN_BENCH_ENV") else {
        panic!("set KEYRUN_BENCH_ENV to the file that receives the server's settings");
    };
    let setup = setup();
    let settings = format!(
        "VAULT_ADDR='{}'\nVAULT_CACERT='{}'\nVAULT_TOKEN='{}'\nVAULT_ROLE_ID='{}'\n\
         VAULT_SECRET_ID='{}'\n",
        setup.vault.address(),
        setup.ca.display(),
        setup.token,
        setup.role_id,
        setup.secret_id
    );
    let partial = PathBuf::from(&env_file).with_extension("partial");
    std::fs::write(&partial, settings).unwrap();
    std::fs::rename(&partial, &env_file).unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
