//! `keyrun set` and `keyrun delete`: put a value into the OS credential
//! store for `keyring:NAME`, or take it out.
//!
//! The value comes from a prompt that does not echo, from stdin, or from
//! another source (`--from REF`), and never from the command line, where
//! it would land in the shell's history and the process list.

use anyhow::{anyhow, bail, Result};
use nix::sys::signal::Signal;

use crate::cli::{DeleteArgs, ResolveArgs, SetArgs};
use crate::config::Config;
use crate::prompt::{self, Input};
use crate::reference::Reference;
use crate::run::{self, Exit, Planned};
use crate::secret::{self, Secret};
use crate::source::keyring::{self, Store};
use crate::source::{Request, Runtime};

pub fn set(args: &SetArgs, resolve: &ResolveArgs, quiet: bool) -> Result<Exit> {
    if !args.value.is_empty() {
        bail!(
            "keyrun set takes no value on the command line, because the shell keeps it in its history \
             and other users can see it in the process list; run `keyrun set {}` and paste the value at \
             the prompt, or pipe it in (`op read ... | keyrun set {}`). If that was a real key, remove it \
             from your shell history and consider rotating it",
            args.name,
            args.name
        );
    }
    keyring::check_account(&args.name).map_err(|message| anyhow!("keyrun set: {message}"))?;

    let value = match &resolve.from {
        Some(text) => import(&args.name, text, args.raw, resolve)?,
        None => {
            let prompt = format!("Value for {} (input is hidden): ", args.name);
            match prompt::read_secret(&prompt)? {
                Input::Value(mut value) => {
                    check(&args.name, "the input", &mut value, args.raw)?;
                    value
                }
                Input::Interrupted => {
                    eprintln!("keyrun: cancelled; nothing was stored");
                    return Ok(Exit::Signal(Signal::SIGINT.into()));
                }
            }
        }
    };

    let store = keyring::write(&args.name, &value, args.store)?;
    if !quiet {
        eprintln!(
            "keyrun: stored {} (fingerprint {}) in {}, {}",
            args.name,
            value.fingerprint(),
            store.name(),
            store.lifetime()
        );
        eprintln!(
            "keyrun: use it with `keyrun --from keyring:{} -- COMMAND`",
            args.name
        );
    }
    Ok(Exit::Code(0))
}

/// Reads the value of `--from REF` through its source, with the same
/// settings and checks as a run.
fn import(name: &str, text: &str, raw: bool, resolve: &ResolveArgs) -> Result<Secret> {
    let config = Config::discover(resolve.config.as_deref())?;
    let profile = run::choose_profile(resolve, &config)?;
    let reference = Reference::parse(text).map_err(|err| anyhow!("--from: {err}"))?;
    let planned = [Planned {
        request: Request {
            var: name.to_string(),
            reference,
            base_dir: std::env::current_dir().ok(),
        },
        raw,
        origin: "--from".to_string(),
    }];

    let mut runtime = Runtime::default();
    let resolved = run::resolve_all(&planned, &config, profile, &mut runtime);
    runtime.shutdown();
    let mut injected = resolved?;
    let item = injected
        .pop()
        .ok_or_else(|| anyhow!("--from {text}: the source returned no value"))?;
    Ok(item.resolved.value)
}

/// Applies a run's value checks to typed or piped input, with the same
/// warnings.
fn check(name: &str, shown: &str, value: &mut Secret, raw: bool) -> Result<()> {
    let trimmed = secret::normalize(value, raw)
        .map_err(|err| anyhow!("{name}: {shown} was rejected and nothing was stored: {err}"))?;
    if trimmed.any() {
        tracing::warn!(
            "{name}: removed {} from {shown}; the stored value is the bare key",
            trimmed.describe()
        );
    }
    if name == "OPENAI_API_KEY" && !secret::looks_like_openai_key(value) {
        tracing::warn!(
            "{name}: {shown} does not look like an OpenAI key (sk-..., sk-proj-...); \
             that is expected for Azure OpenAI or a compatible gateway"
        );
    }
    Ok(())
}

pub fn delete(args: &DeleteArgs, quiet: bool) -> Result<Exit> {
    keyring::check_account(&args.name).map_err(|message| anyhow!("keyrun delete: {message}"))?;
    let store: Store = keyring::delete(&args.name, args.store)?;
    if !quiet {
        eprintln!("keyrun: deleted {} from {}", args.name, store.name());
    }
    Ok(Exit::Code(0))
}
