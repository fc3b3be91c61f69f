//! The TOML configuration: where it is found, whether it is trusted, its
//! profiles, and the per-source sections whose settings merge per value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::reference::Reference;
use crate::source;
use crate::trust;

/// A source's settings section (`[file]`, `[profiles.NAME.command]`), kept
/// with the position of each key so an unknown key can be reported by line.
pub type Section = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
    pub keep_backend_env: Option<bool>,
    pub file: Option<Section>,
    pub command: Option<Section>,
    pub azure: Option<Section>,
    pub aws: Option<Section>,
    pub vault: Option<Section>,
    pub audit: Option<AuditSection>,
    /// The key-age limit of every profile and variable that sets none.
    pub max_age: Option<String>,
    pub enforce_max_age: Option<bool>,
}

/// The `[audit]` table: where the access log goes and how strictly.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// A file, or `-` for stderr; `KEYRUN_AUDIT_LOG` overrides it.
    pub path: Option<String>,
    /// Whether a log that cannot be written stops the run (default true).
    pub required: Option<bool>,
    /// Whether records carry the command's full argument list, not only
    /// argv[0] (default false, since arguments can contain secrets).
    pub log_args: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub env: BTreeMap<String, Variable>,
    #[serde(default)]
    pub unset: Vec<String>,
    pub clean_env: Option<bool>,
    pub keep_backend_env: Option<bool>,
    /// The masking mode for the child's output: auto, always or never.
    pub mask: Option<crate::cli::MaskMode>,
    /// The text that replaces a masked value (default `***`).
    pub mask_with: Option<String>,
    /// How long output that may still grow into a match is held before it
    /// is written unmasked, such as `20ms`.
    pub mask_delay: Option<String>,
    /// Whether to register the values with the CI runner's log masking.
    pub ci_mask: Option<bool>,
    pub file: Option<Section>,
    pub command: Option<Section>,
    pub azure: Option<Section>,
    pub aws: Option<Section>,
    pub vault: Option<Section>,
    pub max_age: Option<String>,
    pub enforce_max_age: Option<bool>,
    /// `openai` or `azure`: the header style of `keyrun check --online`.
    pub api_style: Option<String>,
}

/// Lists the source sections present in a file's top level or a profile,
/// by the section name that `source::section_keys` knows.
macro_rules! sections_of {
    ($holder:expr) => {{
        let holder = $holder;
        let all: [(&'static str, Option<&Section>); 5] = [
            ("file", holder.file.as_ref()),
            ("command", holder.command.as_ref()),
            ("azure", holder.azure.as_ref()),
            ("aws", holder.aws.as_ref()),
            ("vault", holder.vault.as_ref()),
        ];
        all.into_iter()
            .filter_map(|(name, section)| section.map(|s| (name, s)))
            .collect::<Vec<(&'static str, &Section)>>()
    }};
}

impl ConfigFile {
    pub fn sections(&self) -> Vec<(&'static str, &Section)> {
        sections_of!(self)
    }
}

impl Profile {
    pub fn sections(&self) -> Vec<(&'static str, &Section)> {
        sections_of!(self)
    }
}

/// One injected variable: a reference and its per-variable settings.
#[derive(Debug, Clone, Default)]
pub struct Variable {
    pub from: String,
    pub raw: bool,
    /// The key-age limit of this variable, such as `90d`.
    pub max_age: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VariableTable {
    from: String,
    #[serde(default)]
    raw: bool,
    max_age: Option<String>,
}

impl<'de> Deserialize<'de> for Variable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VariableVisitor;

        impl<'de> Visitor<'de> for VariableVisitor {
            type Value = Variable;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a reference string or a table with `from`")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Variable, E> {
                Ok(Variable {
                    from: text.to_string(),
                    raw: false,
                    max_age: None,
                })
            }

            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Variable, M::Error> {
                let table = VariableTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Variable {
                    from: table.from,
                    raw: table.raw,
                    max_age: table.max_age,
                })
            }
        }

        deserializer.deserialize_any(VariableVisitor)
    }
}

/// A loaded configuration file, or none.
#[derive(Debug, Default)]
pub struct Config {
    pub file: ConfigFile,
    /// The file it came from; `None` when no file was found.
    pub path: Option<PathBuf>,
    text: String,
}

/// Where a configuration was found, which decides whether it needs trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// `--config` or `KEYRUN_CONFIG`: the user named it.
    Explicit,
    /// `./keyrun.toml`: it came with the repository.
    WorkingDirectory,
    /// The user's own configuration folder.
    User,
}

impl Config {
    /// Finds and loads the configuration: `--config` (or `KEYRUN_CONFIG`,
    /// which clap folds into the same flag), `./keyrun.toml`, then the
    /// user's configuration folder.
    pub fn discover(explicit: Option<&Path>) -> Result<Config> {
        let found = match explicit {
            Some(path) => Some((path.to_path_buf(), Origin::Explicit)),
            None => find_implicit(),
        };
        let Some((path, origin)) = found else {
            tracing::debug!("no configuration file found");
            return Ok(Config::default());
        };

        let text = read_text_file(&path, MAX_CONFIG_BYTES).with_context(|| {
            format!(
                "cannot read the configuration file {}; check the path given to --config or KEYRUN_CONFIG",
                path.display()
            )
        })?;

        if origin == Origin::WorkingDirectory && !trust::ci_counts_as_trust() {
            trust::require_trusted(&path, text.as_bytes())?;
        }

        tracing::debug!(path = %path.display(), "loading configuration");
        Config::parse(text, path)
    }

    pub fn parse(text: String, path: PathBuf) -> Result<Config> {
        let file: ConfigFile = toml::from_str(&text)
            .map_err(|err| anyhow::anyhow!("{}", describe_toml_error(&path, &text, &err)))?;
        let config = Config {
            file,
            path: Some(path),
            text,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: the keys of each source section, every
    /// reference, and that the default profile exists.
    fn validate(&self) -> Result<()> {
        self.validate_sections(&self.file.sections(), "")?;
        for (name, profile) in &self.file.profiles {
            self.validate_sections(&profile.sections(), &format!("profiles.{name}."))?;
            for (var, variable) in &profile.env {
                let reference = Reference::parse(&variable.from).map_err(|err| {
                    anyhow::anyhow!("{}: profiles.{name}.env.{var}: {err}", self.describe_path())
                })?;
                source::check_reference(&reference).map_err(|message| {
                    anyhow::anyhow!(
                        "{}: profiles.{name}.env.{var}: {message}",
                        self.describe_path()
                    )
                })?;
            }
            if let Some(delay) = &profile.mask_delay {
                parse_duration(delay).map_err(|err| {
                    anyhow::anyhow!(
                        "{}: profiles.{name}.mask_delay: {err}",
                        self.describe_path()
                    )
                })?;
            }
        }
        self.validate_policy()?;
        if let Some(default) = &self.file.default_profile {
            if !self.file.profiles.contains_key(default) {
                bail!(
                    "{}: default_profile = {default:?} names no profile; profiles defined: {}",
                    self.describe_path(),
                    self.profile_names()
                );
            }
        }
        Ok(())
    }

    /// Checks every `max_age` and `api_style`, naming the key that contains
    /// an invalid one.
    fn validate_policy(&self) -> Result<()> {
        let mut ages: Vec<(String, &str)> = Vec::new();
        ages.extend(
            self.file
                .max_age
                .iter()
                .map(|a| ("max_age".to_string(), a.as_str())),
        );
        for (name, profile) in &self.file.profiles {
            if let Some(age) = &profile.max_age {
                ages.push((format!("profiles.{name}.max_age"), age));
            }
            for (var, variable) in &profile.env {
                if let Some(age) = &variable.max_age {
                    ages.push((format!("profiles.{name}.env.{var}.max_age"), age));
                }
            }
            if let Some(style) = &profile.api_style {
                if style != "openai" && style != "azure" {
                    bail!(
                        "{}: profiles.{name}.api_style = {style:?} is invalid; use \"openai\" or \"azure\"",
                        self.describe_path()
                    );
                }
            }
        }
        for (key, age) in ages {
            parse_duration(age).with_context(|| format!("{}: {key}", self.describe_path()))?;
        }
        Ok(())
    }

    fn validate_sections(&self, sections: &[(&str, &Section)], prefix: &str) -> Result<()> {
        for (section_name, section) in sections {
            let known = source::section_keys(section_name);
            for key in section.keys() {
                if !known.contains(&key.get_ref().as_str()) {
                    bail!(
                        "{}, line {}: unknown key `{prefix}{section_name}.{}`; known keys there: {}",
                        self.describe_path(),
                        self.line_of(key.span().start),
                        key.get_ref(),
                        known.join(", ")
                    );
                }
            }
        }
        Ok(())
    }

    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn describe_path(&self) -> String {
        match &self.path {
            Some(path) => path.display().to_string(),
            None => "the configuration".to_string(),
        }
    }

    pub fn profile_names(&self) -> String {
        if self.file.profiles.is_empty() {
            return "none".to_string();
        }
        let names: Vec<&str> = self.file.profiles.keys().map(String::as_str).collect();
        names.join(", ")
    }

    /// Looks up a profile by name; an unknown name is an error that lists
    /// the profiles there are.
    #[cfg(test)]
    pub fn profile(&self, name: &str) -> Result<&Profile> {
        self.file
            .profiles
            .get(name)
            .ok_or_else(|| self.unknown_profile(name))
    }

    /// The error for a profile name this configuration does not define.
    pub fn unknown_profile(&self, name: &str) -> anyhow::Error {
        match &self.path {
            Some(path) => anyhow::anyhow!(
                "unknown profile {name:?} in {}; profiles defined there: {}",
                path.display(),
                self.profile_names()
            ),
            None => anyhow::anyhow!(
                "unknown profile {name:?}: no configuration file was found (looked for --config, KEYRUN_CONFIG, ./keyrun.toml and {})",
                user_config_path().map(|p| p.display().to_string()).unwrap_or_else(|| "~/.config/keyrun/config.toml".into())
            ),
        }
    }

    /// The folder that relative `file:` paths in this configuration are
    /// resolved against.
    pub fn base_dir(&self) -> Option<PathBuf> {
        let path = self.path.as_ref()?;
        let parent = path.parent()?;
        if parent.as_os_str().is_empty() {
            return std::env::current_dir().ok();
        }
        std::path::absolute(parent).ok()
    }
}

fn find_implicit() -> Option<(PathBuf, Origin)> {
    let local = PathBuf::from("keyrun.toml");
    if local.is_file() {
        let absolute = std::path::absolute(&local).unwrap_or(local);
        return Some((absolute, Origin::WorkingDirectory));
    }
    let user = user_config_path()?;
    user.is_file().then_some((user, Origin::User))
}

/// `$XDG_CONFIG_HOME/keyrun/config.toml`, else `~/.config/keyrun/config.toml`.
pub fn user_config_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => home_dir()?.join(".config"),
    };
    Some(base.join("keyrun").join("config.toml"))
}

pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The merged settings of one source for one reference: an option in the
/// reference beats the profile's section, which beats the top-level
/// section. The backend's own environment variables and defaults come last,
/// in the source itself.
pub struct Settings<'a> {
    reference: &'a Reference,
    layers: Vec<(&'a Section, String)>,
}

impl<'a> Settings<'a> {
    pub fn new(
        config: &'a Config,
        profile: Option<(&str, &'a Profile)>,
        section: &str,
        reference: &'a Reference,
    ) -> Self {
        let mut layers = Vec::new();
        if let Some((name, profile)) = profile {
            if let Some((_, table)) = profile.sections().into_iter().find(|(n, _)| *n == section) {
                layers.push((table, format!("[profiles.{name}.{section}]")));
            }
        }
        if let Some((_, table)) = config
            .file
            .sections()
            .into_iter()
            .find(|(n, _)| *n == section)
        {
            layers.push((table, format!("[{section}]")));
        }
        Settings { reference, layers }
    }

    // The network sources read their string settings (region, address)
    // through this.
    #[allow(dead_code)]
    pub fn string(&self, key: &str) -> Result<Option<String>> {
        if let Some(value) = self.reference.option(key) {
            return Ok(Some(value.to_string()));
        }
        for (table, origin) in &self.layers {
            if let Some(value) = lookup(table, key) {
                return match value {
                    toml::Value::String(text) => Ok(Some(text.clone())),
                    toml::Value::Integer(n) => Ok(Some(n.to_string())),
                    other => bail!("{origin} {key} must be a string, not {}", other.type_str()),
                };
            }
        }
        Ok(None)
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        if let Some(value) = self.reference.option(key) {
            return match value {
                "true" | "1" | "yes" => Ok(Some(true)),
                "false" | "0" | "no" => Ok(Some(false)),
                _ => bail!(
                    "reference {}: option {key}={value:?} must be true or false",
                    self.reference
                ),
            };
        }
        for (table, origin) in &self.layers {
            if let Some(value) = lookup(table, key) {
                return match value {
                    toml::Value::Boolean(flag) => Ok(Some(*flag)),
                    other => bail!(
                        "{origin} {key} must be true or false, not {}",
                        other.type_str()
                    ),
                };
            }
        }
        Ok(None)
    }

    /// Reads a timeout: a duration string such as `"30s"` or a whole number
    /// of seconds, from 1ms to one day.
    pub fn duration(&self, key: &str) -> Result<Option<Duration>> {
        if let Some(value) = self.reference.option(key) {
            return parse_timeout(value)
                .map(Some)
                .with_context(|| format!("reference {}: option {key}", self.reference));
        }
        for (table, origin) in &self.layers {
            if let Some(value) = lookup(table, key) {
                return match value {
                    toml::Value::String(text) => parse_timeout(text)
                        .map(Some)
                        .with_context(|| format!("{origin} {key}")),
                    toml::Value::Integer(secs) if *secs > 0 => {
                        check_timeout(Duration::from_secs(*secs as u64))
                            .map(Some)
                            .with_context(|| format!("{origin} {key} = {secs}"))
                    }
                    toml::Value::Integer(secs) => bail!(
                        "{origin} {key} = {secs} is invalid; a timeout must be at least 1ms, for example \"30s\""
                    ),
                    other => bail!(
                        "{origin} {key} must be a duration such as \"30s\", not {}",
                        other.type_str()
                    ),
                };
            }
        }
        Ok(None)
    }
}

fn lookup<'t>(table: &'t Section, key: &str) -> Option<&'t toml::Value> {
    table
        .iter()
        .find(|(name, _)| name.get_ref() == key)
        .map(|(_, value)| value.get_ref())
}

/// The largest configuration or env file keyrun reads. Real ones are a
/// few kilobytes; the cap stops `--config /dev/zero` and the like.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The reason a small file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("it is not a regular file (a FIFO, device or directory cannot be read safely); name a regular file")]
    NotRegular,
    #[error("it is larger than the {0}-byte limit; check the path")]
    TooLarge(u64),
    #[error("it is not UTF-8 text")]
    NotUtf8,
    #[error(
        "every user can write to it, and its references can run programs (cmd:) or send \
         credentials to a server it names; run `chmod o-w` on it"
    )]
    WritableByOthers,
}

/// Opens `path` without blocking (a FIFO would otherwise wait for a
/// writer), checks that the open file is a regular file of at most
/// `max_bytes`, and returns it with its metadata.
pub fn open_regular_file(
    path: &Path,
    max_bytes: u64,
) -> Result<(std::fs::File, std::fs::Metadata), ReadError> {
    use std::os::unix::fs::OpenOptionsExt;

    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(ReadError::NotRegular);
    }
    if metadata.len() > max_bytes {
        return Err(ReadError::TooLarge(max_bytes));
    }
    Ok((file, metadata))
}

/// Reads a regular file of at most `max_bytes` into a zeroizing buffer. A
/// FIFO, device or folder is rejected without blocking, as are larger
/// files, so a setting such as `VAULT_CACERT=/dev/zero` fails at once.
pub fn read_regular_file(
    path: &Path,
    max_bytes: u64,
) -> Result<zeroize::Zeroizing<Vec<u8>>, ReadError> {
    let (file, _) = open_regular_file(path, max_bytes)?;
    read_bounded(file, max_bytes)
}

/// Reads an open file to its end, failing when it has more than
/// `max_bytes`.
fn read_bounded(
    file: std::fs::File,
    max_bytes: u64,
) -> Result<zeroize::Zeroizing<Vec<u8>>, ReadError> {
    use std::io::Read;

    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    // Reading one byte past the limit detects a file that grew after the
    // check.
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge(max_bytes));
    }
    Ok(bytes)
}

/// Reads a regular UTF-8 file of at most `max_bytes` that not every user
/// can write to; see [`open_regular_file`].
pub fn read_text_file(path: &Path, max_bytes: u64) -> Result<String, ReadError> {
    use std::os::unix::fs::PermissionsExt;

    let (file, metadata) = open_regular_file(path, max_bytes)?;
    // Group write is allowed: with a per-user group (umask 002) it is the
    // default, and the file: source's stricter check is for values.
    if metadata.permissions().mode() & 0o002 != 0 {
        return Err(ReadError::WritableByOthers);
    }
    let mut bytes = read_bounded(file, max_bytes)?;
    String::from_utf8(std::mem::take(&mut *bytes)).map_err(|_| ReadError::NotUtf8)
}

/// Describes a TOML error by file, line, column and kind. The toml crate's
/// own text quotes the offending line, and serde's quotes an unexpected
/// string, either of which can be a key pasted into the wrong file, so
/// neither appears.
fn describe_toml_error(path: &Path, text: &str, err: &toml::de::Error) -> String {
    let position = match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(", line {line}, column {column}")
        }
        None => String::new(),
    };
    format!(
        "invalid configuration file {}{position}: {}; fix the TOML there (the line is not shown, since it may contain a secret)",
        path.display(),
        scrub_toml_message(err.message())
    )
}

/// Keeps the kind of a TOML or serde error message and drops any quoted
/// text in it: `"..."` strings always, and `` `...` `` names longer than a
/// key name usually is.
fn scrub_toml_message(message: &str) -> String {
    let message = message.lines().next().unwrap_or("").trim();
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(['"', '`']) {
        let quote = rest[at..].chars().next().unwrap_or('"');
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let Some(end) = after.find(quote) else {
            out.push_str(&format!("{quote}...{quote}"));
            rest = "";
            break;
        };
        let quoted = &after[..end];
        if quote == '`' && quoted.chars().count() <= 32 && !quoted.contains('"') {
            out.push('`');
            out.push_str(quoted);
            out.push('`');
        } else {
            out.push_str(&format!("{quote}...{quote}"));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The longest duration keyrun accepts. A timeout of more than a day is a
/// mistake, and the cap keeps `Instant + duration` from overflowing; a key
/// age of more than ten years is one too.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 366 * 86400);

/// The longest fetch timeout keyrun accepts.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86400);

/// The shortest duration keyrun accepts; anything shorter is a typo.
const MIN_DURATION: Duration = Duration::from_millis(1);

/// Parses a duration such as `500ms`, `30s`, `5m`, `90d` or a bare number of
/// seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    parse_bounded(text, MAX_DURATION, "3660d")
}

/// Parses a timeout: a duration of at most a day.
pub fn parse_timeout(text: &str) -> Result<Duration> {
    parse_bounded(text, MAX_TIMEOUT, "1d (86400s); a fetch that slow is stuck")
}

/// Parses a duration from 1ms to `max`; `max_text` names the maximum in
/// the error.
fn parse_bounded(text: &str, max: Duration, max_text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid duration {text:?}; write a number and a unit, for example 30s, 500ms, 5m or 90d"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        other => bail!("invalid duration {text:?}: unknown unit {other:?}; use ms, s, m, h or d"),
    };
    // Compared as f64 first, so a huge number never reaches the Duration
    // constructor, which panics on overflow.
    if !seconds.is_finite() || seconds > max.as_secs_f64() {
        bail!("invalid duration {text:?}: it is longer than the maximum of {max_text}");
    }
    let duration = Duration::try_from_secs_f64(seconds).map_err(|_| {
        anyhow::anyhow!("invalid duration {text:?}; write a number and a unit, for example 30s")
    })?;
    if duration < MIN_DURATION {
        bail!("invalid duration {text:?}: it must be at least 1ms");
    }
    Ok(duration)
}

fn check_timeout(duration: Duration) -> Result<Duration> {
    if duration > MAX_TIMEOUT {
        bail!("it is longer than the maximum of 1d (86400s); a fetch that slow is stuck");
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text.to_string(), PathBuf::from("/tmp/keyrun.toml"))
    }

    #[test]
    fn parses_profiles_and_variables() {
        let config = parse(
            r#"
default_profile = "dev"
[profiles.dev]
env.OPENAI_API_KEY = "file:~/.config/keyrun/openai.key"
env.OPENAI_ORG_ID = { from = "env:MY_ORG", raw = true }
unset = ["SOME_TOKEN"]
"#,
        )
        .unwrap();
        let dev = config.profile("dev").unwrap();
        assert_eq!(
            dev.env["OPENAI_API_KEY"].from,
            "file:~/.config/keyrun/openai.key"
        );
        assert!(!dev.env["OPENAI_API_KEY"].raw);
        assert!(dev.env["OPENAI_ORG_ID"].raw);
        assert_eq!(dev.unset, vec!["SOME_TOKEN".to_string()]);
    }

    #[test]
    fn unknown_key_names_line() {
        let err = parse("[profiles.dev]\nenv.A = \"env:A\"\nbogus = 1\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("bogus"), "{text}");
        assert!(text.contains("line 3"), "{text}");
    }

    #[test]
    fn unknown_section_key_names_line() {
        let err = parse("[command]\ntimeout = \"5s\"\ntimeuot = \"5s\"\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("command.timeuot"), "{text}");
        assert!(text.contains("line 3"), "{text}");
    }

    #[test]
    fn unknown_variable_setting_is_rejected() {
        let err = parse("[profiles.dev]\nenv.A = { from = \"env:A\", rw = true }\n").unwrap_err();
        assert!(format!("{err:#}").contains("rw"));
    }

    #[test]
    fn bad_reference_names_variable() {
        let err = parse("[profiles.dev]\nenv.A = \"s3:x\"\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("profiles.dev.env.A"), "{text}");
        assert!(text.contains("unknown scheme"), "{text}");
    }

    #[test]
    fn unknown_default_profile_lists_profiles() {
        let err = parse("default_profile = \"prod\"\n[profiles.dev]\n").unwrap_err();
        assert!(format!("{err:#}").contains("profiles defined: dev"));
    }

    #[test]
    fn settings_merge_reference_profile_top() {
        let config =
            parse("[command]\ntimeout = \"9s\"\n[profiles.p.command]\ntimeout = \"7s\"\n").unwrap();
        let profile = config.profile("p").unwrap();
        let plain = Reference::parse("file:/x").unwrap();
        let with_option = Reference::parse("file:/x?timeout=3s").unwrap();

        let top = Settings::new(&config, None, "command", &plain);
        assert_eq!(
            top.duration("timeout").unwrap(),
            Some(Duration::from_secs(9))
        );
        let prof = Settings::new(&config, Some(("p", profile)), "command", &plain);
        assert_eq!(
            prof.duration("timeout").unwrap(),
            Some(Duration::from_secs(7))
        );
        let opt = Settings::new(&config, Some(("p", profile)), "command", &with_option);
        assert_eq!(
            opt.duration("timeout").unwrap(),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86400)
        );
        assert_eq!(parse_duration("12").unwrap(), Duration::from_secs(12));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("0.0000000001s").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_timeout("2d").is_err());
        assert_eq!(parse_timeout("1d").unwrap(), Duration::from_secs(86400));
    }

    #[test]
    fn azure_timeout_goes_through_the_cap() {
        let config = parse("[azure]\ntimeout = 9223372036854775807\n").unwrap();
        let plain = Reference::parse("azure-kv:vault/name").unwrap();
        let settings = Settings::new(&config, None, "azure", &plain);
        let err = settings.duration("timeout").unwrap_err();
        assert!(format!("{err:#}").contains("[azure] timeout"), "{err:#}");
        let option = Reference::parse("azure-kv:vault/name?timeout=99999999999999999999s").unwrap();
        let settings = Settings::new(&config, None, "azure", &option);
        assert!(settings.duration("timeout").is_err());
    }

    #[test]
    fn toml_error_hides_the_line() {
        let err =
            parse("[profiles.dev]\nenv.A = { from = \"file:/x\", raw = \"sk-hidden-value\" }\n")
                .unwrap_err();
        let text = format!("{err:#}");
        assert!(!text.contains("sk-hidden-value"), "{text}");
        assert!(text.contains("line 2, column"), "{text}");
    }
}
