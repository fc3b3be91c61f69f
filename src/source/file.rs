//! `file:PATH`: a file's contents, such as `/run/secrets/openai`.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Context, ErrorKind, Request, Resolved, Source, SourceError};
use crate::secret::Secret;

pub const SETTINGS: &[&str] = &["allow_readable"];

/// The largest file keyrun reads as a value. API keys are short; a larger
/// file is almost certainly the wrong path.
const MAX_FILE_BYTES: u64 = 64 * 1024;

pub struct FileSource;

impl Source for FileSource {
    fn resolve(
        &self,
        requests: &[&Request],
        context: &mut Context<'_>,
    ) -> Vec<Result<Resolved, SourceError>> {
        requests
            .iter()
            .map(|request| {
                let allow_readable = context
                    .settings("file", request)
                    .bool("allow_readable")
                    .map_err(|err| SourceError::new(ErrorKind::Invalid, format!("{err:#}")))?
                    .unwrap_or(false);
                read_value(request, allow_readable)
            })
            .collect()
    }
}

fn expand_path(request: &Request) -> Result<PathBuf, SourceError> {
    let written = &request.reference.rest;
    if written == "~" || written.starts_with("~/") {
        let home = crate::config::home_dir().ok_or_else(|| {
            SourceError::new(
                ErrorKind::Invalid,
                format!(
                    "{}: cannot expand ~ because HOME is not set; write an absolute path",
                    request.reference
                ),
            )
        })?;
        return Ok(home.join(written.trim_start_matches('~').trim_start_matches('/')));
    }
    let path = Path::new(written);
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    match &request.base_dir {
        Some(base) => Ok(base.join(path)),
        None => Ok(path.to_path_buf()),
    }
}

fn read_value(request: &Request, allow_readable: bool) -> Result<Resolved, SourceError> {
    let reference = &request.reference;
    let path = expand_path(request)?;
    let shown = path.display();
    tracing::debug!(var = %request.var, source = "file", path = %shown, "reading file");

    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
    // writer forever. The type check below then rejects it.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path)
        .map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => SourceError::new(
            ErrorKind::NotFound,
            format!("{reference}: {shown} does not exist; check the path, or create it with the key and `chmod 600`"),
        ),
        std::io::ErrorKind::PermissionDenied => SourceError::new(
            ErrorKind::Denied,
            format!("{reference}: permission denied reading {shown}; keyrun runs as uid {}", nix::unistd::getuid()),
        ),
        _ => SourceError::new(ErrorKind::Invalid, format!("{reference}: cannot open {shown}: {err}")),
    })?;

    // The checks use the open file's metadata, so the file that is read is
    // the file that was checked.
    let metadata = file.metadata().map_err(|err| {
        SourceError::new(
            ErrorKind::Invalid,
            format!("{reference}: cannot stat {shown}: {err}"),
        )
    })?;
    if metadata.is_dir() {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!("{reference}: {shown} is a directory; name the file that holds the key"),
        ));
    }
    if !metadata.is_file() {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!("{reference}: {shown} is not a regular file (a FIFO or device cannot be read safely); name a regular file"),
        ));
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(SourceError::new(
            ErrorKind::Denied,
            format!(
                "{reference}: {shown} can be written by other users (mode {mode:03o}), so anyone in its group or on the machine \
                 could replace the key; run `chmod 600 {shown}` (or `chmod go-w`)"
            ),
        ));
    }
    let euid = nix::unistd::geteuid().as_raw();
    // Root-owned files are the norm for mounted secrets, and root can
    // replace any file anyway; another user's file is worth a look.
    if metadata.uid() != euid && metadata.uid() != 0 {
        tracing::warn!(
            "{var}: {shown} is owned by uid {}, not by keyrun's uid {euid}; that user can replace the key, so check that the file is the one you meant",
            metadata.uid(),
            var = request.var
        );
    }
    if mode & 0o044 != 0 && !allow_readable {
        return Err(SourceError::new(
            ErrorKind::Denied,
            format!(
                "{reference}: {shown} is readable by other users (mode {mode:03o}); run `chmod 600 {shown}`, \
                 or add ?allow_readable=true (or `allow_readable = true` under [file]) for a mount you cannot change, \
                 such as a Kubernetes or Docker secret"
            ),
        ));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!(
                "{reference}: {shown} is {} bytes, larger than the {MAX_FILE_BYTES}-byte limit for a key file; check the path",
                metadata.len()
            ),
        ));
    }

    let mut bytes = Vec::with_capacity(metadata.len() as usize + 1);
    // Read one byte past the limit, in case the file grew after the check.
    (&mut file)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| {
            SourceError::new(
                ErrorKind::Invalid,
                format!("{reference}: cannot read {shown}: {err}"),
            )
        })?;
    let mut value = Secret::new(bytes);
    if value.len() as u64 > MAX_FILE_BYTES {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!(
                "{reference}: {shown} grew past the {MAX_FILE_BYTES}-byte limit while it was read"
            ),
        ));
    }

    value.strip_final_newline();
    let mut resolved = Resolved::new(value);
    resolved.created = metadata.modified().ok();
    resolved.version = Some(format!("mtime:{}", metadata.mtime()));
    Ok(resolved)
}
