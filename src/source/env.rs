//! `env:NAME`: a variable of keyrun's own environment.

use std::os::unix::ffi::OsStringExt;

use super::{Context, ErrorKind, Request, Resolved, Source, SourceError};
use crate::secret::Secret;

pub struct EnvSource;

impl Source for EnvSource {
    fn resolve(
        &self,
        requests: &[&Request],
        _context: &mut Context<'_>,
    ) -> Vec<Result<Resolved, SourceError>> {
        requests
            .iter()
            .map(|request| resolve_one(request))
            .collect()
    }
}

fn resolve_one(request: &Request) -> Result<Resolved, SourceError> {
    let name = &request.reference.rest;
    if name.contains('=') || name.contains('\0') {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!(
                "{}: {name:?} is not a valid environment variable name",
                request.reference
            ),
        ));
    }

    tracing::debug!(var = %request.var, source = "env", name = %name, "reading variable");
    // `var_os` copies the value out of the environment block into a fresh
    // allocation, which moves into the zeroizing secret without a copy.
    let Some(value) = std::env::var_os(name) else {
        let hint = if request.var == *name {
            format!("export {name}=... in the shell that runs keyrun, or choose another source with --from REF")
        } else {
            format!(
                "export {name}=..., or point {} at another source",
                request.var
            )
        };
        return Err(SourceError::new(
            ErrorKind::NotFound,
            format!(
                "{}: {name} is not set in keyrun's environment; {hint}",
                request.reference
            ),
        ));
    };

    let mut resolved = Resolved::new(Secret::new(value.into_vec()));
    resolved.value_env = Some(name.clone());
    Ok(resolved)
}
