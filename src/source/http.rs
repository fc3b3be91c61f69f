//! The HTTP plumbing that the network sources share: retries of throttling
//! and 5xx with jittered backoff, bounded response bodies in zeroizing
//! buffers, PEM certificate loading, and the mapping of transport failures
//! to what the user can act on.

use std::error::Error as _;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::header::RETRY_AFTER;
use reqwest::{RequestBuilder, StatusCode};
use zeroize::Zeroizing;

use super::{ErrorKind, SourceError};

/// How many times a throttled or failed (5xx) request is sent in all.
const MAX_ATTEMPTS: u32 = 4;

/// The first backoff step. Each retry doubles it, and the wait is drawn at
/// random between half of it and all of it.
const BACKOFF_BASE: Duration = Duration::from_millis(250);

/// The largest response body keyrun reads, far above the few kilobytes of
/// a token or secret response.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Starts a reqwest client builder on keyrun's TLS setup: rustls with the
/// ring crypto provider, installed as the process default because reqwest
/// (built with `rustls-no-provider`) takes the provider from there.
///
/// keyrun uses ring rather than aws-lc, rustls's other provider. aws-lc
/// (from 1.60) collects CPU jitter entropy once per process before its
/// first handshake, so a `vault:` fetch took 29 ms of user CPU with it and
/// 3 ms with ring (hyperfine on a 2-core VM). ring seeds from the
/// operating system's random source alone. The cost: ring offers no
/// post-quantum key exchange (X25519MLKEM768).
pub fn client_builder() -> reqwest::ClientBuilder {
    // An error only means that a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// The largest PEM file (a CA bundle, a client certificate or key) keyrun
/// reads. The system bundle of Debian 12 is about 220 KiB.
pub const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

/// Checks that `SSL_CERT_FILE`, when set, names a regular file of at most
/// [`MAX_PEM_BYTES`]. The TLS clients' platform verifier reads it itself,
/// without such a check, so a FIFO there would hang the fetch past every
/// timeout and `/dev/zero` would exhaust memory.
pub fn check_ssl_cert_file(label: &str) -> Result<(), SourceError> {
    let Some(path) = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let path = std::path::PathBuf::from(path);
    crate::config::open_regular_file(&path, MAX_PEM_BYTES)
        .map(drop)
        .map_err(|err| {
            SourceError::new(
                ErrorKind::Invalid,
                format!(
                    "{label}: cannot use SSL_CERT_FILE {}: {err}; point it at a PEM file of CA \
                     certificates or unset it",
                    path.display()
                ),
            )
        })
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
    /// cause, worded for the source by `advice`. The message names no
    /// reference, because one exchange may serve several.
    pub fn into_source_error(self, peer: &str, timeout: Duration, advice: &Advice) -> SourceError {
        match self {
            TransportError::Refused => SourceError::new(
                ErrorKind::Unreachable,
                format!(
                    "the connection to {peer} was refused; check the host and port, \
                     and that nothing blocks it"
                ),
            ),
            TransportError::TimedOut => SourceError::new(
                ErrorKind::TimedOut,
                format!(
                    "{peer} did not answer within {}; check the network or a proxy \
                     (HTTPS_PROXY), or raise timeout under [{}]",
                    humanize(timeout),
                    advice.section
                ),
            ),
            TransportError::Certificate(detail) => SourceError::new(
                ErrorKind::Unreachable,
                format!(
                    "the TLS certificate of {peer} was rejected ({detail}); {}",
                    advice.certificate
                ),
            ),
            TransportError::Other(detail) => SourceError::new(
                ErrorKind::Unreachable,
                format!("the request to {peer} failed: {detail}"),
            ),
        }
    }
}

/// The source-specific part of transport error messages.
pub struct Advice {
    /// The configuration section whose `timeout` bounds the exchange.
    pub section: &'static str,
    /// What to do when the server's certificate is rejected.
    pub certificate: &'static str,
}

/// Sends the request that `build` makes, retrying 429 and 5xx
/// responses with jittered backoff (or the server's `Retry-After`) while
/// the total stays within `timeout`. Returns the last response, whatever
/// its status.
pub async fn send(
    build: impl Fn() -> RequestBuilder,
    timeout: Duration,
    label: &str,
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
            "{label}: retrying after a throttled or failed response"
        );
        tokio::time::sleep(wait).await;
    }
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

/// Returns the reason the server's certificate was rejected, when that is
/// why `err` failed.
pub fn certificate_rejection(err: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(current) = source {
        if let Some(TransportError::Certificate(reason)) = classify_cause(current) {
            return Some(reason);
        }
        source = current.source();
    }
    None
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

/// Reads a PEM file of certificates that `variable` names, for messages.
pub fn load_pem_certificates(
    variable: &str,
    path: &Path,
    label: &str,
) -> Result<Vec<reqwest::Certificate>, SourceError> {
    let shown = path.display();
    let pem = crate::config::read_regular_file(path, MAX_PEM_BYTES).map_err(|err| {
        SourceError::new(
            ErrorKind::Invalid,
            format!(
                "{label}: cannot read {variable} {shown}: {err}; point it at a PEM file of CA \
                 certificates or unset it"
            ),
        )
    })?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
        SourceError::new(
            ErrorKind::Invalid,
            format!("{label}: {variable} {shown} is not a PEM file of certificates: {err}"),
        )
    })?;
    if certificates.is_empty() {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!(
                "{label}: {variable} {shown} contains no certificate; point it at a PEM file of \
                 CA certificates"
            ),
        ));
    }
    Ok(certificates)
}

/// Reads the CA certificates that `SSL_CERT_FILE` (a PEM file) and
/// `SSL_CERT_DIR` (folders of PEM files, separated by `:`) name, as OpenSSL
/// reads them, for a client to add to its roots. `label` starts the
/// messages.
///
/// Loading them here reports a missing or invalid file, and trusts them on
/// macOS too, where reqwest's platform verifier ignores the variables.
// NOTE: on Linux the platform verifier (rustls-platform-verifier 0.7 with
// rustls-native-certs 0.8) reads these variables itself and then loads
// them in place of the system's roots, so a client trusts only them.
pub fn load_ssl_cert_env(label: &str) -> Result<Vec<reqwest::Certificate>, SourceError> {
    let mut certificates = Vec::new();
    if let Some(path) = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty()) {
        let path = std::path::PathBuf::from(path);
        certificates.extend(load_pem_certificates("SSL_CERT_FILE", &path, label)?);
        tracing::debug!(path = %path.display(), "{label}: trusting SSL_CERT_FILE");
    }
    if let Some(folders) = std::env::var_os("SSL_CERT_DIR") {
        for folder in std::env::split_paths(&folders).filter(|f| !f.as_os_str().is_empty()) {
            certificates.extend(load_ssl_cert_folder(&folder, label)?);
        }
    }
    Ok(certificates)
}

/// Reads the certificates of the files in one `SSL_CERT_DIR` folder. As in
/// OpenSSL, a folder that does not exist and a file that contains no
/// certificate (a README, a CRL) are skipped.
fn load_ssl_cert_folder(
    folder: &Path,
    label: &str,
) -> Result<Vec<reqwest::Certificate>, SourceError> {
    let shown = folder.display();
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!("{label}: SSL_CERT_DIR lists {shown}, which does not exist; skipped");
            return Ok(Vec::new());
        }
        Err(err) => {
            return Err(SourceError::new(
                ErrorKind::Invalid,
                format!(
                    "{label}: cannot read the folder {shown} in SSL_CERT_DIR: {err}; point SSL_CERT_DIR at folders of PEM CA certificates or unset it"
                ),
            ))
        }
    };
    let mut certificates = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|err| {
                SourceError::new(
                    ErrorKind::Invalid,
                    format!("{label}: cannot list the folder {shown} in SSL_CERT_DIR: {err}"),
                )
            })?
            .path();
        // `is_file` follows the symlinks that `openssl rehash` makes.
        if !path.is_file() {
            continue;
        }
        let pem = std::fs::read(&path).map_err(|err| {
            SourceError::new(
                ErrorKind::Invalid,
                format!(
                    "{label}: cannot read {} in SSL_CERT_DIR: {err}",
                    path.display()
                ),
            )
        })?;
        let found = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
            SourceError::new(
                ErrorKind::Invalid,
                format!(
                    "{label}: {} in SSL_CERT_DIR is not a PEM file of certificates: {err}",
                    path.display()
                ),
            )
        })?;
        certificates.extend(found);
    }
    tracing::debug!(folder = %shown, count = certificates.len(), "{label}: trusting SSL_CERT_DIR");
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
    fn cert_folder_skips_files_without_certificates() {
        let folder = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(folder.path().join("ca.pem"), cert.pem()).unwrap();
        std::fs::write(folder.path().join("README"), "CA certificates\n").unwrap();
        std::fs::write(
            folder.path().join("revoked.crl"),
            "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n",
        )
        .unwrap();
        std::fs::create_dir(folder.path().join("java")).unwrap();
        let found = load_ssl_cert_folder(folder.path(), "test").unwrap();
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn missing_cert_folder_is_skipped() {
        let folder = tempfile::tempdir().unwrap();
        let found = load_ssl_cert_folder(&folder.path().join("absent"), "test").unwrap();
        assert!(found.is_empty());
    }

    #[test]
    fn humanize_whole_seconds() {
        assert_eq!(humanize(Duration::from_secs(10)), "10s");
        assert_eq!(humanize(Duration::from_millis(1500)), "1500ms");
    }
}
