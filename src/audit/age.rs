//! The key-age policy: `max_age` per variable, profile or configuration,
//! compared with the creation time a source reports (a file's mtime, Key
//! Vault's `updated`, Secrets Manager's `CreatedDate`, Vault's
//! `created_time`).

use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};

use crate::config::{parse_duration, Config, Profile};
use crate::run::Injected;

const DAY: u64 = 86_400;

/// The limit that applies to one variable.
#[derive(Debug, Clone)]
pub struct Limit {
    /// The limit as written, such as `90d`.
    pub text: String,
    pub duration: Duration,
}

/// The policy of one variable.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub limit: Option<Limit>,
    pub enforce: bool,
}

/// Looks up the policy of `var`: the variable's own `max_age`, else the
/// profile's, else the top-level one. `enforce_max_age` comes from the
/// profile, else the top level.
pub fn policy(config: &Config, profile: Option<(&str, &Profile)>, var: &str) -> Result<Policy> {
    let profile = profile.map(|(_, p)| p);
    let text = profile
        .and_then(|p| p.env.get(var))
        .and_then(|v| v.max_age.clone())
        .or_else(|| profile.and_then(|p| p.max_age.clone()))
        .or_else(|| config.file.max_age.clone());
    let limit = match text {
        Some(text) => Some(Limit {
            duration: parse_duration(&text)?,
            text,
        }),
        None => None,
    };
    let enforce = profile
        .and_then(|p| p.enforce_max_age)
        .or(config.file.enforce_max_age)
        .unwrap_or(false);
    Ok(Policy { limit, enforce })
}

/// Computes the age of a value created at `created`. A time in the future
/// counts as new.
pub fn age_of(created: SystemTime) -> Duration {
    SystemTime::now()
        .duration_since(created)
        .unwrap_or(Duration::ZERO)
}

/// Computes the age in whole days, for the audit log.
pub fn age_days(created: SystemTime) -> Option<u64> {
    Some(age_of(created).as_secs() / DAY)
}

/// A value's age against its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The source reports no creation time.
    Unknown,
    /// Within the limit, or no limit is set.
    Fine {
        age: Duration,
    },
    Overdue {
        age: Duration,
        over: Duration,
    },
}

pub fn status(created: Option<SystemTime>, policy: &Policy) -> Status {
    let Some(created) = created else {
        return Status::Unknown;
    };
    let age = age_of(created);
    match &policy.limit {
        Some(limit) if age > limit.duration => Status::Overdue {
            age,
            over: age - limit.duration,
        },
        _ => Status::Fine { age },
    }
}

/// Checks every injected value against its policy: an overdue key is a
/// warning, or an error with `enforce_max_age = true`.
pub fn check_all(
    injected: &[Injected],
    config: &Config,
    profile: Option<(&str, &Profile)>,
) -> Result<()> {
    let mut rejected: Vec<String> = Vec::new();
    for item in injected {
        let policy = policy(config, profile, &item.var)?;
        let Status::Overdue { .. } = status(item.resolved.created, &policy) else {
            continue;
        };
        let message = overdue_message(item, &policy);
        if policy.enforce {
            rejected.push(message);
        } else {
            tracing::warn!("{message}");
        }
    }
    match rejected.len() {
        0 => Ok(()),
        _ => bail!(
            "{}\nkeyrun does not run the command because enforce_max_age = true; rotate the key, or raise max_age",
            rejected.join("\n")
        ),
    }
}

/// Says how overdue a value is and how to rotate it.
pub fn overdue_message(item: &Injected, policy: &Policy) -> String {
    let status = status(item.resolved.created, policy);
    let (Status::Overdue { age, over }, Some(limit)) = (status, &policy.limit) else {
        return String::new();
    };
    format!(
        "{}: the value from {} is {} old, {} over max_age {}; rotate it: {}",
        item.var,
        item.display,
        describe(age),
        describe(over),
        limit.text,
        rotation_hint(&item.scheme)
    )
}

/// Writes a duration in days, or in hours below two days.
pub fn describe(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 2 * DAY {
        format!("{} days", secs / DAY)
    } else if secs >= 2 * 3600 {
        format!("{} hours", secs / 3600)
    } else {
        format!("{} minutes", secs / 60)
    }
}

/// Returns how to put a new key in place, in the terms of each source.
pub fn rotation_hint(scheme: &str) -> &'static str {
    match scheme {
        "file" => "create a new key, write it to the file (`printf %s NEW_KEY > FILE`, `chmod 600`), then revoke the old key",
        "azure-kv" => "create a new key, add it as a new version of the secret (`az keyvault secret set --vault-name VAULT --name NAME --file NEW_KEY_FILE`), then revoke the old key",
        "aws-sm" => "create a new key, store it as a new version (`aws secretsmanager put-secret-value --secret-id ID --secret-string file://NEW_KEY_FILE`), then revoke the old key",
        "vault" => "create a new key, write it as a new version (`vault kv put MOUNT/PATH FIELD=@NEW_KEY_FILE`), then revoke the old key",
        _ => "create a new key, store it where the reference reads it, then revoke the old key",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(days: u64) -> Policy {
        Policy {
            limit: Some(Limit {
                text: format!("{days}d"),
                duration: Duration::from_secs(days * DAY),
            }),
            enforce: false,
        }
    }

    #[test]
    fn overdue_by_the_difference() {
        let created = SystemTime::now() - Duration::from_secs(100 * DAY + 60);
        let Status::Overdue { over, .. } = status(Some(created), &limit(90)) else {
            panic!("a 100-day-old value passed a 90-day limit");
        };
        assert_eq!(over.as_secs() / DAY, 10);
    }

    #[test]
    fn within_limit_is_fine() {
        let created = SystemTime::now() - Duration::from_secs(10 * DAY);
        assert!(matches!(
            status(Some(created), &limit(90)),
            Status::Fine { .. }
        ));
    }

    #[test]
    fn no_creation_time_is_unknown() {
        assert_eq!(status(None, &limit(90)), Status::Unknown);
    }

    #[test]
    fn variable_limit_beats_profile() {
        let config = Config::parse(
            "max_age = \"300d\"\n[profiles.p]\nmax_age = \"90d\"\nenforce_max_age = true\nenv.A = { from = \"env:A\", max_age = \"7d\" }\nenv.B = \"env:B\"\n"
                .to_string(),
            "/tmp/keyrun.toml".into(),
        )
        .unwrap();
        let profile = config
            .file
            .profiles
            .get_key_value("p")
            .map(|(k, v)| (k.as_str(), v));
        let a = policy(&config, profile, "A").unwrap();
        assert_eq!(a.limit.unwrap().text, "7d");
        assert!(a.enforce);
        let b = policy(&config, profile, "B").unwrap();
        assert_eq!(b.limit.unwrap().text, "90d");
        let top = policy(&config, None, "B").unwrap();
        assert_eq!(top.limit.unwrap().text, "300d");
        assert!(!top.enforce);
    }
}
