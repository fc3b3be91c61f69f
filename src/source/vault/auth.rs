//! Vault tokens: `token` (`VAULT_TOKEN`, else the token helper file
//! `~/.vault-token`), and logins at `auth/<mount>/login` for `approle`,
//! `jwt` (a CI OIDC token, from GitHub Actions' ID token endpoint or from a
//! variable or file) and `kubernetes` (the service account token). A token
//! obtained by login is revoked with `auth/token/revoke-self` after the
//! reads.

use std::path::{Path, PathBuf};

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::client::{common_error, Body, Call, Client, Peer, VaultErrors};
use super::{AuthMethod, ErrorKind, Options, SourceError};
use crate::secret::Secret;

/// The service account token file that Kubernetes mounts into a pod.
const KUBERNETES_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The largest credential file keyrun reads; a JWT is a few KB.
const MAX_CREDENTIAL_BYTES: u64 = 64 * 1024;

/// A Vault token and where it came from.
pub struct Token {
    pub value: Secret,
    /// Whether keyrun logged in for it, so it must be revoked.
    pub from_login: bool,
    /// The variables of keyrun's environment that held credentials.
    pub credential_env: Vec<String>,
}

#[derive(Serialize)]
struct AppRoleLogin<'a> {
    role_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_id: Option<&'a str>,
}

#[derive(Serialize)]
struct JwtLogin<'a> {
    role: &'a str,
    jwt: &'a str,
}

#[derive(Deserialize)]
struct LoginResponse {
    auth: Option<LoginAuth>,
}

#[derive(Deserialize)]
struct LoginAuth {
    client_token: Option<String>,
}

#[derive(Deserialize)]
struct ActionsToken {
    value: Option<String>,
}

/// Obtains the token of one session by its auth method.
pub async fn obtain(client: &Client, peer: &Peer, options: &Options) -> Result<Token, SourceError> {
    let auth = &options.auth;
    let mut credential_env = Vec::new();
    let fail = |message: String| SourceError::new(ErrorKind::Invalid, message);

    let body: Body = match auth.method {
        AuthMethod::Token => return token_from_environment(),
        AuthMethod::AppRole => {
            let role_id = match (&auth.role_id, &auth.role_id_file) {
                (Some(role_id), _) => Secret::new(role_id.clone().into_bytes()),
                (None, Some(file)) => read_credential(Path::new(file), "role_id_file")?,
                (None, None) => {
                    let Some(role_id) = env_secret("VAULT_ROLE_ID") else {
                        return Err(fail(
                            "auth = \"approle\" needs a role ID; set role_id or role_id_file \
                             under [vault], or VAULT_ROLE_ID"
                                .to_string(),
                        ));
                    };
                    credential_env.push("VAULT_ROLE_ID".to_string());
                    role_id
                }
            };
            let secret_id = match &auth.secret_id_file {
                Some(file) => Some(read_credential(Path::new(file), "secret_id_file")?),
                None => {
                    let secret_id = env_secret("VAULT_SECRET_ID");
                    if secret_id.is_some() {
                        credential_env.push("VAULT_SECRET_ID".to_string());
                    }
                    secret_id
                }
            };
            let login = AppRoleLogin {
                role_id: text(&role_id, "the role ID")?,
                secret_id: match &secret_id {
                    Some(secret_id) => Some(text(secret_id, "the secret ID")?),
                    None => None,
                },
            };
            to_body(&login)
        }
        AuthMethod::Jwt => {
            let jwt = jwt_for_ci(client, options, &mut credential_env).await?;
            let login = JwtLogin {
                role: auth.role.as_deref().unwrap_or_default(),
                jwt: text(&jwt, "the JWT")?,
            };
            to_body(&login)
        }
        AuthMethod::Kubernetes => {
            let file = auth.jwt_file.as_deref().unwrap_or(KUBERNETES_TOKEN_FILE);
            let jwt = read_credential(Path::new(file), "the service account token file")?;
            let login = JwtLogin {
                role: auth.role.as_deref().unwrap_or_default(),
                jwt: text(&jwt, "the service account token")?,
            };
            to_body(&login)
        }
    };

    let value = login(client, peer, options, &body).await?;
    Ok(Token {
        value,
        from_login: true,
        credential_env,
    })
}

/// Revokes a token obtained by login. A failure is a warning, because the
/// values are already read and the token expires with its TTL.
pub async fn revoke(client: &Client, peer: &Peer, token: &Token, options: &Options) {
    let api_path = "auth/token/revoke-self";
    let result = client
        .call(
            peer,
            Call {
                method: Method::POST,
                api_path,
                query: &[],
                token: Some(&token.value),
                body: None,
            },
            options.timeout,
        )
        .await;
    match result {
        Ok(reply) if reply.status.is_success() => {
            tracing::debug!("vault: login token revoked");
        }
        Ok(reply) => tracing::warn!(
            "vault: {} did not revoke the login token (POST /v1/{api_path}: {}, {}); it stays \
             valid until its TTL ends",
            peer.describe(),
            reply.status,
            VaultErrors::parse(&reply).describe()
        ),
        Err(err) => tracing::warn!(
            "vault: the login token was not revoked and stays valid until its TTL ends: {err}"
        ),
    }
}

fn token_from_environment() -> Result<Token, SourceError> {
    if let Some(value) = env_secret("VAULT_TOKEN") {
        return Ok(Token {
            value,
            from_login: false,
            credential_env: vec!["VAULT_TOKEN".to_string()],
        });
    }
    let helper = crate::config::home_dir().map(|home| home.join(".vault-token"));
    if let Some(path) = helper.filter(|path| path.exists()) {
        let value = read_credential(&path, "the token helper file")?;
        return Ok(Token {
            value,
            from_login: false,
            credential_env: Vec::new(),
        });
    }
    Err(SourceError::new(
        ErrorKind::Invalid,
        "no Vault token: VAULT_TOKEN is not set and ~/.vault-token does not exist; run \
         `vault login`, set VAULT_TOKEN, or set auth under [vault] to approle, jwt or kubernetes",
    ))
}

/// Reads the JWT for `auth = "jwt"` from the variable that `jwt_env` names
/// or the file that `jwt_file` names, or else requests it from GitHub
/// Actions' ID token endpoint.
async fn jwt_for_ci(
    client: &Client,
    options: &Options,
    credential_env: &mut Vec<String>,
) -> Result<Secret, SourceError> {
    let auth = &options.auth;
    if let Some(name) = &auth.jwt_env {
        let Some(jwt) = env_secret(name) else {
            return Err(SourceError::new(
                ErrorKind::Invalid,
                format!(
                    "jwt_env names {name}, which is not set; set it to the CI's ID \
                     token (GitLab: id_tokens), or fix jwt_env"
                ),
            ));
        };
        credential_env.push(name.clone());
        return Ok(jwt);
    }
    if let Some(file) = &auth.jwt_file {
        return read_credential(Path::new(file), "jwt_file");
    }

    let url = std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL")
        .ok()
        .filter(|v| !v.is_empty());
    let request_token = env_secret("ACTIONS_ID_TOKEN_REQUEST_TOKEN");
    let (Some(url), Some(request_token)) = (url, request_token) else {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            "auth = \"jwt\" found no ID token: set jwt_env or jwt_file to where the CI puts \
             it, or under GitHub Actions grant the job `permissions: id-token: write` so \
             ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are set",
        ));
    };
    credential_env.push("ACTIONS_ID_TOKEN_REQUEST_TOKEN".to_string());
    check_actions_url(&url).map_err(|why| SourceError::new(ErrorKind::Invalid, why))?;

    let mut authorization = Zeroizing::new(b"bearer ".to_vec());
    authorization.extend_from_slice(request_token.expose());
    let mut header = HeaderValue::from_bytes(&authorization).map_err(|_| {
        SourceError::new(
            ErrorKind::Invalid,
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN contains bytes an HTTP header cannot carry",
        )
    })?;
    header.set_sensitive(true);
    let query: Vec<(&str, String)> = match &auth.jwt_audience {
        Some(audience) => vec![("audience", audience.clone())],
        None => Vec::new(),
    };
    tracing::debug!("vault: requesting the GitHub Actions ID token");
    let shown = url.split('?').next().unwrap_or(&url).to_string();
    let reply = client
        .get_url(&url, &header, &query, options.timeout)
        .await
        .map_err(|err| {
            SourceError::new(
                ErrorKind::Unreachable,
                format!(
                    "the GitHub Actions ID token request to {shown} failed: {}",
                    describe_transport(err)
                ),
            )
        })?;
    if !reply.status.is_success() {
        return Err(SourceError::new(
            ErrorKind::Denied,
            format!(
                "the GitHub Actions ID token endpoint {shown} returned {}; check \
                 that the job has `permissions: id-token: write`",
                reply.status
            ),
        ));
    }
    let parsed: ActionsToken = serde_json::from_slice(&reply.body).map_err(|_| {
        SourceError::new(
            ErrorKind::Invalid,
            format!(
                "the response of the GitHub Actions ID token endpoint {shown} is \
                 not JSON with a value"
            ),
        )
    })?;
    match parsed.value.filter(|v| !v.is_empty()) {
        Some(value) => Ok(Secret::new(value.into_bytes())),
        None => Err(SourceError::new(
            ErrorKind::Invalid,
            format!("the GitHub Actions ID token endpoint {shown} returned no value"),
        )),
    }
}

async fn login(
    client: &Client,
    peer: &Peer,
    options: &Options,
    body: &Body,
) -> Result<Secret, SourceError> {
    let auth = &options.auth;
    let api_path = format!("auth/{}/login", auth.mount);
    tracing::debug!(method = auth.method.name(), path = %api_path, "vault: logging in");
    let reply = client
        .call(
            peer,
            Call {
                method: Method::POST,
                api_path: &api_path,
                query: &[],
                token: None,
                body: Some(body),
            },
            options.timeout,
        )
        .await?;

    if reply.status.is_success() {
        let parsed: LoginResponse = serde_json::from_slice(&reply.body).map_err(|_| {
            SourceError::new(
                ErrorKind::Invalid,
                format!(
                    "the response of {} to POST /v1/{api_path} is not a login \
                     response",
                    peer.describe()
                ),
            )
        })?;
        return parsed
            .auth
            .and_then(|auth| auth.client_token)
            .filter(|token| !token.is_empty())
            .map(|token| Secret::new(token.into_bytes()))
            .ok_or_else(|| {
                SourceError::new(
                    ErrorKind::Invalid,
                    format!(
                        "{} returned no auth.client_token for POST /v1/{api_path}",
                        peer.describe()
                    ),
                )
            });
    }

    if let Some(err) = common_error(&reply, peer, "POST", &api_path, "check the login") {
        if reply.status != StatusCode::FORBIDDEN {
            return Err(err);
        }
    }
    let details = VaultErrors::parse(&reply).describe();
    let fix = match auth.method {
        AuthMethod::AppRole => format!(
            "check role_id and the secret ID (role_id, role_id_file, secret_id_file, \
             VAULT_ROLE_ID, VAULT_SECRET_ID); a secret ID expires after its TTL or number of \
             uses, so issue a new one with `vault write -f auth/{}/role/ROLE/secret-id`",
            auth.mount
        ),
        AuthMethod::Jwt => format!(
            "check that the role {:?} exists at auth/{}, that its bound_audiences include the \
             token's audience (jwt_audience), and that its bound_claims match the CI job",
            auth.role.as_deref().unwrap_or_default(),
            auth.mount
        ),
        AuthMethod::Kubernetes => format!(
            "check that the role {:?} exists at auth/{} and that its \
             bound_service_account_names and bound_service_account_namespaces include this \
             pod's service account",
            auth.role.as_deref().unwrap_or_default(),
            auth.mount
        ),
        AuthMethod::Token => String::new(),
    };
    let mount_hint =
        if reply.status == StatusCode::NOT_FOUND || details.contains("no handler for route") {
            format!(
                "; if the {} auth method is mounted elsewhere than auth/{}, set auth_mount",
                auth.method.name(),
                auth.mount
            )
        } else {
            String::new()
        };
    Err(SourceError::new(
        ErrorKind::Denied,
        format!(
            "{} login failed at {} (POST /v1/{api_path}: {}, {details}); \
             {fix}{mount_hint}",
            auth.method.name(),
            peer.describe(),
            reply.status
        ),
    ))
}

fn to_body<T: Serialize>(login: &T) -> Body {
    let mut body = Zeroizing::new(Vec::with_capacity(4096));
    // Serializing a struct of strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *body, login);
    body
}

fn text<'a>(secret: &'a Secret, what: &str) -> Result<&'a str, SourceError> {
    std::str::from_utf8(secret.expose())
        .map_err(|_| SourceError::new(ErrorKind::Invalid, format!("{what} is not UTF-8 text")))
}

fn env_secret(name: &str) -> Option<Secret> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(|v| Secret::new(std::os::unix::ffi::OsStringExt::into_vec(v)))
        .map(|mut secret| {
            trim(&mut secret);
            secret
        })
}

/// Reads a credential file (a role ID, secret ID, JWT or token) and trims
/// the surrounding whitespace that `echo` and editors add.
fn read_credential(path: &Path, what: &str) -> Result<Secret, SourceError> {
    let shown = PathBuf::from(path).display().to_string();
    let bytes = crate::config::read_regular_file(path, MAX_CREDENTIAL_BYTES).map_err(|err| {
        SourceError::new(
            ErrorKind::Invalid,
            format!("cannot read {what} {shown}: {err}"),
        )
    })?;
    let mut secret = Secret::new(bytes.to_vec());
    trim(&mut secret);
    if secret.is_empty() {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!("{what} {shown} is empty"),
        ));
    }
    Ok(secret)
}

fn trim(secret: &mut Secret) {
    let bytes = secret.expose();
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    if start == 0 && end == bytes.len() {
        return;
    }
    *secret = Secret::new(bytes[start..end].to_vec());
}

fn check_actions_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|err| format!("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL ({err})"))?;
    let host = parsed.host_str().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(
            "ACTIONS_ID_TOKEN_REQUEST_URL must be an https:// URL (http:// only for loopback)"
                .to_string(),
        ),
    }
}

fn describe_transport(err: crate::source::http::TransportError) -> String {
    use crate::source::http::TransportError;
    match err {
        TransportError::Refused => "the connection was refused".to_string(),
        TransportError::TimedOut => "it timed out".to_string(),
        TransportError::Certificate(detail) => {
            format!("its TLS certificate was rejected ({detail})")
        }
        TransportError::Other(detail) => detail,
    }
}
