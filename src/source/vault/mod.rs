//! `vault:MOUNT/PATH[?OPTIONS][#FIELD]`: a field of a KV secret in
//! HashiCorp Vault or OpenBao, which keeps the same HTTP API.
//!
//! keyrun speaks Vault's HTTP API (`/v1/...`) itself, over the reqwest
//! client with rustls that the crate already uses, so no `vault` binary is
//! needed and tokens and values stay in zeroizing [`Secret`] buffers from
//! the moment they are parsed.
//!
//! A batch costs one login per address, namespace and auth setting where the
//! auth method has a login. It adds one `sys/internal/ui/mounts/<path>`
//! lookup per mount when `kv = "auto"`, one read per distinct secret path
//! and version, and one `auth/token/revoke-self` for a token obtained by
//! login.

mod auth;
mod client;
mod kv;

use std::time::Duration;

use super::{Context, ErrorKind, Request, Resolved, Source, SourceError};
use crate::config::Settings;
use crate::reference::Reference;

pub const SETTINGS: &[&str] = &[
    "address",
    "namespace",
    "kv",
    "version",
    "auth",
    "auth_mount",
    "role",
    "role_id",
    "role_id_file",
    "secret_id_file",
    "jwt_audience",
    "jwt_env",
    "jwt_file",
    "timeout",
    "allow_http",
];

/// The total time one exchange with Vault may take, retries included.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The address the Vault CLI uses when `VAULT_ADDR` is not set.
const DEFAULT_ADDRESS: &str = "https://127.0.0.1:8200";

pub struct VaultSource;

/// The KV secrets engine version of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvVersion {
    /// Ask `sys/internal/ui/mounts/<path>`, as the Vault CLI does.
    Auto,
    V1,
    V2,
}

/// An auth method, as `auth` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    Token,
    AppRole,
    Jwt,
    Kubernetes,
}

impl AuthMethod {
    fn parse(text: &str) -> Option<AuthMethod> {
        match text {
            "token" => Some(AuthMethod::Token),
            "approle" => Some(AuthMethod::AppRole),
            "jwt" => Some(AuthMethod::Jwt),
            "kubernetes" => Some(AuthMethod::Kubernetes),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Token => "token",
            AuthMethod::AppRole => "approle",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Kubernetes => "kubernetes",
        }
    }
}

/// The settings that decide how keyrun logs in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthOptions {
    pub method: AuthMethod,
    /// The auth method's mount path, as in `auth/<mount>/login`.
    pub mount: String,
    pub role: Option<String>,
    pub role_id: Option<String>,
    pub role_id_file: Option<String>,
    pub secret_id_file: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_env: Option<String>,
    pub jwt_file: Option<String>,
}

/// The merged settings of one reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Options {
    /// The Vault address without a trailing slash, such as
    /// `https://vault.example.com:8200`.
    pub address: String,
    pub namespace: Option<String>,
    pub kv: KvVersion,
    pub version: Option<u64>,
    pub auth: AuthOptions,
    pub timeout: Duration,
}

impl Options {
    /// Returns the part of the options that one login serves.
    fn session_key(&self) -> (String, Option<String>, AuthOptions, Duration) {
        (
            self.address.clone(),
            self.namespace.clone(),
            self.auth.clone(),
            self.timeout,
        )
    }
}

/// Splits a reference's rest into its path segments, rejecting empty, `.`
/// and `..` segments, which Vault would clean into another path.
fn parse_path(reference: &Reference) -> Result<String, SourceError> {
    let invalid = |why: String| {
        SourceError::new(
            ErrorKind::Invalid,
            format!(
                "{reference}: {why}; write vault:MOUNT/PATH#FIELD, for example \
                 vault:secret/openai#api_key"
            ),
        )
    };
    let trimmed = reference.rest.trim_matches('/');
    let segments: Vec<&str> = trimmed.split('/').collect();
    if segments.len() < 2 {
        return Err(invalid("expected a mount and a secret path".to_string()));
    }
    if let Some(bad) = segments
        .iter()
        .find(|s| s.is_empty() || **s == "." || **s == "..")
    {
        return Err(invalid(format!("the path segment {bad:?} is not allowed")));
    }
    if trimmed.chars().any(|c| c.is_control()) {
        return Err(invalid("the path contains a control character".to_string()));
    }
    Ok(trimmed.to_string())
}

fn read_options(settings: &Settings<'_>, reference: &Reference) -> Result<Options, SourceError> {
    let invalid =
        |err: anyhow::Error| SourceError::new(ErrorKind::Invalid, format!("{reference}: {err:#}"));
    let bad =
        |message: String| SourceError::new(ErrorKind::Invalid, format!("{reference}: {message}"));
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());

    let address = settings
        .string("address")
        .map_err(invalid)?
        .or_else(|| env("VAULT_ADDR"))
        .unwrap_or_else(|| DEFAULT_ADDRESS.to_string());
    let allow_http = settings
        .bool("allow_http")
        .map_err(invalid)?
        .unwrap_or(false);
    let address = client::check_address(&address, allow_http).map_err(bad)?;

    let namespace = settings
        .string("namespace")
        .map_err(invalid)?
        .or_else(|| env("VAULT_NAMESPACE"))
        .map(|ns| ns.trim_matches('/').to_string())
        .filter(|ns| !ns.is_empty());

    let kv = match settings.string("kv").map_err(invalid)?.as_deref() {
        None | Some("auto") => KvVersion::Auto,
        Some("1") => KvVersion::V1,
        Some("2") => KvVersion::V2,
        Some(other) => {
            return Err(bad(format!(
                "kv = {other:?} is not a KV version; use 1, 2 or auto"
            )))
        }
    };
    let version = match settings.string("version").map_err(invalid)? {
        None => None,
        Some(text) => match text.parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(bad(format!(
                    "version = {text:?} is not a KV version number; use a whole number from 1"
                )))
            }
        },
    };
    if version.is_some() && kv == KvVersion::V1 {
        return Err(bad(
            "version applies to KV version 2 only, and kv = 1 is set".to_string(),
        ));
    }

    let method = match settings.string("auth").map_err(invalid)? {
        None => AuthMethod::Token,
        Some(text) => AuthMethod::parse(&text).ok_or_else(|| {
            bad(format!(
                "auth = {text:?} is not a Vault auth method; use token, approle, jwt or kubernetes"
            ))
        })?,
    };
    let mount = settings
        .string("auth_mount")
        .map_err(invalid)?
        .map(|m| m.trim_matches('/').to_string())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| method.name().to_string());
    let auth = AuthOptions {
        method,
        mount,
        role: settings.string("role").map_err(invalid)?,
        role_id: settings.string("role_id").map_err(invalid)?,
        role_id_file: settings.string("role_id_file").map_err(invalid)?,
        secret_id_file: settings.string("secret_id_file").map_err(invalid)?,
        jwt_audience: settings.string("jwt_audience").map_err(invalid)?,
        jwt_env: settings.string("jwt_env").map_err(invalid)?,
        jwt_file: settings.string("jwt_file").map_err(invalid)?,
    };
    if matches!(method, AuthMethod::Jwt | AuthMethod::Kubernetes) && auth.role.is_none() {
        return Err(bad(format!(
            "auth = \"{}\" needs role, the Vault role to log in as; set role under [vault] or \
             as ?role=NAME",
            method.name()
        )));
    }

    Ok(Options {
        address,
        namespace,
        kv,
        version,
        auth,
        timeout: settings
            .duration("timeout")
            .map_err(invalid)?
            .unwrap_or(DEFAULT_TIMEOUT),
    })
}

/// One distinct secret read of a batch, and the requests (with their
/// fields) that it serves.
pub struct Planned {
    pub path: String,
    pub options: Options,
    pub requests: Vec<(usize, Option<String>)>,
}

impl Source for VaultSource {
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
            let parsed = parse_path(reference).and_then(|path| {
                let options = read_options(&context.settings("vault", request), reference)?;
                Ok((path, options))
            });
            match parsed {
                Err(err) => results[index] = Some(Err(err)),
                Ok((path, options)) => {
                    let field = reference.field.clone();
                    match planned
                        .iter_mut()
                        .find(|p| p.path == path && p.options == options)
                    {
                        Some(same) => same.requests.push((index, field)),
                        None => planned.push(Planned {
                            path,
                            options,
                            requests: vec![(index, field)],
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
                    for (index, result) in fetched {
                        let reference = &requests[index].reference;
                        results[index] = Some(result.map_err(|err| err.for_reference(reference)));
                    }
                }
                // The runtime and the HTTP client serve the whole batch, so
                // their errors name no reference.
                Err(err) => {
                    for plan in &planned {
                        for (index, _) in &plan.requests {
                            results[*index] = Some(Err(copy_error(&err)));
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
                        "vault: a request was left unresolved",
                    ))
                })
            })
            .collect()
    }
}

/// Reads every planned secret, one login per session (address, namespace
/// and auth settings), and revokes each token obtained by login once its
/// reads are done. The HTTP client is dropped on return, so no pooled
/// connection outlives the batch.
///
/// Returns the result of each request by its index. One login serves
/// several plans and one read several requests, so those errors name no
/// reference. The error of the HTTP client's setup fails the whole batch.
async fn fetch_all(
    planned: &[Planned],
) -> Result<Vec<(usize, Result<Resolved, SourceError>)>, SourceError> {
    let mut results = Vec::new();
    let client = client::Client::new()?;

    let mut sessions: Vec<(_, Vec<&Planned>)> = Vec::new();
    for plan in planned {
        let key = plan.options.session_key();
        match sessions.iter_mut().find(|(k, _)| *k == key) {
            Some((_, plans)) => plans.push(plan),
            None => sessions.push((key, vec![plan])),
        }
    }

    for (_, plans) in sessions {
        let first = plans[0];
        let peer = client::Peer::new(&first.options);
        match auth::obtain(&client, &peer, &first.options).await {
            Err(err) => {
                for plan in &plans {
                    for (index, _) in &plan.requests {
                        results.push((*index, Err(copy_error(&err))));
                    }
                }
            }
            Ok(token) => {
                let mut mounts = kv::MountCache::default();
                for plan in &plans {
                    let read = kv::read(&client, &peer, &token.value, plan, &mut mounts).await;
                    for (index, field) in &plan.requests {
                        let result = match &read {
                            Err(err) => Err(copy_error(err)),
                            Ok(secret) => secret.select(field.as_deref()).map(|mut resolved| {
                                resolved.credential_env = token.credential_env.clone();
                                resolved
                            }),
                        };
                        results.push((*index, result));
                    }
                }
                if token.from_login {
                    auth::revoke(&client, &peer, &token, &first.options).await;
                }
            }
        }
    }
    Ok(results)
}

fn copy_error(err: &SourceError) -> SourceError {
    SourceError::new(err.kind, err.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> Result<String, SourceError> {
        parse_path(&Reference::parse(text).unwrap())
    }

    #[test]
    fn path_keeps_segments() {
        assert_eq!(path("vault:secret/openai").unwrap(), "secret/openai");
        assert_eq!(path("vault:/kv/team/app/").unwrap(), "kv/team/app");
    }

    #[test]
    fn malformed_paths_are_rejected() {
        for text in [
            "vault:secret",
            "vault:secret//openai",
            "vault:secret/../sys/policy",
            "vault:secret/./openai",
        ] {
            let err = path(text).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Invalid, "{text}");
        }
    }
}
