//! Trust for a `keyrun.toml` that came with a repository.
//!
//! Such a file can run programs (`cmd:`) and send credentials to servers it
//! names, so keyrun uses it only after `keyrun trust` has recorded its
//! absolute path and SHA-256 in the user's state folder. Editing the file
//! revokes that trust until the user runs `keyrun trust` again.

use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use sha2::{Digest, Sha256};

/// `CI=true`: a CI job runs the repository's own configuration on purpose.
pub fn ci_counts_as_trust() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// `$XDG_STATE_HOME/keyrun/trusted`, else `~/.local/state/keyrun/trusted`:
/// one `SHA256 PATH` line per trusted file, the path encoded by
/// [`encode_path`].
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

/// Fails when `path` contains a control character. A newline in a stored
/// path would split its record in two, and other control characters
/// disguise a path when it is printed.
fn reject_control_characters(path: &Path) -> Result<()> {
    if path.to_string_lossy().chars().any(char::is_control) {
        bail!(
            "{:?} contains a control character, so keyrun does not trust a keyrun.toml there; \
             move the file to a folder whose path has none",
            path
        );
    }
    Ok(())
}

/// Returns `path` with its folder resolved to its canonical form, so a
/// path through a symbolic link and the real path name the same record.
/// The file name itself is kept: a `keyrun.toml` that is a link to a
/// trusted file elsewhere is a different, untrusted location.
fn canonical_location(path: &Path) -> Result<PathBuf> {
    let absolute =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let (Some(folder), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        bail!("{} does not name a file", absolute.display());
    };
    let folder = std::fs::canonicalize(folder)
        .with_context(|| format!("cannot resolve the folder {}", folder.display()))?;
    Ok(folder.join(name))
}

/// Encodes a path for one store record: `%`, space, control bytes and
/// non-ASCII bytes become `%XX`, so a record is one printable ASCII line
/// and decoding gives back the exact bytes.
fn encode_path(path: &Path) -> String {
    let mut encoded = String::new();
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_graphic() && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Decodes a stored path. Bytes other than `%XX` are taken as they are,
/// so records written before paths were encoded still match.
fn decode_path(text: &str) -> std::result::Result<PathBuf, &'static str> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|pair| std::str::from_utf8(pair).ok())
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or("a % is not followed by two hex digits")?;
            decoded.push(hex);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    Ok(PathBuf::from(std::ffi::OsString::from_vec(decoded)))
}

/// Parses one `SHA256 PATH` record; any other form is invalid.
fn parse_record(line: &str) -> std::result::Result<(String, PathBuf), &'static str> {
    let (hash, encoded) = line
        .split_once(' ')
        .ok_or("expected a SHA-256, a space and a path")?;
    let is_digest = hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !is_digest {
        return Err("the first field is not a SHA-256 in lowercase hex");
    }
    if encoded.chars().any(char::is_control) {
        return Err("the path contains a control character");
    }
    let path = decode_path(encoded)?;
    if !path.is_absolute() {
        return Err("the path is not absolute");
    }
    if path.to_string_lossy().chars().any(char::is_control) {
        return Err("the path contains a control character");
    }
    Ok((hash.to_string(), path))
}

/// Reads the store, rejecting it whole when any record is invalid: a store
/// that was edited or forged grants no trust.
fn read_store(store: &Path) -> Result<Vec<(String, PathBuf)>> {
    let text = match std::fs::read_to_string(store) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", store.display())),
    };
    let mut entries = Vec::new();
    for (index, line) in text.split_terminator('\n').enumerate() {
        let entry = parse_record(line).map_err(|reason| {
            anyhow::anyhow!(
                "{}, line {}: invalid trust record: {reason}; delete that line (or the file, \
                 which revokes all trust) and run `keyrun trust` again",
                store.display(),
                index + 1
            )
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

/// Fails unless the file at `path` with this content was trusted.
pub fn require_trusted(path: &Path, content: &[u8]) -> Result<()> {
    reject_control_characters(path)?;
    let path = &canonical_location(path)?;
    reject_control_characters(path)?;
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
    reject_control_characters(path)?;
    let absolute = canonical_location(path)?;
    reject_control_characters(&absolute)?;
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
        lines.push_str(&format!("{hash} {}\n", encode_path(trusted)));
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

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn path_encoding_round_trips() {
        let path = PathBuf::from(std::ffi::OsString::from_vec(
            b"/tmp/a b%c/\xff\xc3\xa9/keyrun.toml".to_vec(),
        ));
        let encoded = encode_path(&path);
        assert!(encoded.bytes().all(|b| b.is_ascii_graphic()), "{encoded}");
        assert_eq!(decode_path(&encoded).unwrap(), path);
    }

    #[test]
    fn record_written_before_encoding_parses() {
        let (_, path) = parse_record(&format!("{HASH} /tmp/a b/é/keyrun.toml")).unwrap();
        assert_eq!(path, PathBuf::from("/tmp/a b/é/keyrun.toml"));
    }

    #[test]
    fn record_rejects_malformed_lines() {
        let cases = [
            "".to_string(),
            "/tmp/keyrun.toml".to_string(),
            format!("{} /tmp/keyrun.toml", &HASH[..63]),
            format!("{} /tmp/keyrun.toml", HASH.to_uppercase()),
            format!("{HASH} relative/keyrun.toml"),
            format!("{HASH} /tmp/keyrun.toml\r"),
            format!("{HASH} /tmp/%0A/keyrun.toml"),
            format!("{HASH} /tmp/%zz/keyrun.toml"),
            format!("{HASH} /tmp/%4"),
        ];
        for line in cases {
            assert!(parse_record(&line).is_err(), "{line:?} parsed");
        }
    }
}
