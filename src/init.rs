//! `keyrun init`: write a commented `keyrun.toml` in the working folder for
//! a chosen source, from `--from REF` or from questions on a terminal.
//!
//! The file names where a value comes from and never contains a value, so it
//! can be committed. keyrun wrote it for this user, so `init` also records
//! it as trusted and the next `keyrun -- COMMAND` in the folder uses it.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::cli::{InitArgs, ResolveArgs};
use crate::config::Config;
use crate::envfile;
use crate::reference::Reference;
use crate::run::Exit;
use crate::secret::{self, Secret};
use crate::source;

pub const FILE_NAME: &str = "keyrun.toml";

/// The profile `init` writes when `--profile` names none.
const DEFAULT_PROFILE: &str = "dev";

pub fn init(args: &InitArgs, resolve: &ResolveArgs) -> Result<Exit> {
    let path = std::env::current_dir()
        .context("cannot find the working folder")?
        .join(FILE_NAME);
    if path.exists() && !args.force {
        bail!(
            "{} already exists; review it, or pass --force to replace it",
            path.display()
        );
    }
    let var = resolve.var.as_str();
    if !envfile::is_variable_name(var) {
        bail!("--var {var:?} is not a valid variable name (letters, digits and _, not starting with a digit)");
    }
    let profile = resolve.profile.as_deref().unwrap_or(DEFAULT_PROFILE);
    if profile.is_empty()
        || !profile
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("--profile {profile:?}: use letters, digits, - and _ in a profile name");
    }

    let text = match &resolve.from {
        Some(text) => text.clone(),
        None if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() => ask(var)?,
        None => bail!(
            "keyrun init needs --from REF when it cannot ask on a terminal, for example \
             `keyrun init --from keyring:{var}`"
        ),
    };
    let reference = check_reference(&text)?;
    let content = render(profile, var, &reference);
    Config::parse(content.clone(), path.clone())
        .context("keyrun init built an invalid file; this is a bug in keyrun")?;

    write(&path, &content, args.force)?;
    crate::trust::trust(&path)?;
    eprintln!("keyrun: wrote and trusted {}", path.display());
    if reference.scheme == "keyring" {
        eprintln!(
            "keyrun: store the value with `keyrun set {}`, then run `keyrun -- COMMAND` or `keyrun shell`",
            reference.rest
        );
    } else {
        eprintln!("keyrun: run `keyrun -- COMMAND` or `keyrun shell` in this folder");
    }
    Ok(Exit::Code(0))
}

/// Parses the reference and rejects one that holds what looks like a key,
/// since the file is meant to be committed.
fn check_reference(text: &str) -> Result<Reference> {
    let reference = Reference::parse(text).map_err(|err| anyhow!("--from: {err}"))?;
    if source::for_scheme(&reference.scheme).is_none() {
        bail!(
            "--from {text}: the {}: source is not available in this build of keyrun",
            reference.scheme
        );
    }
    let holds_key = text
        .split(|c: char| c.is_whitespace() || matches!(c, ':' | '=' | '\'' | '"'))
        .any(|word| secret::looks_like_openai_key(&Secret::new(word.as_bytes().to_vec())));
    if holds_key {
        bail!(
            "--from: the reference contains what looks like an API key, and keyrun.toml must name \
             where a key comes from, never the key itself; store the key with `keyrun set` and use \
             keyring:NAME"
        );
    }
    Ok(reference)
}

/// Asks on the terminal which source to use and returns its reference.
fn ask(var: &str) -> Result<String> {
    eprintln!("Where should keyrun read {var} from?");
    eprintln!("  1) keyring  the OS credential store; you store the value with `keyrun set`");
    eprintln!("  2) env      a variable of the environment keyrun starts in");
    eprintln!("  3) file     a file only you can read, such as ~/.config/keyrun/openai.key");
    eprintln!("  4) cmd      a command's output, such as `op read op://dev/openai/key`");
    let choice = ask_line("Choice [1]: ")?;
    let text = match choice.as_str() {
        "" | "1" | "keyring" => {
            let name = ask_line(&format!("Entry name [{var}]: "))?;
            format!("keyring:{}", or_default(name, var))
        }
        "2" | "env" => {
            let name = ask_line(&format!("Variable name [{var}]: "))?;
            format!("env:{}", or_default(name, var))
        }
        "3" | "file" => {
            let path = ask_line("File path: ")?;
            if path.is_empty() {
                bail!("no file path entered; nothing was written");
            }
            format!("file:{path}")
        }
        "4" | "cmd" => {
            let line = ask_line("Command line: ")?;
            if line.is_empty() {
                bail!("no command line entered; nothing was written");
            }
            format!("cmd:{line}")
        }
        other => bail!("{other:?} is not one of the choices 1 to 4; nothing was written"),
    };
    Ok(text)
}

fn ask_line(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the reply from the terminal")?;
    if read == 0 {
        bail!("no reply (end of input); nothing was written");
    }
    Ok(line.trim().to_string())
}

fn or_default(answer: String, default: &str) -> String {
    if answer.is_empty() {
        default.to_string()
    } else {
        answer
    }
}

/// Renders the file: a profile with the one variable, and comments on the
/// chosen source and on what to do next.
fn render(profile: &str, var: &str, reference: &Reference) -> String {
    let about = match reference.scheme.as_str() {
        "keyring" => format!(
            "# keyring: the OS credential store (macOS Keychain, Secret Service, or the\n\
             # Linux kernel keyring until reboot). Store the value with\n\
             # `keyrun set {}`.",
            reference.rest
        ),
        "env" => "# env: a variable of the environment keyrun starts in.".to_string(),
        "file" => "# file: a file only its owner can read (chmod 600).".to_string(),
        "cmd" => "# cmd: the standard output of this command, run without a shell.".to_string(),
        other => format!("# {other}: see the README for this source's settings."),
    };
    format!(
        "# keyrun configuration, written by `keyrun init`.\n\
         # It names where each value comes from and holds no value itself, so it\n\
         # can be committed. keyrun uses a keyrun.toml from the working folder only\n\
         # after `keyrun trust`; edit it, and run `keyrun trust` again.\n\
         #\n\
         # Run a command with the values: keyrun -- COMMAND\n\
         # Start a shell with them:       keyrun shell\n\
         \n\
         default_profile = {}\n\
         \n\
         [profiles.{profile}]\n\
         {about}\n\
         env.{var} = {}\n\
         \n\
         # More variables, each from its own source:\n\
         # env.OPENAI_ORG_ID = \"env:MY_ORG\"\n\
         # Variables to remove from the command's environment:\n\
         # unset = [\"SOME_TOKEN\"]\n",
        toml_string(profile),
        toml_string(&reference.text),
    )
}

/// Writes `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn write(path: &PathBuf, content: &str, force: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o644);
    if force {
        options.create(true).truncate(true);
    } else {
        // Fails if another process created the file since the check above.
        options.create_new(true);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(content.as_bytes())
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_file_parses() {
        let reference = Reference::parse("cmd:op read \"op://dev/openai/key\"").unwrap();
        let text = render("dev", "OPENAI_API_KEY", &reference);
        let config = Config::parse(text, PathBuf::from("/tmp/keyrun.toml")).unwrap();
        let profile = config.profile("dev").unwrap();
        assert_eq!(
            profile.env["OPENAI_API_KEY"].from,
            "cmd:op read \"op://dev/openai/key\""
        );
        assert_eq!(config.file.default_profile.as_deref(), Some("dev"));
    }

    #[test]
    fn reference_with_key_is_rejected() {
        let err = check_reference("cmd:echo sk-proj-abcdefghijklmnopqrstuvwx").unwrap_err();
        assert!(err.to_string().contains("looks like an API key"));
        assert!(!err.to_string().contains("abcdefghijkl"));
    }

    #[test]
    fn toml_string_escapes() {
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }
}
