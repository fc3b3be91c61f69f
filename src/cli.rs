//! The command line: clap definitions and help text.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "keyrun",
    version,
    about = "Run a command with an API key in its environment, and only there",
    long_about = "Resolve an API key (OPENAI_API_KEY by default) from the environment, a file, \
a command or a secrets backend, start COMMAND with the key in its environment only, and wipe \
every copy keyrun held itself.",
    after_help = "Examples:\n  keyrun -- python app.py\n  keyrun --from file:~/.config/keyrun/openai.key -- pytest -q\n  keyrun --set ORG=env:MY_ORG --profile ci -- make test\n\nExit status: the command's own; 125 for keyrun's errors; 126 when the command cannot be executed; 127 when it is not found.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(flatten)]
    pub resolve: ResolveArgs,

    #[command(flatten)]
    pub child: ChildArgs,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(flatten)]
    pub audit: AuditArgs,

    #[command(subcommand)]
    pub subcommand: Option<Subcommands>,

    /// The command to run and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND", num_args = 0..)]
    pub command: Vec<OsString>,
}

/// Options that choose which variables are injected and from where.
#[derive(Debug, Args, Clone, Default)]
pub struct ResolveArgs {
    /// Set OPENAI_API_KEY (or the variable named by --var) from REF,
    /// such as env:NAME, file:PATH or cmd:COMMAND LINE.
    #[arg(long, value_name = "REF", global = true)]
    pub from: Option<String>,

    /// The variable that --from sets.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "OPENAI_API_KEY",
        global = true
    )]
    pub var: String,

    /// Set the variable NAME from REF; repeatable.
    #[arg(long = "set", value_name = "NAME=REF", global = true)]
    pub set: Vec<String>,

    /// Read NAME=REF lines from a dotenv-syntax file; repeatable.
    #[arg(long = "env-file", value_name = "FILE", global = true)]
    pub env_file: Vec<PathBuf>,

    /// The profile of the configuration file to use.
    #[arg(long, value_name = "NAME", env = "KEYRUN_PROFILE", global = true)]
    pub profile: Option<String>,

    /// The configuration file (default: ./keyrun.toml once trusted, then
    /// $XDG_CONFIG_HOME/keyrun/config.toml).
    #[arg(long, value_name = "FILE", env = "KEYRUN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

/// Options that shape the child's environment.
#[derive(Debug, Args, Clone, Default)]
pub struct ChildArgs {
    /// Remove the variable NAME from the command's environment; repeatable.
    #[arg(long = "unset", value_name = "NAME")]
    pub unset: Vec<String>,

    /// Pass only PATH, HOME, USER, LOGNAME, SHELL, LANG, LC_*, TERM, TZ,
    /// TMPDIR and the injected variables to the command.
    #[arg(long)]
    pub clean_env: bool,

    /// Keep the credentials a source read from keyrun's environment (such
    /// as VAULT_TOKEN) in the command's environment.
    #[arg(long)]
    pub keep_backend_env: bool,

    /// When to mask the injected values in the command's output. auto: a
    /// stdout or stderr that is not a terminal. always: also a terminal, by
    /// running the command on a pseudo-terminal. never: no masking.
    /// [default: auto, or the profile's `mask`]
    #[arg(long, value_enum, value_name = "WHEN")]
    pub mask: Option<MaskMode>,
}

/// When keyrun masks the child's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskMode {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args, Clone, Default)]
pub struct LogArgs {
    /// Log the steps of a run to stderr; repeat for more detail. KEYRUN_LOG
    /// takes a tracing filter instead.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Print errors only, no warnings.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Options recorded in the audit log.
#[derive(Debug, Args, Clone, Default)]
pub struct AuditArgs {
    /// The reason the command needs the key, recorded with each audit
    /// record of the run.
    #[arg(long, value_name = "TEXT", env = "KEYRUN_REASON")]
    pub reason: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Subcommands {
    /// Trust a keyrun.toml that came with a repository, after reviewing it.
    Trust {
        /// The file to trust.
        #[arg(default_value = "keyrun.toml")]
        file: PathBuf,
    },
    /// Verify or summarise the audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Resolve every variable a run would inject and report where each
    /// comes from, its age, its fingerprint and whether it works, never its
    /// value. Exits 0 when every check passes, 1 otherwise.
    Check(CheckArgs),
    /// Print a completion script for SHELL.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Store a value in the OS credential store, for keyring:NAME.
    #[command(after_help = SET_AFTER_HELP)]
    Set(SetArgs),
    /// Delete the entry NAME from the OS credential store.
    Delete(DeleteArgs),
    /// Start $SHELL (else /bin/sh) with the values in its environment.
    Shell(ShellArgs),
    /// Write a commented keyrun.toml for a chosen source in this folder.
    Init(InitArgs),
    /// Print keyrun's man page (roff) to stdout.
    Man,
}

const SET_AFTER_HELP: &str = "Examples:
  keyrun set                          # prompt for OPENAI_API_KEY
  op read op://dev/openai/key | keyrun set OPENAI_API_KEY
  keyrun set OPENAI_API_KEY --from file:~/openai.key
  keyrun --from keyring:OPENAI_API_KEY -- python app.py

The value never goes on the command line, where it would land in the shell's history.";

#[derive(Debug, Args, Clone)]
pub struct SetArgs {
    /// The entry's name (the account under service keyrun).
    #[arg(default_value = "OPENAI_API_KEY")]
    pub name: String,

    /// Rejected: a value on the command line lands in the shell's history.
    #[arg(hide = true, num_args = 0..)]
    pub value: Vec<OsString>,

    /// Store the value as it is, without trimming or checks (PEM keys,
    /// JSON).
    #[arg(long)]
    pub raw: bool,

    /// The credential store to write to.
    #[arg(long, value_enum, env = "KEYRUN_KEYRING_STORE", default_value = "auto")]
    pub store: crate::source::keyring::StoreChoice,
}

#[derive(Debug, Args, Clone)]
pub struct DeleteArgs {
    /// The entry's name (the account under service keyrun).
    pub name: String,

    /// The credential store to delete from.
    #[arg(long, value_enum, env = "KEYRUN_KEYRING_STORE", default_value = "auto")]
    pub store: crate::source::keyring::StoreChoice,
}

#[derive(Debug, Args, Clone)]
pub struct ShellArgs {
    /// Start a shell even inside another `keyrun shell`.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub child: ChildArgs,
}

#[derive(Debug, Args, Clone)]
pub struct InitArgs {
    /// Replace an existing keyrun.toml.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Check the chain of records and report the first one that was
    /// edited, removed or reordered (exit status 1).
    Verify {
        /// The log (default: KEYRUN_AUDIT_LOG or [audit] path).
        path: Option<PathBuf>,
    },
    /// Summarise the log per fingerprint: first and last use, count,
    /// hosts, commands, sources, and what looks wrong.
    Report {
        /// The log (default: KEYRUN_AUDIT_LOG or [audit] path).
        path: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args, Clone, Default)]
pub struct CheckArgs {
    /// Also send GET {OPENAI_BASE_URL}/models with the key, to learn
    /// whether the API accepts it.
    #[arg(long)]
    pub online: bool,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,

    /// The header style of --online: `openai` (Authorization: Bearer) or
    /// `azure` (api-key and api-version). The default follows the host.
    #[arg(long, value_enum, value_name = "STYLE")]
    pub api_style: Option<ApiStyle>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiStyle {
    Openai,
    Azure,
}
