//! Trust for a `keyrun.toml` that came with a repository.
//!
//! Such a file can run programs (`cmd:`) and send credentials to servers it
//! names, so keyrun uses it only after `keyrun trust` has recorded its
//! absolute path and SHA-256 in the user's state folder. Editing the file
//! revokes that trust until the user runs `keyrun trust` again.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use sha2::{Digest, Sha256};

/// `CI=true`: a CI job runs the repository's own configuration on purpose.
pub fn ci_counts_as_trust() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// `$XDG_STATE_HOME/keyrun/trusted`, else `~/.local/state/keyrun/trusted`:
/// one `SHA256 PATH` line per trusted file.
pub fn store_path() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => crate::config::home_dir()
            .context("cannot find the state folder for trusted files: set HOME or XDG_STATE_HOME")?
            .join(".local/state"),
    };
    Ok(base.join("keyrun").join("trusted"))
}

fn digest_hex(content: &[u8]) -> String {
    Sha256::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_store(store: &Path) -> Result<Vec<(String, PathBuf)>> {
    let text = match std::fs::read_to_string(store) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", store.display())),
    };
    Ok(text
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(hash, path)| (hash.to_string(), PathBuf::from(path)))
        .collect())
}

/// Fails unless the file at `path` with this content was trusted.
pub fn require_trusted(path: &Path, content: &[u8]) -> Result<()> {
    let store = store_path()?;
    let hash = digest_hex(content);
    let entries = read_store(&store)?;
    let recorded = entries.iter().find(|(_, trusted)| trusted == path);
    match recorded {
        Some((recorded_hash, _)) if *recorded_hash == hash => Ok(()),
        Some(_) => bail!(
            "{} changed since it was trusted, and it can run programs and name servers that receive credentials; \
             review it, then run `keyrun trust {}` (or pass it with --config to use it once)",
            path.display(),
            path.display()
        ),
        None => bail!(
            "{} is not trusted: a keyrun.toml that comes with a repository can run programs and name servers that \
             receive credentials; review it, then run `keyrun trust {}` (or pass it with --config to use it once)",
            path.display(),
            path.display()
        ),
    }
}

/// Records `path` with its current SHA-256 as trusted, replacing an older
/// record of the same path.
pub fn trust(path: &Path) -> Result<PathBuf> {
    let absolute =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let text = crate::config::read_text_file(&absolute, crate::config::MAX_CONFIG_BYTES)
        .with_context(|| {
            format!(
                "cannot read {}; name an existing keyrun.toml",
                absolute.display()
            )
        })?;
    crate::config::Config::parse(text.clone(), absolute.clone()).with_context(|| {
        format!(
            "{} was not trusted because it is invalid",
            absolute.display()
        )
    })?;

    let store = store_path()?;
    if let Some(folder) = store.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    let mut entries = read_store(&store)?;
    entries.retain(|(_, trusted)| *trusted != absolute);
    entries.push((digest_hex(text.as_bytes()), absolute.clone()));

    let mut lines = String::new();
    for (hash, trusted) in &entries {
        lines.push_str(&format!("{hash} {}\n", trusted.display()));
    }
    let temporary = store.with_extension("tmp");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    out.write_all(lines.as_bytes())
        .and_then(|_| out.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &store)
        .with_context(|| format!("cannot replace {}", store.display()))?;
    Ok(absolute)
}
