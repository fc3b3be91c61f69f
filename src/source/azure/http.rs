//! The HTTP side of the Azure source: the rustls clients, custom CAs from
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`, and the Azure wording of the shared retry and error
//! handling in [`crate::source::http`].

use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::RequestBuilder;
use zeroize::Zeroizing;

use super::{ErrorKind, SourceError};
use crate::secret::Secret;
use crate::source::http::{self as shared, Advice, TransportError};

pub use crate::source::http::{humanize, Reply};

/// The Azure fixes in transport error messages.
pub const ADVICE: Advice = Advice {
    section: "azure",
    certificate: "if a corporate proxy or private CA signs it, point SSL_CERT_FILE at that \
                  CA's PEM file",
};

/// The clients of one batch: `public` speaks HTTPS only (Key Vault and the
/// identity platform), `local` may speak plain HTTP and ignores proxy
/// variables, for the managed identity endpoints that listen on the host
/// itself.
pub struct Http {
    public: reqwest::Client,
    local: reqwest::Client,
}

impl Http {
    pub fn new() -> Result<Http, SourceError> {
        let extra_roots = shared::load_ssl_cert_env("azure-kv")?;
        let user_agent = concat!("keyrun/", env!("CARGO_PKG_VERSION"));
        let build_error = |err: reqwest::Error| {
            SourceError::new(
                ErrorKind::Invalid,
                format!("azure-kv: cannot set up the HTTPS client: {err}"),
            )
        };

        let public = shared::client_builder()
            .user_agent(user_agent)
            .https_only(true)
            // A redirect would carry the Authorization header elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .tls_certs_merge(extra_roots.clone())
            .build()
            .map_err(build_error)?;
        let local = shared::client_builder()
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

    /// Sends the request that `build` makes, with the shared retries of
    /// throttling and 5xx (see [`shared::send`]).
    pub async fn send(
        &self,
        build: impl Fn() -> RequestBuilder,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        shared::send(build, timeout, "azure-kv").await
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
            "the access token contains bytes an HTTP header cannot carry",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}
