//! Loopback stand-ins for the Azure services that no emulator here
//! provides, built from the request and response examples of the
//! published APIs:
//!
//! - the identity platform's `POST /{tenant}/oauth2/v2.0/token` for the
//!   client credentials grant with a client secret or a federated assertion,
//!   and its error body (`error`, `error_description`, `error_codes`);
//! - the App Service managed identity endpoint (`GET
//!   IDENTITY_ENDPOINT?resource=...&api-version=2019-08-01` with
//!   `X-IDENTITY-HEADER`);
//! - Key Vault's `GET /secrets/{name}/{version}?api-version=...` with its
//!   secret bundle and its `{"error": {"code", "message", "innererror"}}`
//!   bodies.
//!
//! The HTTPS listener uses a certificate signed by a CA that the test
//! generates, so keyrun trusts it only through `SSL_CERT_FILE`. A plain
//! HTTP listener serves the managed identity endpoint, as App Service does
//! on the host. Every listener binds 127.0.0.1.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

pub use crate::common::http::{parse_form, random_hex, Pki};
use crate::common::http::{read_request, write_response, RawRequest, Response};

/// One secret version the fake vault stores.
#[derive(Clone, Debug)]
pub struct StoredSecret {
    pub name: String,
    pub version: String,
    pub value: String,
    pub enabled: bool,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub updated: i64,
}

impl StoredSecret {
    pub fn new(name: &str, value: &str) -> StoredSecret {
        StoredSecret {
            name: name.to_string(),
            version: random_hex(16),
            value: value.to_string(),
            enabled: true,
            nbf: None,
            exp: None,
            updated: 1_493_938_410,
        }
    }
}

/// How the fake vault responds to secret reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VaultMode {
    Normal,
    /// 401 for every token, as for a token of another tenant.
    RejectToken,
    /// 403 as an RBAC vault returns it for an identity without a role.
    Forbidden,
    /// 403 with the inner code for a disabled secret.
    DisabledByCode,
    /// 429 with this `Retry-After` for every read.
    Throttle {
        retry_after: u64,
    },
    /// This status for the first `times` reads, then normal.
    FailFirst {
        times: usize,
        status: u16,
    },
    /// Reads the request and never responds.
    Silent,
}

/// The credentials, token and secrets the fake services accept and return.
pub struct Behavior {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    pub federated_assertion: String,
    pub identity_header: String,
    /// The access token the token endpoints issue and the vault accepts.
    pub access_token: String,
    pub secrets: Vec<StoredSecret>,
    pub vault_mode: VaultMode,
}

/// One request a fake service received.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// The path with its query string.
    pub target: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Logged {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }

    pub fn query(&self) -> BTreeMap<String, String> {
        match self.target.split_once('?') {
            Some((_, query)) => parse_form(query),
            None => BTreeMap::new(),
        }
    }
}

struct State {
    behavior: Behavior,
    log: Vec<Logged>,
    vault_reads: usize,
}

/// The fake identity platform, managed identity endpoint and Key Vault.
pub struct FakeAzure {
    pub tls_port: u16,
    pub http_port: u16,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeAzure {
    pub fn start(pki: &Pki, behavior: Behavior) -> FakeAzure {
        let state = Arc::new(Mutex::new(State {
            behavior,
            log: Vec::new(),
            vault_reads: 0,
        }));
        let acceptor = pki.acceptor();
        let (ports_tx, ports_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_state = state.clone();

        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
                ports_tx
                    .send((
                        tls.local_addr().unwrap().port(),
                        plain.local_addr().unwrap().port(),
                    ))
                    .unwrap();
                let tls_state = thread_state.clone();
                let tls_loop = async move {
                    loop {
                        let Ok((stream, _)) = tls.accept().await else {
                            continue;
                        };
                        // Without TCP_NODELAY a response written in parts
                        // waits for the client's delayed ACK (about 40 ms).
                        let _ = stream.set_nodelay(true);
                        let acceptor = acceptor.clone();
                        let state = tls_state.clone();
                        tokio::task::spawn_local(async move {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_connection(stream, state).await;
                            }
                        });
                    }
                };
                let plain_loop = async move {
                    loop {
                        let Ok((stream, _)) = plain.accept().await else {
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let state = thread_state.clone();
                        tokio::task::spawn_local(serve_connection(stream, state));
                    }
                };
                let local = tokio::task::LocalSet::new();
                local
                    .run_until(async move {
                        tokio::select! {
                            _ = tls_loop => {}
                            _ = plain_loop => {}
                            _ = shutdown_rx => {}
                        }
                    })
                    .await;
            });
        });

        let (tls_port, http_port) = ports_rx.recv().unwrap();
        FakeAzure {
            tls_port,
            http_port,
            state,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:PORT`, for `AZURE_AUTHORITY_HOST`.
    pub fn authority_host(&self) -> String {
        format!("https://127.0.0.1:{}", self.tls_port)
    }

    /// Returns the vault part of a reference: `127.0.0.1:PORT`.
    pub fn vault(&self) -> String {
        format!("127.0.0.1:{}", self.tls_port)
    }

    /// Returns the App Service managed identity endpoint, over plain HTTP.
    pub fn identity_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/msi/token", self.http_port)
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Returns the requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|r| r.path().starts_with(prefix))
            .collect()
    }
}

impl Drop for FakeAzure {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    state: Arc<Mutex<State>>,
) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let response = {
        let mut state = state.lock().unwrap();
        state.log.push(Logged {
            method: request.method.clone(),
            target: request.target.clone(),
            headers: request.headers.clone(),
            body: String::from_utf8_lossy(&request.body).into_owned(),
        });
        route(&mut state, &request)
    };
    match response {
        Some(response) => write_response(&mut stream, response).await,
        // Silent: keep the connection open without an answer until the
        // client gives up.
        None => tokio::time::sleep(Duration::from_secs(60)).await,
    }
}

fn route(state: &mut State, request: &RawRequest) -> Option<Response> {
    let path = request.target.split('?').next().unwrap_or("");
    if request.method == "POST" && path.ends_with("/oauth2/v2.0/token") {
        return Some(token_endpoint(&state.behavior, request, path));
    }
    if request.method == "GET" && path == "/msi/token" {
        return Some(managed_identity(&state.behavior, request));
    }
    if request.method == "GET" && path.starts_with("/secrets/") {
        return get_secret(state, request, path);
    }
    Some(Response::json(
        404,
        serde_json::json!({"error": {"code": "NotFound", "message": "no such route"}}),
    ))
}

/// The identity platform's error body.
fn token_error(status: u16, error: &str, code: u32, description: &str) -> Response {
    Response::json(
        status,
        serde_json::json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}\r\nTrace ID: 255d1aef-8c98-452f-ac51-23d051240864\r\nCorrelation ID: fb3d2015-bc17-4bb9-bb85-30c5cf1aaaa7\r\nTimestamp: 2016-01-09 02:02:12Z"),
            "error_codes": [code],
            "timestamp": "2016-01-09 02:02:12Z",
            "trace_id": "255d1aef-8c98-452f-ac51-23d051240864",
            "correlation_id": "fb3d2015-bc17-4bb9-bb85-30c5cf1aaaa7",
        }),
    )
}

fn token_endpoint(behavior: &Behavior, request: &RawRequest, path: &str) -> Response {
    let tenant = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if tenant != behavior.tenant {
        return token_error(
            400,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    let form = parse_form(&String::from_utf8_lossy(&request.body));
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return token_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if form.get("scope").map(String::as_str) != Some("https://vault.azure.net/.default") {
        return token_error(
            400,
            "invalid_scope",
            70011,
            "The provided value for the input parameter 'scope' is not valid.",
        );
    }
    if form.get("client_id") != Some(&behavior.client_id) {
        return token_error(
            400,
            "unauthorized_client",
            700016,
            "Application was not found in the directory.",
        );
    }
    let by_secret = form.get("client_secret") == Some(&behavior.client_secret);
    let by_assertion = form.get("client_assertion_type").map(String::as_str)
        == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        && form.get("client_assertion") == Some(&behavior.federated_assertion);
    if !(by_secret || by_assertion) {
        return token_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        );
    }
    Response::json(
        200,
        serde_json::json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": behavior.access_token,
        }),
    )
}

fn managed_identity(behavior: &Behavior, request: &RawRequest) -> Response {
    let query = match request.target.split_once('?') {
        Some((_, query)) => parse_form(query),
        None => BTreeMap::new(),
    };
    let header_ok = request.headers.get("x-identity-header") == Some(&behavior.identity_header);
    let version_ok = query.get("api-version").map(String::as_str) == Some("2019-08-01");
    let resource_ok = query.get("resource").map(String::as_str) == Some("https://vault.azure.net");
    if !(header_ok && version_ok && resource_ok) {
        return Response::json(
            400,
            serde_json::json!({
                "statusCode": 400,
                "message": "Invalid request.",
                "correlationId": "7f5b4e3a-2d1c-4b0a-9e8f-6a5b4c3d2e1f",
            }),
        );
    }
    Response::json(
        200,
        serde_json::json!({
            "access_token": behavior.access_token,
            "expires_on": "1586984735",
            "resource": "https://vault.azure.net",
            "token_type": "Bearer",
            "client_id": "5E29463D-71DA-4FE0-8E69-999B57DB23B0",
        }),
    )
}

fn vault_error(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

fn get_secret(state: &mut State, request: &RawRequest, path: &str) -> Option<Response> {
    let behavior = &state.behavior;
    let host = request.headers.get("host").cloned().unwrap_or_default();
    let challenge = format!(
        "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"https://vault.azure.net\"",
        behavior.tenant
    );
    let query = parse_form(request.target.split_once('?').map(|(_, q)| q).unwrap_or(""));
    if !query.contains_key("api-version") {
        return Some(vault_error(
            400,
            "BadParameter",
            "The api-version query parameter is missing.",
        ));
    }
    let expected = format!("Bearer {}", behavior.access_token);
    match request.headers.get("authorization") {
        None => {
            return Some(
                vault_error(
                    401,
                    "Unauthorized",
                    "AKV10000: Request is missing a Bearer or PoP token.",
                )
                .with_header("WWW-Authenticate", &challenge),
            )
        }
        Some(value) if *value != expected || behavior.vault_mode == VaultMode::RejectToken => {
            return Some(
                vault_error(
                    401,
                    "Unauthorized",
                    "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/.",
                )
                .with_header("WWW-Authenticate", &challenge),
            )
        }
        Some(_) => {}
    }

    state.vault_reads += 1;
    match &behavior.vault_mode {
        VaultMode::Silent => return None,
        VaultMode::Forbidden => {
            return Some(Response::json(
                403,
                serde_json::json!({"error": {
                    "code": "Forbidden",
                    "message": "Caller is not authorized to perform action on resource.\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\nCaller: appid=8f3b2c1d-aaaa-bbbb-cccc-1234567890ab\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'",
                    "innererror": {"code": "ForbiddenByRbac"},
                }}),
            ))
        }
        VaultMode::DisabledByCode => {
            return Some(Response::json(
                403,
                serde_json::json!({"error": {
                    "code": "Forbidden",
                    "message": "Operation get is not allowed on a disabled secret.",
                    "innererror": {"code": "SecretDisabled"},
                }}),
            ))
        }
        VaultMode::Throttle { retry_after } => {
            return Some(
                vault_error(
                    429,
                    "Throttled",
                    "Request was not processed because too many requests were received.",
                )
                .with_header("Retry-After", &retry_after.to_string()),
            )
        }
        VaultMode::FailFirst { times, status } if state.vault_reads <= *times => {
            return Some(vault_error(
                *status,
                "ServiceUnavailable",
                "The service is temporarily unavailable.",
            ))
        }
        _ => {}
    }

    let parts: Vec<&str> = path
        .trim_start_matches("/secrets/")
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let (name, version) = match parts.as_slice() {
        [name] => (*name, None),
        [name, version] => (*name, Some(*version)),
        _ => return Some(vault_error(400, "BadParameter", "Invalid secret path.")),
    };
    let found = behavior
        .secrets
        .iter()
        .rfind(|s| s.name == name && version.is_none_or(|v| v == s.version));
    let Some(secret) = found else {
        return Some(vault_error(
            404,
            "SecretNotFound",
            &format!("A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"),
        ));
    };
    let mut attributes = serde_json::json!({
        "enabled": secret.enabled,
        "created": secret.updated,
        "updated": secret.updated,
        "recoveryLevel": "Recoverable+Purgeable",
    });
    if let Some(nbf) = secret.nbf {
        attributes["nbf"] = nbf.into();
    }
    if let Some(exp) = secret.exp {
        attributes["exp"] = exp.into();
    }
    Some(Response::json(
        200,
        serde_json::json!({
            "value": secret.value,
            "id": format!("https://{host}/secrets/{}/{}", secret.name, secret.version),
            "attributes": attributes,
        }),
    ))
}
