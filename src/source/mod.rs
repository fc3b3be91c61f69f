//! Sources: where values come from. Each scheme is one file behind the
//! [`Source`] trait, and [`for_scheme`] is the one match that maps a
//! reference's scheme to it.

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::config::{Config, Profile, Settings};
use crate::reference::Reference;
use crate::secret::Secret;

mod aws;
mod azure;
mod command;
mod env;
mod file;
pub mod http;
pub mod keyring;
mod vault;

/// One variable to resolve: the reference and what the source needs to
/// interpret it.
#[derive(Debug)]
pub struct Request {
    pub var: String,
    pub reference: Reference,
    /// The folder a relative `file:` path is resolved against: the
    /// configuration file's folder, or the working directory for a
    /// reference from the command line.
    pub base_dir: Option<PathBuf>,
}

/// A resolved value and what the backend said about it.
#[derive(Debug)]
pub struct Resolved {
    pub value: Secret,
    pub version: Option<String>,
    /// When this version of the value was created (a file's mtime counts).
    pub created: Option<SystemTime>,
    /// Variables of keyrun's environment that the source used as its own
    /// credentials; the child does not get them unless kept on purpose.
    pub credential_env: Vec<String>,
    /// A variable of keyrun's environment that held the value itself
    /// (`env:NAME`).
    pub value_env: Option<String>,
}

impl Resolved {
    pub fn new(value: Secret) -> Self {
        Resolved {
            value,
            version: None,
            created: None,
            credential_env: Vec::new(),
            value_env: None,
        }
    }
}

/// What kind of failure a source met, for the audit log and `keyrun check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Denied,
    Invalid,
    // The network sources report refused connections with this.
    #[allow(dead_code)]
    Unreachable,
    TimedOut,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Denied => "denied",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::TimedOut => "timed_out",
        }
    }
}

/// A source's failure on one reference. The message names the source, the
/// reference and what to do next, and never contains a value.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub kind: ErrorKind,
    pub message: String,
}

impl SourceError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        SourceError {
            kind,
            message: message.into(),
        }
    }

    /// Copies the error of a step that several requests share, such as one
    /// client, login or read, for one of those requests. The shared message
    /// names no reference, so each copy starts with its own request's.
    pub fn for_reference(&self, reference: &Reference) -> SourceError {
        SourceError::new(self.kind, format!("{reference}: {}", self.message))
    }
}

/// Everything a source may consult while it resolves a batch.
pub struct Context<'a> {
    pub config: &'a Config,
    pub profile: Option<(&'a str, &'a Profile)>,
    // The network sources start the shared runtime through this.
    #[allow(dead_code)]
    pub runtime: &'a mut Runtime,
}

impl<'a> Context<'a> {
    /// The merged settings of `section` for one request.
    pub fn settings<'r>(&'r self, section: &str, request: &'r Request) -> Settings<'r> {
        Settings::new(self.config, self.profile, section, &request.reference)
    }
}

/// A backend that resolves references of one scheme.
pub trait Source {
    /// Resolves a batch of references, so that variables that name the same
    /// secret cost one read. Returns one result per request, in order.
    fn resolve(
        &self,
        requests: &[&Request],
        context: &mut Context<'_>,
    ) -> Vec<Result<Resolved, SourceError>>;

    /// The reference as it may appear in messages and logs, with anything
    /// secret in it redacted.
    fn display(&self, reference: &Reference) -> String {
        reference.text.clone()
    }
}

/// The source for a scheme. Adding a backend adds one arm here.
pub fn for_scheme(scheme: &str) -> Option<Box<dyn Source>> {
    match scheme {
        "env" => Some(Box::new(env::EnvSource)),
        "file" => Some(Box::new(file::FileSource)),
        "cmd" => Some(Box::new(command::CommandSource)),
        "aws-sm" => Some(Box::new(aws::AwsSource)),
        "azure-kv" => Some(Box::new(azure::AzureSource)),
        "keyring" => Some(Box::new(keyring::KeyringSource)),
        "vault" => Some(Box::new(vault::VaultSource)),
        _ => None,
    }
}

/// The keys each source's configuration section accepts, for the check
/// that reports an unknown key with its line.
pub fn section_keys(section: &str) -> &'static [&'static str] {
    match section {
        "file" => file::SETTINGS,
        "command" => command::SETTINGS,
        "aws" => aws::SETTINGS,
        "azure" => azure::SETTINGS,
        "vault" => vault::SETTINGS,
        _ => &[],
    }
}

/// Returns the options a scheme's references take: the keys of its
/// configuration section, or its own list. `None` leaves the check to the
/// source.
fn reference_options(scheme: &str) -> Option<&'static [&'static str]> {
    match scheme {
        "env" => Some(&[]),
        "file" => Some(section_keys("file")),
        "cmd" => Some(section_keys("command")),
        "aws-sm" => Some(section_keys("aws")),
        "azure-kv" => Some(section_keys("azure")),
        "keyring" => Some(&["store"]),
        _ => None,
    }
}

/// Rejects a reference option its source does not read, and a `#field` on
/// a source whose values have no fields, so that a typo such as
/// `?allow_readabel=true` or `file:/x#api_key` is not silently ignored.
pub fn check_reference(reference: &Reference) -> Result<(), String> {
    let scheme = reference.scheme.as_str();
    if for_scheme(scheme).is_none() {
        // The run reports the missing source itself.
        return Ok(());
    }
    let Some(known) = reference_options(scheme) else {
        return Ok(());
    };
    for (name, _) in &reference.options {
        if !known.contains(&name.as_str()) {
            let listed = if known.is_empty() {
                format!("{scheme}: references take no options")
            } else {
                format!("known options: {}", known.join(", "))
            };
            return Err(format!(
                "the {scheme}: reference has the unknown option {name:?}; {listed}"
            ));
        }
    }
    if reference.field.is_some() && matches!(scheme, "env" | "file" | "cmd" | "keyring") {
        return Err(format!(
            "the {scheme}: reference has a #field, but {scheme}: values are the whole text and have no fields; remove the #..."
        ));
    }
    Ok(())
}

/// The async runtime that network sources share: one current-thread
/// runtime, so no worker thread keeps a stack with a value on it, created
/// only when a network source asks for it and dropped before the child
/// starts.
#[derive(Default)]
pub struct Runtime {
    runtime: Option<tokio::runtime::Runtime>,
}

// The network sources call `get`; `run` calls `shutdown` before the spawn.
#[allow(dead_code)]
impl Runtime {
    pub fn get(&mut self) -> Result<&tokio::runtime::Runtime, SourceError> {
        if self.runtime.is_none() {
            tracing::debug!("starting the async runtime for a network source");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| {
                    SourceError::new(
                        ErrorKind::Invalid,
                        format!("cannot start the async runtime: {err}"),
                    )
                })?;
            self.runtime = Some(runtime);
        }
        // The branch above filled it when it was empty.
        self.runtime
            .as_ref()
            .ok_or_else(|| SourceError::new(ErrorKind::Invalid, "the async runtime is missing"))
    }

    pub fn is_started(&self) -> bool {
        self.runtime.is_some()
    }

    /// Drops the runtime and with it every pooled connection and its
    /// buffers.
    pub fn shutdown(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(std::time::Duration::from_millis(100));
            tracing::debug!("async runtime dropped");
        }
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Runtime(started: {})", self.runtime.is_some())
    }
}
