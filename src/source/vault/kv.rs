//! KV reads: the mount lookup at `sys/internal/ui/mounts/<path>` that tells
//! KV version 1 from version 2, the read itself (`MOUNT/PATH` for version
//! 1, `MOUNT/data/PATH` for version 2), the version 2 metadata, and the
//! choice of a field.

use std::time::SystemTime;

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::client::{common_error, Call, Client, Peer, VaultErrors};
use super::{ErrorKind, KvVersion, Planned, Resolved, SourceError};
use crate::secret::Secret;
use crate::source::http::Reply;

/// The mounts (with a trailing slash) and KV versions that lookups of one
/// session found, so that secrets under one mount cost one lookup.
#[derive(Default)]
pub struct MountCache {
    mounts: Vec<(String, KvVersion)>,
}

/// A secret as read: its fields, and the version metadata of KV version 2.
pub struct KvSecret {
    fields: Vec<(String, Secret)>,
    version: Option<String>,
    created: Option<SystemTime>,
    api_path: String,
}

/// The `data` of a response, for KV version 1 the fields themselves.
#[derive(Deserialize)]
struct Envelope {
    data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The `data` of a KV version 2 read.
#[derive(Deserialize)]
struct Envelope2 {
    data: Option<Data2>,
}

#[derive(Deserialize)]
struct Data2 {
    data: Option<serde_json::Map<String, serde_json::Value>>,
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    created_time: Option<String>,
    #[serde(default)]
    deletion_time: String,
    #[serde(default)]
    destroyed: bool,
    version: Option<u64>,
}

/// The `data` of a `sys/internal/ui/mounts/<path>` response.
#[derive(Deserialize)]
struct MountEnvelope {
    data: Option<MountData>,
}

#[derive(Deserialize)]
struct MountData {
    path: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    options: Option<MountOptions>,
}

#[derive(Deserialize)]
struct MountOptions {
    version: Option<String>,
}

const TOKEN_ADVICE: &str = "log in again (vault login), or set VAULT_TOKEN (or auth) to a \
                            valid token";

/// Reads one planned secret with `token`.
pub async fn read(
    client: &Client,
    peer: &Peer,
    token: &Secret,
    plan: &Planned,
    mounts: &mut MountCache,
) -> Result<KvSecret, SourceError> {
    let (mount, kv) = match plan.options.kv {
        KvVersion::Auto => lookup_mount(client, peer, token, plan, mounts).await?,
        explicit => {
            let first = plan.path.split('/').next().unwrap_or("");
            (format!("{first}/"), explicit)
        }
    };
    if kv == KvVersion::V1 && plan.options.version.is_some() {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!(
                "{} mounts {mount} as KV version 1, which has no versions; remove \
                 version",
                peer.describe()
            ),
        ));
    }
    let api_path = api_path(&plan.path, &mount, kv).ok_or_else(|| {
        SourceError::new(
            ErrorKind::Invalid,
            format!(
                "{} names the mount {mount} itself; add the secret's path after it",
                plan.path
            ),
        )
    })?;

    let query: Vec<(&str, String)> = match plan.options.version {
        Some(version) => vec![("version", version.to_string())],
        None => Vec::new(),
    };
    let reply = client
        .call(
            peer,
            Call {
                method: Method::GET,
                api_path: &encode_path(&api_path),
                query: &query,
                token: Some(token),
                body: None,
            },
            plan.options.timeout,
        )
        .await?;

    if reply.status.is_success() || (reply.status == StatusCode::NOT_FOUND && kv == KvVersion::V2) {
        if let Some(secret) = parse_secret(&reply, kv, &api_path, peer)? {
            return Ok(secret);
        }
    }
    Err(read_error(&reply, peer, &api_path))
}

/// The API path of a secret: `PATH` for KV version 1, `MOUNT/data/REST`
/// for version 2. A path that already spells `MOUNT/data/REST` is kept, so
/// a secret whose own path begins with `data/` is written
/// `MOUNT/data/data/...`. Returns `None` when the path is the mount itself.
pub fn api_path(path: &str, mount: &str, kv: KvVersion) -> Option<String> {
    let rest = path.strip_prefix(mount).filter(|rest| !rest.is_empty())?;
    match kv {
        KvVersion::V2 if rest.starts_with("data/") => Some(path.to_string()),
        KvVersion::V2 => Some(format!("{mount}data/{rest}")),
        _ => Some(path.to_string()),
    }
}

/// Percent-encodes each segment of an API path for the URL.
fn encode_path(path: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    path.split('/')
        .map(|segment| percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

async fn lookup_mount(
    client: &Client,
    peer: &Peer,
    token: &Secret,
    plan: &Planned,
    mounts: &mut MountCache,
) -> Result<(String, KvVersion), SourceError> {
    let with_slash = format!("{}/", plan.path);
    if let Some((mount, kv)) = mounts
        .mounts
        .iter()
        .find(|(mount, _)| with_slash.starts_with(mount.as_str()))
    {
        return Ok((mount.clone(), *kv));
    }

    let api_path = format!("sys/internal/ui/mounts/{}", plan.path);
    let reply = client
        .call(
            peer,
            Call {
                method: Method::GET,
                api_path: &encode_path(&api_path),
                query: &[],
                token: Some(token),
                body: None,
            },
            plan.options.timeout,
        )
        .await?;
    let set_kv = "set kv = 1 or kv = 2 (under [vault] or as ?kv=2) to skip the lookup";

    if !reply.status.is_success() {
        if let Some(err) = common_error(&reply, peer, "GET", &api_path, TOKEN_ADVICE) {
            return Err(err);
        }
        let details = VaultErrors::parse(&reply).describe();
        let (kind, why) = match reply.status {
            StatusCode::FORBIDDEN => (
                ErrorKind::Denied,
                format!(
                    "the token has no capability on {} (403 Forbidden, {details}); grant its \
                     policy read on the secret's path",
                    plan.path
                ),
            ),
            StatusCode::NOT_FOUND => (
                ErrorKind::NotFound,
                format!(
                    "no mount matches {} (404 Not Found, {details}); check the mount name",
                    plan.path
                ),
            ),
            status => (ErrorKind::Invalid, format!("{status}, {details}")),
        };
        return Err(SourceError::new(
            kind,
            format!(
                "cannot tell the KV version: {} (GET /v1/{api_path}): {why}; or \
                 {set_kv}",
                peer.describe()
            ),
        ));
    }

    let unexpected = |what: &str| {
        SourceError::new(
            ErrorKind::Invalid,
            format!(
                "cannot tell the KV version: the response of {} to GET /v1/{api_path} \
                 {what}; {set_kv}",
                peer.describe()
            ),
        )
    };
    let envelope: MountEnvelope =
        serde_json::from_slice(&reply.body).map_err(|_| unexpected("is not mount details"))?;
    let data = envelope.data.ok_or_else(|| unexpected("has no data"))?;
    let mount = data
        .path
        .filter(|mount| with_slash.starts_with(mount.as_str()) && mount.ends_with('/'))
        .ok_or_else(|| unexpected("names no mount that contains the path"))?;
    let version = data.options.and_then(|options| options.version);
    let kv = match version.as_deref() {
        Some("2") => KvVersion::V2,
        _ => KvVersion::V1,
    };
    tracing::debug!(
        mount = %mount,
        kind = data.kind.as_deref().unwrap_or(""),
        kv = if kv == KvVersion::V2 { 2 } else { 1 },
        "vault: mount found"
    );
    mounts.mounts.push((mount.clone(), kv));
    Ok((mount, kv))
}

/// Parses a read's body. Returns `None` for a KV version 2 body that holds
/// neither data nor a deleted version, so the caller reports the status.
fn parse_secret(
    reply: &Reply,
    kv: KvVersion,
    api_path: &str,
    peer: &Peer,
) -> Result<Option<KvSecret>, SourceError> {
    // The parse error is left out of the message, because it could quote
    // part of a value.
    let invalid = |err: serde_json::Error| {
        SourceError::new(
            ErrorKind::Invalid,
            format!(
                "the response of {} to GET /v1/{api_path} is not a KV secret (invalid \
                 JSON at line {}, column {})",
                peer.describe(),
                err.line(),
                err.column()
            ),
        )
    };
    if kv != KvVersion::V2 {
        let envelope: Envelope = serde_json::from_slice(&reply.body).map_err(invalid)?;
        return Ok(envelope.data.map(|data| KvSecret {
            fields: into_fields(data),
            version: None,
            created: None,
            api_path: api_path.to_string(),
        }));
    }

    let envelope: Envelope2 = match serde_json::from_slice(&reply.body) {
        Ok(envelope) => envelope,
        Err(_) if reply.status == StatusCode::NOT_FOUND => return Ok(None),
        Err(err) => return Err(invalid(err)),
    };
    let Some(data) = envelope.data else {
        return Ok(None);
    };
    let metadata = data.metadata;
    let version = metadata.as_ref().and_then(|m| m.version);
    match (data.data, &metadata) {
        (Some(fields), _) => Ok(Some(KvSecret {
            fields: into_fields(fields),
            version: version.map(|v| v.to_string()),
            created: metadata
                .as_ref()
                .and_then(|m| m.created_time.as_deref())
                .and_then(parse_time),
            api_path: api_path.to_string(),
        })),
        (None, Some(metadata)) if metadata.destroyed => Err(SourceError::new(
            ErrorKind::NotFound,
            format!(
                "version {} of {api_path} at {} is destroyed, so its data is gone; \
                 name another version, or write a new one",
                describe_version(version),
                peer.describe()
            ),
        )),
        (None, Some(metadata)) if !metadata.deletion_time.is_empty() => Err(SourceError::new(
            ErrorKind::NotFound,
            format!(
                "version {} of {api_path} at {} was deleted at {}; restore it with \
                 `vault kv undelete -versions={}`, or name another version",
                describe_version(version),
                peer.describe(),
                metadata.deletion_time,
                describe_version(version),
            ),
        )),
        _ => Ok(None),
    }
}

fn describe_version(version: Option<u64>) -> String {
    version.map_or_else(|| "?".to_string(), |v| v.to_string())
}

fn read_error(reply: &Reply, peer: &Peer, api_path: &str) -> SourceError {
    if let Some(err) = common_error(reply, peer, "GET", api_path, TOKEN_ADVICE) {
        return err;
    }
    let details = VaultErrors::parse(reply).describe();
    match reply.status {
        StatusCode::FORBIDDEN => SourceError::new(
            ErrorKind::Denied,
            format!(
                "{} denied GET /v1/{api_path} (403 Forbidden, {details}); the token's \
                 policies need path \"{api_path}\" {{ capabilities = [\"read\"] }}",
                peer.describe()
            ),
        ),
        StatusCode::NOT_FOUND => SourceError::new(
            ErrorKind::NotFound,
            format!(
                "{} has no secret at {api_path} (404 Not Found, {details}); check the \
                 mount, the path, the version and the namespace",
                peer.describe()
            ),
        ),
        status => SourceError::new(
            ErrorKind::Invalid,
            format!(
                "{} returned {status} for GET /v1/{api_path} ({details})",
                peer.describe()
            ),
        ),
    }
}

fn into_fields(data: serde_json::Map<String, serde_json::Value>) -> Vec<(String, Secret)> {
    let mut fields: Vec<(String, Secret)> = data
        .into_iter()
        .map(|(name, value)| {
            let bytes = match value {
                serde_json::Value::String(text) => text.into_bytes(),
                // Numbers, booleans and nested JSON are passed as JSON text.
                other => other.to_string().into_bytes(),
            };
            (name, Secret::new(bytes))
        })
        .collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    fields
}

fn parse_time(text: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

impl KvSecret {
    /// The value of `field`, or of the only field when none is named.
    pub fn select(&self, field: Option<&str>) -> Result<Resolved, SourceError> {
        let names = || {
            self.fields
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let value = match field {
            Some(field) => self
                .fields
                .iter()
                .find(|(name, _)| name == field)
                .map(|(_, value)| value)
                .ok_or_else(|| {
                    SourceError::new(
                        ErrorKind::NotFound,
                        format!(
                            "the secret at {} has no field {field:?}; its fields: \
                             {}",
                            self.api_path,
                            names()
                        ),
                    )
                })?,
            None => match self.fields.as_slice() {
                [(_, value)] => value,
                [] => {
                    return Err(SourceError::new(
                        ErrorKind::NotFound,
                        format!("the secret at {} has no fields", self.api_path),
                    ))
                }
                _ => {
                    return Err(SourceError::new(
                        ErrorKind::Invalid,
                        format!(
                            "the secret at {} has several fields ({}); name one \
                             as #FIELD",
                            self.api_path,
                            names()
                        ),
                    ))
                }
            },
        };
        let mut resolved = Resolved::new(value.duplicate());
        resolved.version = self.version.clone();
        resolved.created = self.created;
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_path_gains_data() {
        assert_eq!(
            api_path("secret/openai", "secret/", KvVersion::V2).as_deref(),
            Some("secret/data/openai")
        );
    }

    #[test]
    fn v2_path_starting_with_data_is_kept() {
        assert_eq!(
            api_path("secret/database/openai", "secret/", KvVersion::V2).as_deref(),
            Some("secret/data/database/openai")
        );
        assert_eq!(
            api_path("secret/data-team", "secret/", KvVersion::V2).as_deref(),
            Some("secret/data/data-team")
        );
    }

    #[test]
    fn v2_spelled_data_is_not_doubled() {
        assert_eq!(
            api_path("secret/data/openai", "secret/", KvVersion::V2).as_deref(),
            Some("secret/data/openai")
        );
    }

    #[test]
    fn nested_mount_and_v1() {
        assert_eq!(
            api_path("kv/team/app", "kv/team/", KvVersion::V2).as_deref(),
            Some("kv/team/data/app")
        );
        assert_eq!(
            api_path("kv/app", "kv/", KvVersion::V1).as_deref(),
            Some("kv/app")
        );
        assert_eq!(api_path("kv", "kv/", KvVersion::V1), None);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_path("secret/data/a b"), "secret/data/a%20b");
    }

    #[test]
    fn created_time_parses_nanoseconds() {
        assert!(parse_time("2018-03-22T02:24:06.945319214Z").is_some());
    }
}
