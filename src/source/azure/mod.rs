//! `azure-kv:VAULT/NAME[/VERSION]`: a secret from Azure Key Vault.
//!
//! VAULT is a vault name (`https://VAULT.vault.azure.net`) or, when it
//! contains a dot or a colon, a host with an optional port
//! (`https://HOST[:PORT]`) for sovereign clouds and tests.
//!
//! keyrun speaks the Key Vault REST API (`GET /secrets/{name}/{version}`)
//! and the Microsoft identity platform token endpoints itself, over the
//! reqwest client with rustls that the crate already uses, instead of the
//! official `azure_identity` and `azure_security_keyvault_secrets` crates.
//! Those crates could meet the bare requirements (azure_core 1.x defaults to
//! reqwest with rustls and accepts a custom transport, so a custom CA can be
//! added), but:
//!
//! - the secrets client's challenge authorizer sends each client's first
//!   request without a token to learn the scope from the `WWW-Authenticate`
//!   challenge. That is one more round trip per vault than the API needs.
//!   It also rejects a challenge whose resource host is not a suffix of the
//!   vault's host unless that check is turned off, as a loopback vault
//!   requires;
//! - the order of the credential chain, the rule that the instance metadata
//!   endpoint is never probed unless asked for, the list of what `auto`
//!   tried, and the environment variables to remove from the child all need
//!   control that a wrapped credential does not give;
//! - the identity platform's `error` and `error_description` and Key Vault's
//!   `error.code` and `innererror.code` are read here as typed JSON fields,
//!   so each failure gets its own message and fix;
//! - tokens and values stay in zeroizing [`Secret`] buffers from the moment
//!   they are parsed, where azure_core keeps tokens in plain `String`s.
//!
//! Authentication is chosen by `auth`: `secret` (`AZURE_CLIENT_SECRET`),
//! `workload` (`AZURE_FEDERATED_TOKEN_FILE`), `managed` (`IDENTITY_ENDPOINT`
//! and `IDENTITY_HEADER`, else the instance metadata endpoint), `cli`
//! (`az account get-access-token`), or `auto`, which tries them in that order
//! but skips the instance metadata endpoint.

mod credential;
mod http;
mod vault;

use std::time::Duration;

use super::{Context, ErrorKind, Request, Resolved, Source, SourceError};
use crate::config::Settings;
use crate::reference::Reference;

pub const SETTINGS: &[&str] = &["auth", "tenant_id", "client_id", "timeout"];

/// The total time one exchange with Key Vault or a token endpoint may take,
/// retries included.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The Key Vault resource of the public cloud, used for hosts that do not
/// name their cloud (loopback, custom domains).
const PUBLIC_RESOURCE: &str = "https://vault.azure.net";

pub struct AzureSource;

/// An authentication method for Key Vault access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Auto,
    Secret,
    Workload,
    Managed,
    Cli,
}

impl AuthMethod {
    fn parse(text: &str) -> Option<AuthMethod> {
        match text {
            "auto" => Some(AuthMethod::Auto),
            "secret" => Some(AuthMethod::Secret),
            "workload" => Some(AuthMethod::Workload),
            "managed" => Some(AuthMethod::Managed),
            "cli" => Some(AuthMethod::Cli),
            _ => None,
        }
    }
}

/// The merged settings of one reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub auth: AuthMethod,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub timeout: Duration,
}

/// A parsed `azure-kv:` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretId {
    /// The vault as written in the reference.
    pub vault: String,
    /// `https://HOST[:PORT]`, without a trailing slash.
    pub base_url: String,
    pub name: String,
    pub version: Option<String>,
}

impl SecretId {
    pub fn parse(reference: &Reference) -> Result<SecretId, SourceError> {
        let invalid = |why: &str| {
            SourceError::new(
                ErrorKind::Invalid,
                format!(
                    "{reference}: {why}; write azure-kv:VAULT/NAME or azure-kv:VAULT/NAME/VERSION, \
                     for example azure-kv:myvault/openai-api-key"
                ),
            )
        };
        if reference.field.is_some() {
            return Err(invalid("azure-kv: takes no #FIELD"));
        }
        let parts: Vec<&str> = reference.rest.split('/').collect();
        let (vault, name, version) = match parts.as_slice() {
            [vault, name] => (*vault, *name, None),
            [vault, name, version] => (*vault, *name, Some(*version)),
            _ => return Err(invalid("expected a vault and a secret name")),
        };
        if vault.is_empty() || name.is_empty() || version == Some("") {
            return Err(invalid(
                "the vault, the name and the version must not be empty",
            ));
        }

        let is_host = vault.contains('.') || vault.contains(':');
        let vault_chars_ok = vault.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '-' || (is_host && matches!(c, '.' | ':' | '[' | ']'))
        });
        if !vault_chars_ok {
            return Err(invalid(&format!("{vault:?} is not a vault name or host")));
        }
        // Key Vault allows letters, digits and dashes in secret names and
        // hex digits in versions, so neither can change the request path.
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(invalid(&format!(
                "{name:?} is not a Key Vault secret name (letters, digits and -)"
            )));
        }
        if let Some(version) = version {
            if !version.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(invalid(&format!(
                    "{version:?} is not a Key Vault secret version (letters and digits)"
                )));
            }
        }

        let base_url = if is_host {
            format!("https://{vault}")
        } else {
            format!("https://{vault}.vault.azure.net")
        };
        Ok(SecretId {
            vault: vault.to_string(),
            base_url,
            name: name.to_string(),
            version: version.map(str::to_string),
        })
    }

    /// Derives the resource that a token for this vault is requested for:
    /// the Key Vault resource of the host's cloud, such as
    /// `https://vault.azure.cn` for `x.vault.azure.cn`.
    pub fn resource(&self) -> String {
        let host = self.base_url.trim_start_matches("https://");
        let host = host.split(':').next().unwrap_or(host);
        match host.split_once(".vault.") {
            Some((_, cloud)) if !cloud.is_empty() => format!("https://vault.{cloud}"),
            _ => PUBLIC_RESOURCE.to_string(),
        }
    }

    /// The secret's URL without the API version, as `az keyvault secret
    /// --id` takes it.
    pub fn url(&self) -> String {
        match &self.version {
            Some(version) => format!("{}/secrets/{}/{version}", self.base_url, self.name),
            None => format!("{}/secrets/{}", self.base_url, self.name),
        }
    }
}

fn read_options(settings: &Settings<'_>, reference: &Reference) -> Result<Options, SourceError> {
    let invalid =
        |err: anyhow::Error| SourceError::new(ErrorKind::Invalid, format!("{reference}: {err:#}"));
    let auth = match settings.string("auth").map_err(invalid)? {
        None => AuthMethod::Auto,
        Some(text) => AuthMethod::parse(&text).ok_or_else(|| {
            SourceError::new(
                ErrorKind::Invalid,
                format!(
                    "{reference}: auth = {text:?} is not an Azure authentication method; \
                     use auto, secret, workload, managed or cli"
                ),
            )
        })?,
    };
    Ok(Options {
        auth,
        tenant_id: settings.string("tenant_id").map_err(invalid)?,
        client_id: settings.string("client_id").map_err(invalid)?,
        timeout: settings
            .duration("timeout")
            .map_err(invalid)?
            .unwrap_or(DEFAULT_TIMEOUT),
    })
}

/// One distinct secret of a batch and the requests that name it.
/// References that differ only in options that merge to the same settings
/// share one plan.
struct Planned {
    id: SecretId,
    options: Options,
    indexes: Vec<usize>,
}

impl Source for AzureSource {
    fn resolve(
        &self,
        requests: &[&Request],
        context: &mut Context<'_>,
    ) -> Vec<Result<Resolved, SourceError>> {
        let mut results: Vec<Option<Result<Resolved, SourceError>>> =
            requests.iter().map(|_| None).collect();
        let mut planned: Vec<Planned> = Vec::new();

        for (index, request) in requests.iter().enumerate() {
            let reference = &request.reference;
            let parsed = SecretId::parse(reference).and_then(|id| {
                let options = read_options(&context.settings("azure", request), reference)?;
                Ok((id, options))
            });
            match parsed {
                Err(err) => results[index] = Some(Err(err)),
                Ok((id, options)) => {
                    match planned
                        .iter_mut()
                        .find(|p| p.id == id && p.options == options)
                    {
                        Some(same) => same.indexes.push(index),
                        None => planned.push(Planned {
                            id,
                            options,
                            indexes: vec![index],
                        }),
                    }
                }
            }
        }

        if !planned.is_empty() {
            let fetched = match context.runtime.get() {
                Ok(runtime) => runtime.block_on(fetch_all(&planned)),
                Err(err) => Err(err),
            };
            match fetched {
                Ok(fetched) => {
                    for (plan, result) in planned.iter().zip(fetched) {
                        for &index in &plan.indexes {
                            let reference = &requests[index].reference;
                            results[index] = Some(copy_result(&result, reference));
                        }
                    }
                }
                // The runtime and the HTTP clients serve the whole batch, so
                // their errors name no reference.
                Err(err) => {
                    for plan in &planned {
                        for &index in &plan.indexes {
                            results[index] = Some(Err(copy_error(&err)));
                        }
                    }
                }
            }
        }

        results
            .into_iter()
            .map(|slot| {
                slot.unwrap_or_else(|| {
                    Err(SourceError::new(
                        ErrorKind::Invalid,
                        "azure-kv: a request was left unresolved",
                    ))
                })
            })
            .collect()
    }
}

/// Fetches each distinct secret, sharing one token among the secrets that
/// use the same settings and cloud. The HTTP clients are dropped on return,
/// so no pooled connection outlives the batch.
///
/// Returns one result per plan. One token serves several plans and one
/// read several references, so those errors name no reference. The error
/// of the HTTP clients' setup fails the whole batch.
async fn fetch_all(planned: &[Planned]) -> Result<Vec<Result<Resolved, SourceError>>, SourceError> {
    let env = credential::Env::capture();
    let http = http::Http::new()?;

    let mut tokens: Vec<((Options, String), Result<credential::Token, SourceError>)> = Vec::new();
    let mut results = Vec::with_capacity(planned.len());
    for plan in planned {
        let key = (plan.options.clone(), plan.id.resource());
        let position = match tokens.iter().position(|(k, _)| *k == key) {
            Some(position) => position,
            None => {
                let token = credential::acquire(&http, &env, &plan.options, &key.1).await;
                tokens.push((key, token));
                tokens.len() - 1
            }
        };
        let result = match &tokens[position].1 {
            Err(err) => Err(copy_error(err)),
            Ok(token) => vault::get_secret(&http, &plan.id, token, &plan.options)
                .await
                .map(|mut resolved| {
                    resolved.credential_env = env.credential_env();
                    resolved
                }),
        };
        results.push(result);
    }
    Ok(results)
}

fn copy_error(err: &SourceError) -> SourceError {
    SourceError::new(err.kind, err.message.clone())
}

/// Copies a plan's result for one of its requests, whose reference an
/// error then names.
fn copy_result(
    result: &Result<Resolved, SourceError>,
    reference: &Reference,
) -> Result<Resolved, SourceError> {
    match result {
        Err(err) => Err(err.for_reference(reference)),
        Ok(resolved) => Ok(Resolved {
            value: resolved.value.duplicate(),
            version: resolved.version.clone(),
            created: resolved.created,
            credential_env: resolved.credential_env.clone(),
            value_env: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> Result<SecretId, SourceError> {
        SecretId::parse(&Reference::parse(text).unwrap())
    }

    #[test]
    fn vault_name_maps_to_public_cloud() {
        let id = id("azure-kv:myvault/openai").unwrap();
        assert_eq!(id.base_url, "https://myvault.vault.azure.net");
        assert_eq!(id.name, "openai");
        assert_eq!(id.version, None);
        assert_eq!(id.resource(), "https://vault.azure.net");
    }

    #[test]
    fn host_with_port_is_kept() {
        let id = id("azure-kv:127.0.0.1:8443/openai/0123abcd").unwrap();
        assert_eq!(id.base_url, "https://127.0.0.1:8443");
        assert_eq!(id.version.as_deref(), Some("0123abcd"));
        assert_eq!(id.resource(), "https://vault.azure.net");
    }

    #[test]
    fn sovereign_host_names_its_resource() {
        let id = id("azure-kv:kv1.vault.azure.cn/openai").unwrap();
        assert_eq!(id.resource(), "https://vault.azure.cn");
    }

    #[test]
    fn malformed_references_are_rejected() {
        for text in [
            "azure-kv:myvault",
            "azure-kv:myvault/",
            "azure-kv:myvault/a/b/c",
            "azure-kv:myvault/na.me",
            "azure-kv:my_vault/name",
            "azure-kv:myvault/name/ver-1",
            "azure-kv:myvault/name#field",
        ] {
            let err = id(text).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Invalid, "{text}");
        }
    }

    #[test]
    fn url_includes_version() {
        let id = id("azure-kv:v/n/abc").unwrap();
        assert_eq!(id.url(), "https://v.vault.azure.net/secrets/n/abc");
    }
}
