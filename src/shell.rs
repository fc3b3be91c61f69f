//! `keyrun shell`: an interactive shell with the values in its environment.
//!
//! The shell is an ordinary child of the run path, so it gets the same
//! resolution, environment and signal handling as `keyrun -- COMMAND`.
//! `KEYRUN_SHELL` carries the profile's name, for a prompt to show and for
//! the check that refuses to nest one such shell in another.

use std::ffi::{OsStr, OsString};

use anyhow::{bail, Result};

use crate::cli::{AuditArgs, ResolveArgs, ShellArgs};
use crate::run::{self, Exit};

/// The variable set in the shell's environment: the profile's name, or
/// `default` without a profile.
pub const MARKER: &str = "KEYRUN_SHELL";

pub fn shell(
    args: &ShellArgs,
    resolve: &ResolveArgs,
    audit: &AuditArgs,
    quiet: bool,
) -> Result<Exit> {
    if let Some(current) = std::env::var_os(MARKER) {
        if !args.force {
            bail!(
                "this shell already runs inside `keyrun shell` (profile {}), and a nested one would \
                 hold a second copy of the values; type `exit` to leave this shell first, or pass \
                 --force to start another anyway",
                current.to_string_lossy()
            );
        }
    }

    let program = std::env::var_os("SHELL")
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| OsString::from("/bin/sh"));
    let command = [program];
    run::exec_with(resolve, &args.child, audit, &command, |env, profile| {
        let name = profile.unwrap_or("default");
        env.set(MARKER, OsStr::new(name));
        if !quiet {
            eprintln!(
                "keyrun: starting {} with profile {name}; type `exit` to leave",
                command[0].to_string_lossy()
            );
        }
    })
}
