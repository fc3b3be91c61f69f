//! The HTTP side of the Azure source: the rustls clients, a custom CA from
//! `SSL_CERT_FILE`, retries of throttling and 5xx with jittered backoff, and
//! the mapping of transport failures to what the user can act on.

use std::error::Error as _;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use zeroize::Zeroizing;

use super::{ErrorKind, SourceError};
use crate::secret::Secret;

/// How many times a throttled or failed (5xx) request is sent in all.
const MAX_ATTEMPTS: u32 = 4;

/// The first backoff step. Each retry doubles it, and the wait is drawn at
/// random between half of it and all of it.
const BACKOFF_BASE: Duration = Duration::from_millis(250);

/// The largest response body keyrun reads, far above the few kilobytes of
/// a token or secret response.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The clients of one batch: `public` speaks HTTPS only (Key Vault and the
/// identity platform), `local` may speak plain HTTP and ignores proxy
/// variables, for the managed identity endpoints that listen on the host
/// itself.
pub struct Http {
    public: reqwest::Client,
    local: reqwest::Client,
}

/// A response read to its end.
pub struct Reply {
    pub status: StatusCode,
    /// The server's `Retry-After`, in seconds, when it sent one.
    pub retry_after: Option<u64>,
    /// How many requests were sent, retries included.
    pub attempts: u32,
    pub body: Zeroizing<Vec<u8>>,
}

/// A failure that left no response.
#[derive(Debug)]
pub enum TransportError {
    /// Nothing accepts connections at the address.
    Refused,
    /// The exchange did not finish within the timeout.
    TimedOut,
    /// The server's certificate was rejected.
    Certificate(String),
    Other(String),
}

impl TransportError {
    /// Converts the failure of an exchange with `peer` (such as "Key Vault
    /// at https://x.vault.azure.net") into an error with the fix for its
    /// cause.
    pub fn into_source_error(self, prefix: &str, peer: &str, timeout: Duration) -> SourceError {
        match self {
            TransportError::Refused => SourceError::new(
                ErrorKind::Unreachable,
                format!(
                    "{prefix}: the connection to {peer} was refused; check the host and port, \
                     and that nothing blocks it"
                ),
            ),
            TransportError::TimedOut => SourceError::new(
                ErrorKind::TimedOut,
                format!(
                    "{prefix}: {peer} did not answer within {}; check the network or a proxy \
                     (HTTPS_PROXY), or raise timeout under [azure]",
                    humanize(timeout)
                ),
            ),
            TransportError::Certificate(detail) => SourceError::new(
                ErrorKind::Unreachable,
                format!(
                    "{prefix}: the TLS certificate of {peer} was rejected ({detail}); if a \
                     corporate proxy or private CA signs it, point SSL_CERT_FILE at that CA's \
                     PEM file"
                ),
            ),
            TransportError::Other(detail) => SourceError::new(
                ErrorKind::Unreachable,
                format!("{prefix}: the request to {peer} failed: {detail}"),
            ),
        }
    }
}

impl Http {
    pub fn new() -> Result<Http, SourceError> {
        let extra_roots = load_ssl_cert_file()?;
        let user_agent = concat!("keyrun/", env!("CARGO_PKG_VERSION"));
        let build_error = |err: reqwest::Error| {
            SourceError::new(
                ErrorKind::Invalid,
                format!("azure-kv: cannot set up the HTTPS client: {err}"),
            )
        };

        let public = reqwest::Client::builder()
            .user_agent(user_agent)
            .https_only(true)
            // A redirect would carry the Authorization header elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .tls_certs_merge(extra_roots.clone())
            .build()
            .map_err(build_error)?;
        let local = reqwest::Client::builder()
            .user_agent(user_agent)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tls_certs_merge(extra_roots)
            .build()
            .map_err(build_error)?;
        Ok(Http { public, local })
    }

    pub fn public(&self) -> &reqwest::Client {
        &self.public
    }

    pub fn local(&self) -> &reqwest::Client {
        &self.local
    }

    /// Sends the request that `build` makes, retrying 429 and 5xx
    /// responses with jittered backoff (or the server's `Retry-After`) while
    /// the total stays within `timeout`. Returns the last response, whatever
    /// its status.
    pub async fn send(
        &self,
        build: impl Fn() -> RequestBuilder,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        let deadline = Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(TransportError::TimedOut);
            }
            let response = build().timeout(remaining).send().await.map_err(classify)?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|text| text.trim().parse::<u64>().ok());
            let body = read_body(response).await?;
            let reply = Reply {
                status,
                retry_after,
                attempts: attempt,
                body,
            };

            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if !retryable || attempt >= MAX_ATTEMPTS {
                return Ok(reply);
            }
            let wait = match retry_after {
                Some(seconds) => Duration::from_secs(seconds),
                None => jittered_backoff(attempt),
            };
            if Instant::now() + wait >= deadline {
                return Ok(reply);
            }
            tracing::debug!(
                status = status.as_u16(),
                attempt,
                wait_ms = wait.as_millis() as u64,
                "azure-kv: retrying after a throttled or failed response"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// Builds a `Bearer` Authorization header, marked sensitive so that no
/// debug output of the request shows it.
pub fn bearer(token: &Secret) -> Result<HeaderValue, SourceError> {
    let mut text = Zeroizing::new(Vec::with_capacity(7 + token.len()));
    text.extend_from_slice(b"Bearer ");
    text.extend_from_slice(token.expose());
    let mut value = HeaderValue::from_bytes(&text).map_err(|_| {
        SourceError::new(
            ErrorKind::Invalid,
            "azure-kv: the access token contains bytes an HTTP header cannot carry",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn jittered_backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE * 2u32.pow(attempt.saturating_sub(1));
    let millis =
        rand::rng().random_range(ceiling.as_millis() as u64 / 2..=ceiling.as_millis() as u64);
    Duration::from_millis(millis)
}

async fn read_body(mut response: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, TransportError> {
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(TransportError::Other(format!(
                "the response is larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        // Grow through a zeroizing buffer, so no reallocation leaves a
        // partial copy behind.
        if body.capacity() < body.len() + chunk.len() {
            let mut grown = Zeroizing::new(Vec::with_capacity((body.len() + chunk.len()) * 2));
            grown.extend_from_slice(&body);
            body = grown;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Sorts a reqwest error into what the user can act on, by the typed
/// errors in its source chain.
fn classify(err: reqwest::Error) -> TransportError {
    if err.is_timeout() {
        return TransportError::TimedOut;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(current) = source {
        if let Some(found) = classify_cause(current) {
            return found;
        }
        source = current.source();
    }
    TransportError::Other(error_chain(err))
}

fn classify_cause(cause: &(dyn std::error::Error + 'static)) -> Option<TransportError> {
    if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
        return Some(match tls {
            rustls::Error::InvalidCertificate(reason) => {
                TransportError::Certificate(format!("{reason:?}"))
            }
            other => TransportError::Other(format!("TLS error: {other}")),
        });
    }
    let io = cause.downcast_ref::<std::io::Error>()?;
    match io.kind() {
        std::io::ErrorKind::ConnectionRefused => Some(TransportError::Refused),
        std::io::ErrorKind::TimedOut => Some(TransportError::TimedOut),
        // hyper-rustls and tokio-rustls wrap a rustls error in one or two
        // io::Errors, whose `source` skips the wrapped error itself.
        _ => {
            let inner: &(dyn std::error::Error + 'static) = io.get_ref()?;
            classify_cause(inner)
        }
    }
}

fn error_chain(err: reqwest::Error) -> String {
    // The URL is left out because the callers name the peer themselves.
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(current) = source {
        text.push_str(": ");
        text.push_str(&current.to_string());
        source = current.source();
    }
    text
}

/// Reads the CA bundle named by `SSL_CERT_FILE`, which the HTTPS clients
/// trust in addition to the system's roots.
fn load_ssl_cert_file() -> Result<Vec<reqwest::Certificate>, SourceError> {
    let Some(path) = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty()) else {
        return Ok(Vec::new());
    };
    let shown = std::path::Path::new(&path).display().to_string();
    let pem = std::fs::read(&path).map_err(|err| {
        SourceError::new(
            ErrorKind::Invalid,
            format!("azure-kv: cannot read SSL_CERT_FILE {shown}: {err}; point it at a PEM file of CA certificates or unset it"),
        )
    })?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
        SourceError::new(
            ErrorKind::Invalid,
            format!("azure-kv: SSL_CERT_FILE {shown} is not a PEM file of certificates: {err}"),
        )
    })?;
    if certificates.is_empty() {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!("azure-kv: SSL_CERT_FILE {shown} contains no certificate; point it at a PEM file of CA certificates"),
        ));
    }
    tracing::debug!(path = %shown, count = certificates.len(), "azure-kv: trusting SSL_CERT_FILE");
    Ok(certificates)
}

/// A duration as a user writes it: `10s`, `500ms`.
pub fn humanize(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_jittered() {
        for attempt in 1..=3 {
            let ceiling = BACKOFF_BASE * 2u32.pow(attempt - 1);
            let wait = jittered_backoff(attempt);
            assert!(wait <= ceiling, "attempt {attempt}: {wait:?}");
            assert!(wait >= ceiling / 2, "attempt {attempt}: {wait:?}");
        }
    }

    #[test]
    fn humanize_whole_seconds() {
        assert_eq!(humanize(Duration::from_secs(10)), "10s");
        assert_eq!(humanize(Duration::from_millis(1500)), "1500ms");
    }
}
