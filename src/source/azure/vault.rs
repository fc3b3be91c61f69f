//! Key Vault's Get Secret operation, `GET {vault}/secrets/{name}/{version}`,
//! its secret bundle and attributes, and its error bodies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::AUTHORIZATION;
use serde::Deserialize;

use super::credential::Token;
use super::http::{bearer, Http, Reply, ADVICE};
use super::{ErrorKind, Options, Resolved, SecretId, SourceError};
use crate::secret::Secret;

/// The Key Vault data-plane API version keyrun requests, the one of the
/// published Get Secret examples.
const API_VERSION: &str = "7.4";

/// A secret bundle: the value, its id (which ends in the version) and its
/// attributes.
#[derive(Deserialize)]
struct SecretBundle {
    value: Option<String>,
    id: Option<String>,
    #[serde(default)]
    attributes: Attributes,
}

/// Secret attributes; the times are seconds since the Unix epoch.
#[derive(Deserialize, Default)]
struct Attributes {
    enabled: Option<bool>,
    nbf: Option<i64>,
    exp: Option<i64>,
    updated: Option<i64>,
}

#[derive(Deserialize, Default)]
struct KeyVaultError {
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
    innererror: Option<InnerError>,
}

#[derive(Deserialize)]
struct InnerError {
    code: Option<String>,
}

impl KeyVaultError {
    fn parse(reply: &Reply) -> KeyVaultError {
        serde_json::from_slice(&reply.body).unwrap_or_default()
    }

    fn code(&self) -> Option<&str> {
        self.error.as_ref()?.code.as_deref()
    }

    fn inner_code(&self) -> Option<&str> {
        self.error.as_ref()?.innererror.as_ref()?.code.as_deref()
    }

    /// `code: message`, on one line, as Key Vault wrote them.
    fn describe(&self) -> String {
        let Some(error) = &self.error else {
            return "no error details in the response".to_string();
        };
        let message = error
            .message
            .as_deref()
            .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "));
        match (&error.code, message) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.clone(),
            (None, Some(message)) => message,
            (None, None) => "no error details in the response".to_string(),
        }
    }
}

/// Reads one secret with `token` and checks its attributes.
pub async fn get_secret(
    http: &Http,
    id: &SecretId,
    token: &Token,
    options: &Options,
) -> Result<Resolved, SourceError> {
    let url = format!("{}?api-version={API_VERSION}", id.url());
    let authorization = bearer(&token.value)?;
    tracing::debug!(vault = %id.base_url, secret = %id.name, "azure-kv: reading secret");

    let reply = http
        .send(
            || {
                http.public()
                    .get(&url)
                    .header(AUTHORIZATION, authorization.clone())
            },
            options.timeout,
        )
        .await
        .map_err(|err| {
            err.into_source_error(
                &format!("Key Vault at {}", id.base_url),
                options.timeout,
                &ADVICE,
            )
        })?;
    drop(authorization);

    if reply.status.is_success() {
        return read_bundle(&reply, id);
    }
    Err(response_error(&reply, id, token))
}

fn read_bundle(reply: &Reply, id: &SecretId) -> Result<Resolved, SourceError> {
    // The parse error is left out of the message, because it could quote
    // part of the value.
    let bundle: SecretBundle = serde_json::from_slice(&reply.body).map_err(|err| {
        SourceError::new(
            ErrorKind::Invalid,
            format!(
                "the response of Key Vault at {} is not a secret bundle (invalid \
                 JSON at line {}, column {})",
                id.base_url,
                err.line(),
                err.column()
            ),
        )
    })?;
    let value = bundle.value.map(|v| Secret::new(v.into_bytes()));
    let attributes = bundle.attributes;
    let secret = describe_secret(id);

    if attributes.enabled == Some(false) {
        return Err(disabled(id));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if let Some(nbf) = attributes.nbf.filter(|&nbf| nbf > now) {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!(
                "{secret} is not valid before {} (its nbf attribute); wait until \
                 then, or change the activation date with `az keyvault secret set-attributes \
                 --id {} --not-before ...`",
                format_time(nbf),
                id.url()
            ),
        ));
    }
    if let Some(exp) = attributes.exp.filter(|&exp| exp <= now) {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!(
                "{secret} expired at {} (its exp attribute); store a new version \
                 of the secret, or extend it with `az keyvault secret set-attributes --id {} \
                 --expires ...`",
                format_time(exp),
                id.url()
            ),
        ));
    }

    let Some(value) = value else {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!("Key Vault returned {secret} without a value"),
        ));
    };
    let mut resolved = Resolved::new(value);
    resolved.version = bundle
        .id
        .as_deref()
        .and_then(|id| id.rsplit('/').next())
        .filter(|version| !version.is_empty())
        .map(str::to_string);
    resolved.created = attributes
        .updated
        .and_then(|secs| u64::try_from(secs).ok())
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
    Ok(resolved)
}

fn response_error(reply: &Reply, id: &SecretId, token: &Token) -> SourceError {
    let error = KeyVaultError::parse(reply);
    let details = error.describe();
    let secret = describe_secret(id);
    let status = reply.status;

    match status.as_u16() {
        401 => SourceError::new(
            ErrorKind::Denied,
            format!(
                "Key Vault at {} rejected the access token of {} (401 \
                 Unauthorized, {details}); the token is for another tenant or resource: set \
                 tenant_id (or AZURE_TENANT_ID) to the vault's tenant",
                id.base_url, token.identity
            ),
        ),
        // NOTE: the inner code `SecretDisabled` for a read of a disabled
        // secret is assumed. No published example of that body was found.
        403 if error.inner_code() == Some("SecretDisabled") => disabled(id),
        403 => SourceError::new(
            ErrorKind::Denied,
            format!(
                "{} may not read {secret} (403 Forbidden, {details}); grant it the \
                 Key Vault Secrets User role on the vault (Azure RBAC), or an access policy \
                 with get permission on secrets",
                token.identity
            ),
        ),
        404 => SourceError::new(
            ErrorKind::NotFound,
            format!(
                "{secret} was not found (404 {}{details}); check the vault, the \
                 name and the version",
                if error.code() == Some("SecretNotFound") {
                    ""
                } else {
                    "Not Found, "
                }
            ),
        ),
        429 => SourceError::new(
            ErrorKind::Unreachable,
            format!(
                "Key Vault at {} throttled {} requests for {secret} (429 Too Many \
                 Requests{}, {details}); try again later, or spread out the reads",
                id.base_url,
                reply.attempts,
                match reply.retry_after {
                    Some(seconds) => format!(", Retry-After: {seconds}s"),
                    None => String::new(),
                }
            ),
        ),
        _ if status.is_server_error() => SourceError::new(
            ErrorKind::Unreachable,
            format!(
                "Key Vault at {} failed {} requests for {secret} ({status}, \
                 {details}); try again later",
                id.base_url, reply.attempts
            ),
        ),
        _ => SourceError::new(
            ErrorKind::Invalid,
            format!(
                "Key Vault at {} returned {status} for {secret} ({details})",
                id.base_url
            ),
        ),
    }
}

fn disabled(id: &SecretId) -> SourceError {
    SourceError::new(
        ErrorKind::Denied,
        format!(
            "{} is disabled; enable it with `az keyvault secret set-attributes \
             --id {} --enabled true`, or name an enabled version",
            describe_secret(id),
            id.url()
        ),
    )
}

/// "secret NAME (version V) in vault VAULT", for messages.
fn describe_secret(id: &SecretId) -> String {
    match &id.version {
        Some(version) => format!("secret {} version {version} in vault {}", id.name, id.vault),
        None => format!("secret {} in vault {}", id.name, id.vault),
    }
}

fn format_time(unix_seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{unix_seconds} (Unix time)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_time_is_rfc3339() {
        assert_eq!(format_time(1493938410), "2017-05-04T22:53:30Z");
    }

    #[test]
    fn error_describe_joins_code_and_message() {
        let error: KeyVaultError = serde_json::from_str(
            r#"{"error":{"code":"Forbidden","message":"Caller is not authorized.\nCaller: appid=x","innererror":{"code":"ForbiddenByRbac"}}}"#,
        )
        .unwrap();
        assert_eq!(
            error.describe(),
            "Forbidden: Caller is not authorized. Caller: appid=x"
        );
        assert_eq!(error.inner_code(), Some("ForbiddenByRbac"));
    }
}
