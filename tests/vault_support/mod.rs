//! A loopback stand-in for Vault's HTTP API, since no Vault or OpenBao
//! binary can be installed here. Its requests and responses follow the
//! examples of Vault's published API documentation
//! (developer.hashicorp.com/vault/api-docs, which openbao.org/api-docs
//! repeats):
//!
//! - `system/internal-ui-mounts`: `GET /v1/sys/internal/ui/mounts/:path`,
//!   whose `data` contains the mount's `path`, `type` and `options.version`;
//! - `secret/kv/kv-v1`: `GET /v1/:mount/:path`, the fields in `data`;
//! - `secret/kv/kv-v2`: `GET /v1/:mount/data/:path?version=N`, with
//!   `data.data` and `data.metadata` (`created_time`, `deletion_time`,
//!   `destroyed`, `version`). A deleted or destroyed version comes back as
//!   a 404 whose body still holds the metadata and `"data": null`, which is
//!   how the Go API client (`api/logical.go`) and `vault kv get` read it;
//! - `auth/approle`, `auth/jwt` and `auth/kubernetes`: `POST
//!   /v1/auth/:mount/login` with `role_id`/`secret_id` or `role`/`jwt`, and
//!   the login response's `auth.client_token`;
//! - `auth/token`: `POST /v1/auth/token/revoke-self`, answered with 204;
//! - the API overview: errors as `{"errors": [...]}` (a 404 read answers
//!   `{"errors": []}`), `X-Vault-Token`, `X-Vault-Namespace`, 429 for rate
//!   limits and 503 for a sealed Vault; and `docs/concepts/tokens`: an
//!   invalid token gets a 403 with both "permission denied" and "invalid
//!   token".
//!
//! [`ActionsTokenServer`] stands in for GitHub Actions' ID token endpoint
//! (`GET ACTIONS_ID_TOKEN_REQUEST_URL&audience=...` with `Authorization:
//! bearer ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answering `{"count", "value"}`).

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

pub use crate::common::http::{random_hex, LoopbackServer, Pki, RawRequest, Response};

/// One version of a stored secret.
#[derive(Clone, Debug)]
pub struct StoredVersion {
    pub fields: Vec<(String, String)>,
    pub created_time: String,
    pub deletion_time: String,
    pub destroyed: bool,
}

impl StoredVersion {
    pub fn new(fields: &[(&str, &str)]) -> StoredVersion {
        StoredVersion {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created_time: "2018-03-22T02:24:06.945319214Z".to_string(),
            deletion_time: String::new(),
            destroyed: false,
        }
    }
}

/// A secret at a logical path such as `secret/openai` (mount included),
/// with its versions from 1.
#[derive(Clone, Debug)]
pub struct StoredSecret {
    pub path: String,
    pub versions: Vec<StoredVersion>,
}

/// How the server responds to every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Sealed,
    Throttled,
    Silent,
}

/// What the fake Vault stores and accepts.
#[derive(Clone, Debug)]
pub struct Behavior {
    /// `(mount with trailing slash, KV version)`.
    pub mounts: Vec<(String, u8)>,
    pub secrets: Vec<StoredSecret>,
    /// A token that the operator issued (VAULT_TOKEN).
    pub token: String,
    /// API paths (after `/v1/`) that the tokens' policies do not cover.
    pub denied: Vec<String>,
    /// The namespace every request must name, when set.
    pub namespace: Option<String>,
    pub role_id: String,
    pub secret_id: String,
    /// `(role, jwt)` that `auth/jwt/login` accepts.
    pub jwt: (String, String),
    /// `(role, jwt)` that `auth/kubernetes/login` accepts.
    pub kubernetes: (String, String),
    pub mode: Mode,
}

/// The state that requests change: tokens issued by login and revoked.
#[derive(Default)]
struct State {
    issued: Vec<String>,
    revoked: Vec<String>,
}

pub struct FakeVault {
    pub server: LoopbackServer,
    state: Arc<Mutex<State>>,
}

impl FakeVault {
    pub fn start(pki: &Pki, behavior: Behavior) -> FakeVault {
        FakeVault::start_with(pki.acceptor(), behavior)
    }

    /// Starts a fake that accepts only clients with a certificate that the
    /// test CA signed, as Vault does with `tls_require_and_verify_client_cert`.
    pub fn start_mutual(pki: &Pki, behavior: Behavior) -> FakeVault {
        FakeVault::start_with(pki.mutual_acceptor(), behavior)
    }

    fn start_with(acceptor: tokio_rustls::TlsAcceptor, behavior: Behavior) -> FakeVault {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let server = LoopbackServer::start_with_acceptor(Some(acceptor), move |request| {
            handle(&behavior, &shared, request)
        });
        FakeVault { server, state }
    }

    pub fn address(&self) -> String {
        self.server.url(true)
    }

    /// Counts the requests whose path (after `/v1/`) starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.server.count(&format!("/v1/{prefix}"))
    }

    /// The paths of the requests so far, query strings included.
    pub fn targets(&self) -> Vec<String> {
        self.server
            .with_log(|log| log.iter().map(|r| r.target.clone()).collect())
    }

    /// The `X-Vault-Namespace` header of every request so far.
    pub fn namespaces(&self) -> Vec<Option<String>> {
        self.server.with_log(|log| {
            log.iter()
                .map(|r| r.headers.get("x-vault-namespace").cloned())
                .collect()
        })
    }

    pub fn issued(&self) -> Vec<String> {
        self.state.lock().unwrap().issued.clone()
    }

    pub fn revoked(&self) -> Vec<String> {
        self.state.lock().unwrap().revoked.clone()
    }
}

fn errors(status: u16, messages: &[&str]) -> Option<Response> {
    Some(Response::json(
        status,
        serde_json::json!({ "errors": messages }),
    ))
}

/// The response envelope Vault wraps every answer in.
fn envelope(data: serde_json::Value, auth: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "request_id": format!("{}-{}-{}-{}-{}", random_hex(4), random_hex(2), random_hex(2), random_hex(2), random_hex(6)),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": auth,
    })
}

fn handle(behavior: &Behavior, state: &Mutex<State>, request: &RawRequest) -> Option<Response> {
    match behavior.mode {
        Mode::Silent => return None,
        Mode::Sealed => return errors(503, &["Vault is sealed"]),
        Mode::Throttled => {
            return Some(
                Response::json(
                    429,
                    serde_json::json!({"errors": ["request path \"secret/data/openai\": rate limit quota exceeded"]}),
                )
                .with_header("Retry-After", "0"),
            )
        }
        Mode::Normal => {}
    }
    let Some(path) = request.path().strip_prefix("/v1/") else {
        return errors(404, &[]);
    };
    let path = percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned();
    if request
        .headers
        .get("x-vault-namespace")
        .map(|s| s.trim_matches('/'))
        != behavior.namespace.as_deref()
    {
        // Outside the namespace, neither the mounts nor the auth methods
        // exist.
        return errors(404, &[&format!("no handler for route \"{path}\"")]);
    }

    if request.method == "POST" {
        if let Some(mount) = path
            .strip_prefix("auth/")
            .and_then(|rest| rest.strip_suffix("/login"))
        {
            return login(behavior, state, mount, request);
        }
        if path == "auth/token/revoke-self" {
            let token = request
                .headers
                .get("x-vault-token")
                .cloned()
                .unwrap_or_default();
            let mut state = state.lock().unwrap();
            if !state.issued.contains(&token) && token != behavior.token {
                return errors(403, &["permission denied", "invalid token"]);
            }
            state.revoked.push(token);
            return Some(Response {
                status: 204,
                headers: Vec::new(),
                body: String::new(),
            });
        }
        return errors(405, &["unsupported operation"]);
    }

    // Every read needs a valid token.
    let token = request
        .headers
        .get("x-vault-token")
        .cloned()
        .unwrap_or_default();
    {
        let state = state.lock().unwrap();
        let valid = token == behavior.token
            || (state.issued.contains(&token) && !state.revoked.contains(&token));
        if !valid {
            return errors(403, &["permission denied", "invalid token"]);
        }
    }

    if let Some(rest) = path.strip_prefix("sys/internal/ui/mounts/") {
        let with_slash = format!("{rest}/");
        return match behavior
            .mounts
            .iter()
            .find(|(mount, _)| with_slash.starts_with(mount.as_str()))
        {
            None => errors(403, &["permission denied"]),
            Some((mount, version)) => Some(Response::json(
                200,
                envelope(
                    serde_json::json!({
                        "accessor": format!("kv_{}", random_hex(4)),
                        "config": {"default_lease_ttl": 0, "force_no_cache": false, "max_lease_ttl": 0},
                        "description": "key/value secret storage",
                        "external_entropy_access": false,
                        "local": false,
                        "options": {"version": version.to_string()},
                        "path": mount,
                        "seal_wrap": false,
                        "type": "kv",
                        "uuid": format!("{}-{}", random_hex(4), random_hex(6)),
                    }),
                    serde_json::Value::Null,
                ),
            )),
        };
    }

    if behavior.denied.contains(&path) {
        return errors(403, &["1 error occurred:\n\t* permission denied\n\n"]);
    }
    read(behavior, &path, request)
}

fn read(behavior: &Behavior, path: &str, request: &RawRequest) -> Option<Response> {
    let Some((mount, kv)) = behavior
        .mounts
        .iter()
        .find(|(mount, _)| path.starts_with(mount.as_str()))
    else {
        return errors(404, &[&format!("no handler for route \"{path}\"")]);
    };
    let rest = &path[mount.len()..];
    if *kv == 1 {
        let logical = format!("{mount}{rest}");
        return match behavior.secrets.iter().find(|s| s.path == logical) {
            None => errors(404, &[]),
            Some(secret) => {
                let latest = secret.versions.last().unwrap();
                let data: serde_json::Map<String, serde_json::Value> = latest
                    .fields
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect();
                Some(Response::json(
                    200,
                    envelope(serde_json::Value::Object(data), serde_json::Value::Null),
                ))
            }
        };
    }

    let Some(inner) = rest.strip_prefix("data/") else {
        return errors(404, &[]);
    };
    let logical = format!("{mount}{inner}");
    let Some(secret) = behavior.secrets.iter().find(|s| s.path == logical) else {
        return errors(404, &[]);
    };
    let number: usize = match request.query().get("version") {
        Some(text) => text.parse().unwrap_or(0),
        None => secret.versions.len(),
    };
    let Some(version) = number.checked_sub(1).and_then(|i| secret.versions.get(i)) else {
        return errors(404, &[]);
    };
    let metadata = serde_json::json!({
        "created_time": version.created_time,
        "custom_metadata": null,
        "deletion_time": version.deletion_time,
        "destroyed": version.destroyed,
        "version": number,
    });
    if version.destroyed || !version.deletion_time.is_empty() {
        return Some(Response::json(
            404,
            envelope(
                serde_json::json!({"data": null, "metadata": metadata}),
                serde_json::Value::Null,
            ),
        ));
    }
    let data: serde_json::Map<String, serde_json::Value> = version
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    Some(Response::json(
        200,
        envelope(
            serde_json::json!({"data": data, "metadata": metadata}),
            serde_json::Value::Null,
        ),
    ))
}

fn login(
    behavior: &Behavior,
    state: &Mutex<State>,
    mount: &str,
    request: &RawRequest,
) -> Option<Response> {
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
    let field = |name: &str| {
        body.get(name)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let accepted = match mount {
        "approle" => {
            if field("role_id") != behavior.role_id {
                return errors(400, &["invalid role ID"]);
            }
            if field("secret_id") != behavior.secret_id {
                return errors(400, &["invalid secret id"]);
            }
            "approle"
        }
        "jwt" => {
            if field("role") != behavior.jwt.0 {
                return errors(
                    400,
                    &[&format!("role \"{}\" could not be found", field("role"))],
                );
            }
            if field("jwt") != behavior.jwt.1 {
                return errors(
                    400,
                    &["error validating token: invalid audience (aud) claim"],
                );
            }
            "jwt"
        }
        "kubernetes" => {
            if field("role") != behavior.kubernetes.0 || field("jwt") != behavior.kubernetes.1 {
                return errors(403, &["permission denied"]);
            }
            "kubernetes"
        }
        _ => {
            return errors(
                400,
                &[&format!("no handler for route \"auth/{mount}/login\"")],
            )
        }
    };
    let token = format!("hvs.{}", random_hex(12));
    state.lock().unwrap().issued.push(token.clone());
    Some(Response::json(
        200,
        envelope(
            serde_json::Value::Null,
            serde_json::json!({
                "renewable": true,
                "lease_duration": 1200,
                "metadata": {"role_name": accepted},
                "token_policies": ["default"],
                "accessor": random_hex(12),
                "client_token": token,
            }),
        ),
    ))
}

/// A stand-in for GitHub Actions' ID token endpoint over plain HTTP on
/// loopback.
pub struct ActionsTokenServer {
    pub server: LoopbackServer,
}

impl ActionsTokenServer {
    /// Serves `jwt` for `Authorization: bearer <request_token>` and records
    /// the audience of each request.
    pub fn start(request_token: &str, jwt: &str) -> ActionsTokenServer {
        let expected = format!("bearer {request_token}");
        let jwt = jwt.to_string();
        let server = LoopbackServer::start(None, move |request| {
            if request.headers.get("authorization") != Some(&expected) {
                return Some(Response::json(
                    401,
                    serde_json::json!({"message": "Unauthorized"}),
                ));
            }
            Some(Response::json(
                200,
                serde_json::json!({"count": 1, "value": jwt}),
            ))
        });
        ActionsTokenServer { server }
    }

    /// The URL as the runner sets it, with its own query string.
    pub fn request_url(&self) -> String {
        format!("{}/_apis/token?api-version=2.0", self.server.url(false))
    }

    /// The audience of each request so far.
    pub fn audiences(&self) -> Vec<Option<String>> {
        self.server.with_log(|log| {
            log.iter()
                .map(|r| r.query().get("audience").cloned())
                .collect()
        })
    }
}
