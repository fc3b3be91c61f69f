//! Test harness: a temporary folder, a command builder for the real keyrun
//! binary with a controlled environment, and helpers shared by the
//! integration tests.

#![allow(dead_code)]

pub mod http;
#[cfg(target_os = "linux")]
pub mod keyutils;
#[cfg(target_os = "linux")]
pub mod memory;
pub mod openai;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The keyrun binary cargo built for these tests.
pub fn keyrun_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keyrun"))
}

/// A fresh folder with its own HOME and state folders, removed on drop.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keyrun-test-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn home(&self) -> PathBuf {
        self.path().join("home")
    }

    /// Writes a file with the given mode and returns its path.
    pub fn write(&self, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// A keyrun command with a minimal, explicit environment: PATH, a HOME
    /// and state folders inside the sandbox, no CI flag, no AWS metadata
    /// lookups, and the sandbox as working directory.
    pub fn keyrun(&self) -> Command {
        let mut command = Command::new(keyrun_bin());
        command.env_clear();
        command.env("PATH", std::env::var_os("PATH").unwrap_or_default());
        command.env("HOME", self.home());
        command.env("XDG_CONFIG_HOME", self.path().join("config"));
        command.env("XDG_STATE_HOME", self.path().join("state"));
        command.env("AWS_EC2_METADATA_DISABLED", "true");
        command.current_dir(self.path());
        command
    }
}

/// A random key in OpenAI's shape, so no test value is ever a real key and
/// each test's value is unique.
pub fn random_key() -> String {
    let mut bytes = [0u8; 24];
    let file = std::fs::File::open("/dev/urandom").unwrap();
    use std::io::Read;
    (&file).read_exact(&mut bytes).unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sk-test-{hex}")
}

/// Reports that a test cannot run because `variable`, which tests/run.sh
/// sets, is not set. Under CI that is a failure, elsewhere a skip.
pub fn report_unset(variable: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{variable} is not set; run tests/run.sh"
    );
    eprintln!("skipped: {variable} is not set; run tests/run.sh");
}

/// Runs a command and returns its output; panics if it cannot start.
pub fn output(command: &mut Command) -> Output {
    command.output().expect("keyrun runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that keyrun exited 0 and that the child of
/// [`check_var_command`] found OPENAI_API_KEY equal to the expected value.
pub fn assert_matched(result: &Output) {
    assert_eq!(
        result.status.code(),
        Some(0),
        "keyrun failed: {}",
        stderr(result)
    );
    assert_eq!(stdout(result).trim(), "OPENAI_API_KEY=match");
}

/// Asserts exit status 125, with which keyrun reports its own failure,
/// and returns stderr.
pub fn assert_failed(result: &Output) -> String {
    assert_eq!(
        result.status.code(),
        Some(125),
        "stderr: {}",
        stderr(result)
    );
    stderr(result)
}

/// Returns the part of keyrun's stderr that reports the failure of the
/// variable `var`, which keyrun writes as `VAR (from ORIGIN): MESSAGE`.
pub fn failure_line<'a>(stderr: &'a str, var: &str) -> &'a str {
    let start = format!("{var} (from ");
    stderr
        .lines()
        .find_map(|line| line.find(&start).map(|at| &line[at..]))
        .unwrap_or_else(|| panic!("no failure of {var} in: {stderr}"))
}

/// Asserts that keyrun's failure of `var` names `reference`, and not
/// `other`, the reference of another variable of the same batch.
pub fn assert_failure_names(stderr: &str, var: &str, reference: &str, other: &str) {
    let line = failure_line(stderr, var);
    assert!(line.contains(&format!("): {reference}: ")), "{line}");
    assert!(!line.contains(&format!("): {other}: ")), "{line}");
}

/// Runs `command` with the variables FIRST and SECOND set to the
/// references `first` and `second`, which keyrun resolves in one batch,
/// and `true` as the child.
pub fn run_pair(mut command: Command, first: &str, second: &str) -> Output {
    command.args(["--set", &format!("FIRST={first}")]).args([
        "--set",
        &format!("SECOND={second}"),
        "--",
        "true",
    ]);
    output(&mut command)
}

/// Asserts that both variables of [`run_pair`] failed, each with a message
/// that names its own reference and not the other's. Returns the failure
/// of SECOND.
pub fn assert_pair_failed<'a>(stderr: &'a str, first: &str, second: &str) -> &'a str {
    assert_failure_names(stderr, "FIRST", first, second);
    assert_failure_names(stderr, "SECOND", second, first);
    failure_line(stderr, "SECOND")
}

/// Runs `command` with `config` as its configuration file and `true` as
/// the child.
pub fn run_with_config(mut command: Command, config: &Path) -> Output {
    command.arg("--config").arg(config).args(["--", "true"]);
    output(&mut command)
}

/// Asserts that `command` rejects the configuration file `config` with a
/// message that names the unknown key `name`, its line `line`, and
/// `known`, the key of that section the user probably meant.
pub fn assert_unknown_key(command: Command, config: &Path, name: &str, line: usize, known: &str) {
    let message = assert_failed(&run_with_config(command, config));
    assert!(message.contains(name), "{message}");
    assert!(message.contains(&format!("line {line}")), "{message}");
    assert!(message.contains(known), "{message}");
}

/// Asserts that `haystack` does not contain `secret`, without printing the
/// secret when it does.
pub fn assert_not_leaked(haystack: &[u8], secret: &str, place: &str) {
    let found = memchr_find(haystack, secret.as_bytes());
    assert!(
        found.is_none(),
        "the secret value appeared in {place} at byte {found:?}"
    );
}

pub fn memchr_find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A shell command that prints whether the child's variable equals the
/// expected value, without printing the value itself.
pub fn check_var_command(name: &str, expected: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("if [ \"${name}\" = '{expected}' ]; then echo {name}=match; else echo {name}=mismatch; fi"),
    ]
}

/// Whether `name` is set in the environment of the child `sh` sees.
pub fn env_has_command(name: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "if [ -n \"${{{name}+set}}\" ]; then echo {name}=present; else echo {name}=absent; fi"
        ),
    ]
}

pub fn args<I, S>(items: I) -> Vec<std::ffi::OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    items
        .into_iter()
        .map(|s| s.as_ref().to_os_string())
        .collect()
}
