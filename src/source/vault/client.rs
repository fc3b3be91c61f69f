//! The HTTP side of the Vault source: the rustls client with the TLS
//! settings the Vault CLI reads (`VAULT_CACERT`, `VAULT_CAPATH`,
//! `VAULT_CLIENT_CERT`, `VAULT_CLIENT_KEY`, `VAULT_SKIP_VERIFY`), the
//! address check, requests with `X-Vault-Token` and `X-Vault-Namespace`, and
//! Vault's `{"errors": [...]}` bodies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{ErrorKind, Options, SourceError};
use crate::secret::Secret;
use crate::source::http::{self as shared, Advice, Reply};

const ADVICE: Advice = Advice {
    section: "vault",
    certificate: "if a private CA signs it, point VAULT_CACERT at that CA's PEM file (or \
                  VAULT_CAPATH at a folder of them)",
};

/// The one client of a batch, with the TLS settings of keyrun's
/// environment.
pub struct Client {
    http: reqwest::Client,
}

/// The Vault address and namespace of a request, for URLs and messages.
pub struct Peer {
    pub address: String,
    pub namespace: Option<String>,
}

impl Peer {
    pub fn new(options: &Options) -> Peer {
        Peer {
            address: options.address.clone(),
            namespace: options.namespace.clone(),
        }
    }

    /// "Vault at ADDRESS (namespace NS)", for messages.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("Vault at {} (namespace {namespace})", self.address),
            None => format!("Vault at {}", self.address),
        }
    }
}

/// A request body, kept in a zeroizing buffer because logins carry
/// credentials.
pub type Body = Zeroizing<Vec<u8>>;

/// One request to Vault's API.
pub struct Call<'a> {
    pub method: Method,
    /// The path after `/v1/`, percent-encoded.
    pub api_path: &'a str,
    pub query: &'a [(&'a str, String)],
    pub token: Option<&'a Secret>,
    pub body: Option<&'a Body>,
}

/// Vault's error body.
#[derive(Deserialize, Default)]
pub struct VaultErrors {
    #[serde(default)]
    errors: Vec<String>,
}

impl VaultErrors {
    pub fn parse(reply: &Reply) -> VaultErrors {
        serde_json::from_slice(&reply.body).unwrap_or_default()
    }

    /// Joins the errors as Vault wrote them onto one line.
    pub fn describe(&self) -> String {
        let text = self
            .errors
            .iter()
            .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("; ");
        if text.is_empty() {
            "no error details in the response".to_string()
        } else {
            text
        }
    }

    /// Whether Vault rejected the token itself rather than a policy. Vault's
    /// errors carry no codes, so this matches the text Vault writes for an
    /// unknown, revoked or expired token: "invalid token".
    pub fn is_invalid_token(&self) -> bool {
        self.errors.iter().any(|e| e.contains("invalid token"))
    }
}

impl Client {
    pub fn new() -> Result<Client, SourceError> {
        let mut builder = shared::client_builder()
            .user_agent(concat!("keyrun/", env!("CARGO_PKG_VERSION")))
            // A redirect would carry the token elsewhere.
            .redirect(reqwest::redirect::Policy::none());

        shared::check_ssl_cert_file("vault")?;
        let mut roots = Vec::new();
        if let Some(path) = env_path("VAULT_CACERT") {
            roots.extend(shared::load_pem_certificates(
                "VAULT_CACERT",
                &path,
                "vault",
            )?);
        }
        if let Some(folder) = env_path("VAULT_CAPATH") {
            roots.extend(load_ca_folder(&folder)?);
        }
        if !roots.is_empty() {
            // The Vault CLI trusts only the CA it is given, and so does keyrun.
            builder = builder.tls_certs_only(roots);
        }
        if let Some(identity) = load_client_identity()? {
            builder = builder.identity(identity);
        }
        if skip_verify() {
            tracing::warn!(
                "vault: VAULT_SKIP_VERIFY is set, so the Vault server's TLS certificate is not \
                 checked and anyone on the network path can read the token and the values; \
                 unset it and point VAULT_CACERT at the server's CA"
            );
            builder = builder.tls_danger_accept_invalid_certs(true);
        }

        let http = builder.build().map_err(|err| {
            SourceError::new(
                ErrorKind::Invalid,
                format!("vault: cannot set up the HTTPS client: {err}"),
            )
        })?;
        Ok(Client { http })
    }

    /// Sends one request to `/v1/<api_path>`, with the shared retries of
    /// 429 and 5xx, and returns the last response whatever its status.
    pub async fn call(
        &self,
        peer: &Peer,
        call: Call<'_>,
        timeout: Duration,
    ) -> Result<Reply, SourceError> {
        let Call {
            method,
            api_path,
            query,
            token,
            body,
        } = call;
        let url = format!("{}/v1/{api_path}", peer.address);
        let token_header = token.map(token_header).transpose()?;
        tracing::debug!(method = %method, path = %api_path, "vault: sending request");
        let build = || {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header("X-Vault-Request", "true");
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(header) = &token_header {
                request = request.header("X-Vault-Token", header.clone());
            }
            if let Some(namespace) = &peer.namespace {
                request = request.header("X-Vault-Namespace", namespace.as_str());
            }
            if let Some(body) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_vec());
            }
            request
        };
        shared::send(build, timeout, "vault").await.map_err(|err| {
            err.into_source_error(
                &format!("{} ({method} /v1/{api_path})", peer.describe()),
                timeout,
                &ADVICE,
            )
        })
    }

    /// Sends a GET to a URL outside Vault (the GitHub Actions ID token
    /// endpoint) with the shared retries.
    pub async fn get_url(
        &self,
        url: &str,
        authorization: &HeaderValue,
        query: &[(&str, String)],
        timeout: Duration,
    ) -> Result<Reply, shared::TransportError> {
        let build = || {
            self.http
                .get(url)
                .header(reqwest::header::AUTHORIZATION, authorization.clone())
                .query(query)
        };
        shared::send(build, timeout, "vault").await
    }
}

/// The common messages for a response that is not a success: throttling,
/// server errors (sealed, standby) and an invalid token. Returns `None` for
/// the statuses whose meaning depends on the request (403 for a policy,
/// 404, 400).
pub fn common_error(
    reply: &Reply,
    peer: &Peer,
    method: &str,
    api_path: &str,
    token_advice: &str,
) -> Option<SourceError> {
    let errors = VaultErrors::parse(reply);
    let details = errors.describe();
    let status = reply.status;
    let at = format!("{} ({method} /v1/{api_path})", peer.describe());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return Some(SourceError::new(
            ErrorKind::Unreachable,
            format!(
                "{at} is sealed or a standby that cannot serve the request (503 \
                 Service Unavailable after {} attempts, {details}); unseal Vault, or point \
                 address (VAULT_ADDR) at the active node",
                reply.attempts
            ),
        ));
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Some(SourceError::new(
            ErrorKind::Unreachable,
            format!(
                "{at} throttled {} requests (429 Too Many Requests{}, {details}); try \
                 again later, or raise the rate limit quota",
                reply.attempts,
                match reply.retry_after {
                    Some(seconds) => format!(", Retry-After: {seconds}s"),
                    None => String::new(),
                }
            ),
        ));
    }
    if status.is_server_error() {
        return Some(SourceError::new(
            ErrorKind::Unreachable,
            format!(
                "{at} failed {} requests ({status}, {details}); try again later",
                reply.attempts
            ),
        ));
    }
    if (status == StatusCode::FORBIDDEN && errors.is_invalid_token())
        || status == StatusCode::UNAUTHORIZED
    {
        return Some(SourceError::new(
            ErrorKind::Denied,
            format!(
                "{at} rejected the token as invalid or expired ({status}, {details}); \
                 {token_advice}"
            ),
        ));
    }
    None
}

/// Checks and normalizes a Vault address: `https://`, or `http://` for a
/// loopback host (or any host with `allow_http`), without a trailing slash.
pub fn check_address(address: &str, allow_http: bool) -> Result<String, String> {
    let original = address;
    let shown = redact_userinfo(address);
    let address = shown.as_str();
    let url = reqwest::Url::parse(address).map_err(|err| {
        format!(
            "the Vault address {address:?} is not a URL ({err}); set address (or VAULT_ADDR) \
             to https://HOST:PORT"
        )
    })?;
    let host = url.host_str().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback || allow_http => {}
        "http" => {
            return Err(format!(
                "the Vault address {address} uses plain http:// for a host that is not \
                 loopback, which would send the token unencrypted; use https://, or set \
                 allow_http = true under [vault] if the network path is trusted"
            ))
        }
        other => {
            return Err(format!(
                "the Vault address {address} has the scheme {other:?}; use https://HOST:PORT"
            ))
        }
    }
    if shown != original {
        return Err(format!(
            "the Vault address {address} contains a user name or password; remove them, since \
             Vault takes the token in a header"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "the Vault address {address} must be scheme, host, port and an optional path only"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Replaces the user information of a URL (`user:password@`) with `***@`,
/// so no message shows a password written into `VAULT_ADDR`.
fn redact_userinfo(address: &str) -> String {
    let Some((scheme, rest)) = address.split_once("://") else {
        return address.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => address.to_string(),
    }
}

fn token_header(token: &Secret) -> Result<HeaderValue, SourceError> {
    let mut value = HeaderValue::from_bytes(token.expose()).map_err(|_| {
        SourceError::new(
            ErrorKind::Invalid,
            "the Vault token contains bytes an HTTP header cannot carry",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Reads `VAULT_SKIP_VERIFY` as Go's `strconv.ParseBool` does, which is how
/// the Vault CLI reads it.
fn skip_verify() -> bool {
    matches!(
        std::env::var("VAULT_SKIP_VERIFY").as_deref(),
        Ok("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

/// Reads every PEM file in the `VAULT_CAPATH` folder.
fn load_ca_folder(folder: &Path) -> Result<Vec<reqwest::Certificate>, SourceError> {
    let entries = std::fs::read_dir(folder).map_err(|err| {
        SourceError::new(
            ErrorKind::Invalid,
            format!(
                "vault: cannot read the folder VAULT_CAPATH {}: {err}; point it at a folder of \
                 PEM CA certificates or unset it",
                folder.display()
            ),
        )
    })?;
    let mut roots = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() {
            roots.extend(shared::load_pem_certificates(
                "VAULT_CAPATH",
                &path,
                "vault",
            )?);
        }
    }
    if roots.is_empty() {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!(
                "vault: the folder VAULT_CAPATH {} contains no certificate",
                folder.display()
            ),
        ));
    }
    Ok(roots)
}

/// Reads the client certificate and key for mutual TLS, which both
/// `VAULT_CLIENT_CERT` and `VAULT_CLIENT_KEY` must name.
fn load_client_identity() -> Result<Option<reqwest::Identity>, SourceError> {
    let (cert, key) = match (env_path("VAULT_CLIENT_CERT"), env_path("VAULT_CLIENT_KEY")) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            return Err(SourceError::new(
                ErrorKind::Invalid,
                "vault: VAULT_CLIENT_CERT and VAULT_CLIENT_KEY must be set together; set both \
                 to PEM files, or neither",
            ))
        }
    };
    let read = |variable: &str, path: &Path| {
        crate::config::read_regular_file(path, shared::MAX_PEM_BYTES).map_err(|err| {
            SourceError::new(
                ErrorKind::Invalid,
                format!("vault: cannot read {variable} {}: {err}", path.display()),
            )
        })
    };
    let mut pem = read("VAULT_CLIENT_CERT", &cert)?;
    pem.push(b'\n');
    pem.extend_from_slice(&read("VAULT_CLIENT_KEY", &key)?);
    let identity = reqwest::Identity::from_pem(&pem).map_err(|err| {
        SourceError::new(
            ErrorKind::Invalid,
            format!(
                "vault: VAULT_CLIENT_CERT {} and VAULT_CLIENT_KEY {} are not a PEM certificate \
                 and private key: {err}",
                cert.display(),
                key.display()
            ),
        )
    })?;
    Ok(Some(identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_address_is_normalized() {
        assert_eq!(
            check_address("https://vault.example.com:8200/", false).unwrap(),
            "https://vault.example.com:8200"
        );
    }

    #[test]
    fn http_is_loopback_only() {
        assert!(check_address("http://127.0.0.1:8200", false).is_ok());
        assert!(check_address("http://localhost:8200", false).is_ok());
        assert!(check_address("http://[::1]:8200", false).is_ok());
        assert!(check_address("http://vault.example.com:8200", false).is_err());
        assert!(check_address("http://vault.example.com:8200", true).is_ok());
        assert!(check_address("ftp://127.0.0.1", true).is_err());
    }

    #[test]
    fn errors_join_on_one_line() {
        let errors: VaultErrors = serde_json::from_str(
            r#"{"errors":["2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"]}"#,
        )
        .unwrap();
        assert_eq!(
            errors.describe(),
            "2 errors occurred: * permission denied * invalid token"
        );
        assert!(errors.is_invalid_token());
    }
}
