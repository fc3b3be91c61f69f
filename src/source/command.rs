//! `cmd:COMMAND LINE`: the standard output of a program, such as
//! `op read op://ci/openai/key` or `pass show openai`.
//!
//! The line is split into words as a POSIX shell would, but no shell runs
//! it, so no expansion or redirection happens.

use std::io::{IsTerminal as _, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;
use zeroize::Zeroizing;

use super::{Context, ErrorKind, Request, Resolved, Source, SourceError};
use crate::reference::Reference;
use crate::secret::Secret;

pub const SETTINGS: &[&str] = &["timeout"];

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The most output keyrun reads from a command; a key is far shorter.
const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// How much of the command's stderr an error shows. keyrun keeps at most
/// twice this much of it, however much the command writes.
const STDERR_TAIL_BYTES: usize = 2048;

/// How long keyrun keeps reading after the command itself exited, for
/// output still in flight. A process it started that still keeps the
/// output pipes open after this is killed with the command's process group.
const EXIT_GRACE: Duration = Duration::from_millis(200);

/// How often keyrun checks whether the command exited while its pipes are
/// still open.
const EXIT_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Words in a command line whose value is a credential, such as
/// `--token=...` or `--password X`; [`CommandSource::display`] hides the
/// value.
const SECRET_WORDS: [&str; 7] = [
    "token", "secret", "password", "passwd", "key", "auth", "bearer",
];

/// Flags whose next argument is a credential or carries one (`curl -H
/// "Authorization: Bearer ..."`, `-u user:pass`).
const SECRET_FLAGS: [&str; 6] = ["-H", "--header", "-u", "--user", "--pw", "--pass"];

pub struct CommandSource;

impl Source for CommandSource {
    fn resolve(
        &self,
        requests: &[&Request],
        context: &mut Context<'_>,
    ) -> Vec<Result<Resolved, SourceError>> {
        requests
            .iter()
            .map(|request| {
                let timeout = context
                    .settings("command", request)
                    .duration("timeout")
                    .map_err(|err| SourceError::new(ErrorKind::Invalid, format!("{err:#}")))?
                    .unwrap_or(DEFAULT_TIMEOUT);
                run(request, &self.display(&request.reference), timeout)
            })
            .collect()
    }

    /// Shows the command line with credentials hidden: values after flags
    /// that name a secret, `user:pass` pairs, URL user info, and any
    /// argument with a space in it (a header, or a script for `sh -c`).
    fn display(&self, reference: &Reference) -> String {
        let Ok(words) = shell_words::split(&reference.rest) else {
            return "cmd:<unparsable command line>".to_string();
        };
        let mut shown = Vec::with_capacity(words.len());
        let mut hide_next = false;
        for word in words {
            let lower = word.to_ascii_lowercase();
            let names_secret = SECRET_WORDS.iter().any(|w| lower.contains(w));
            if hide_next {
                shown.push("***".to_string());
                hide_next = false;
            } else if let (true, Some((name, _))) = (names_secret, word.split_once('=')) {
                shown.push(format!("{name}=***"));
            } else if let Some(redacted) = redact_word(&word) {
                shown.push(redacted);
            } else {
                hide_next = word.starts_with('-')
                    && (names_secret || SECRET_FLAGS.contains(&word.as_str()));
                shown.push(shell_words::quote(&word).into_owned());
            }
        }
        format!("cmd:{}", shown.join(" "))
    }
}

/// Hides one argument that carries a credential by its shape alone:
/// `user:pass`, a URL with user info, or text with spaces. Returns `None`
/// for an argument that can be shown.
fn redact_word(word: &str) -> Option<String> {
    if word.chars().any(char::is_whitespace) {
        return Some("'***'".to_string());
    }
    if let Some((scheme, rest)) = word.split_once("://") {
        let authority = rest.split('/').next().unwrap_or("");
        return authority.contains('@').then(|| {
            format!(
                "{scheme}://***@{}",
                &rest[authority.rfind('@').map_or(0, |at| at + 1)..]
            )
        });
    }
    match word.split_once(':') {
        Some((user, pass)) if !user.is_empty() && !pass.is_empty() && !word.starts_with('-') => {
            Some(format!("{user}:***"))
        }
        _ => None,
    }
}

/// The process group of the running fetch command, or 0, for the signal
/// handler that kills it when keyrun receives a signal to stop.
static FETCH_GROUP: AtomicI32 = AtomicI32::new(0);

/// The terminal whose foreground group is the fetch command's, or -1.
static FETCH_TTY: AtomicI32 = AtomicI32::new(-1);

/// The signals that end keyrun while a command runs; each kills the
/// command's process group first.
const ENDING_SIGNALS: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
];

extern "C" fn end_fetch(sig: libc::c_int) {
    // Only async-signal-safe calls: kill, tcsetpgrp, getpgrp, signal and
    // raise.
    let group = FETCH_GROUP.load(Ordering::SeqCst);
    if group > 0 {
        // SAFETY: kill with a negative pid signals a process group.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    let tty = FETCH_TTY.load(Ordering::SeqCst);
    if tty >= 0 {
        // SAFETY: SIGTTOU is ignored while the handlers are installed, so
        // taking the terminal back cannot stop keyrun.
        unsafe { libc::tcsetpgrp(tty, libc::getpgrp()) };
    }
    // SAFETY: restores the default action and raises the signal again, so
    // keyrun ends the way it was asked to.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// The state of a running fetch command: its process group, the terminal
/// it was given, and the signal actions to restore. Dropping it gives the
/// terminal back to keyrun and restores the actions.
struct FetchGuard {
    group: Pid,
    tty: Option<OwnedFd>,
    previous: Vec<(Signal, SigAction)>,
    previous_ttou: Option<SigAction>,
}

impl FetchGuard {
    /// Installs the ending-signal handlers and ignores SIGTTOU, before the
    /// command starts so no signal falls between spawn and guard.
    fn install() -> FetchGuard {
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: SIG_IGN runs no code.
        let previous_ttou = unsafe { signal::sigaction(Signal::SIGTTOU, &ignore) }.ok();
        let handler = SigAction::new(
            SigHandler::Handler(end_fetch),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut previous = Vec::new();
        for sig in ENDING_SIGNALS {
            // SAFETY: `end_fetch` makes only async-signal-safe calls.
            if let Ok(old) = unsafe { signal::sigaction(sig, &handler) } {
                previous.push((sig, old));
            }
        }
        FetchGuard {
            group: Pid::from_raw(0),
            tty: None,
            previous,
            previous_ttou,
        }
    }

    fn started(&mut self, child: &Child, tty: Option<OwnedFd>) {
        self.group = Pid::from_raw(child.id() as i32);
        FETCH_GROUP.store(self.group.as_raw(), Ordering::SeqCst);
        if let Some(fd) = &tty {
            FETCH_TTY.store(fd.as_raw_fd(), Ordering::SeqCst);
        }
        self.tty = tty;
    }

    fn kill_group(&self) {
        if self.group.as_raw() > 0 {
            // The command may ignore SIGTERM; a key fetch has no state to
            // save.
            let _ = signal::killpg(self.group, Signal::SIGKILL);
        }
    }
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        FETCH_GROUP.store(0, Ordering::SeqCst);
        FETCH_TTY.store(-1, Ordering::SeqCst);
        if let Some(tty) = &self.tty {
            let _ = nix::unistd::tcsetpgrp(tty, nix::unistd::getpgrp());
        }
        for (sig, old) in &self.previous {
            // SAFETY: restores the action that was there before.
            let _ = unsafe { signal::sigaction(*sig, old) };
        }
        if let Some(old) = &self.previous_ttou {
            // SAFETY: as above.
            let _ = unsafe { signal::sigaction(Signal::SIGTTOU, old) };
        }
    }
}

/// Opens the controlling terminal when keyrun's process group is in its
/// foreground. The command then gets the foreground, so that it can prompt
/// on /dev/tty (gpg's pinentry, `op`) from its own process group.
fn foreground_tty() -> Option<OwnedFd> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let fd = OwnedFd::from(tty);
    let foreground = nix::unistd::tcgetpgrp(&fd).ok()?;
    (foreground == nix::unistd::getpgrp()).then_some(fd)
}

/// The reason output collection ended.
#[derive(Debug, PartialEq, Eq)]
enum Collected {
    /// Both pipes closed.
    Closed,
    /// The command exited, but something it started still keeps a pipe open.
    HeldOpen,
    /// The deadline passed.
    TimedOut,
    /// Stdout passed [`MAX_OUTPUT_BYTES`].
    TooLarge,
}

fn run(request: &Request, shown: &str, timeout: Duration) -> Result<Resolved, SourceError> {
    let words = shell_words::split(&request.reference.rest).map_err(|err| {
        SourceError::new(
            ErrorKind::Invalid,
            format!("{shown}: cannot split the command line into words ({err}); check its quotes"),
        )
    })?;
    let Some((program, args)) = words.split_first() else {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!("{shown}: the command line is empty"),
        ));
    };
    // The timeout is capped at a day by the settings, so this cannot
    // overflow; a failure falls back to no deadline only in theory.
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| Instant::now() + crate::config::MAX_TIMEOUT);

    // On a terminal the command's stderr goes straight through, so that a
    // prompt such as `Passphrase:` shows. Otherwise keyrun keeps its tail
    // for the error message.
    let live_stderr = std::io::stderr().is_terminal();
    let tty = foreground_tty();
    let tty_raw = tty.as_ref().map(|fd| fd.as_raw_fd());

    tracing::debug!(var = %request.var, source = "cmd", command = %shown, "running command");
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(if live_stderr {
            Stdio::inherit()
        } else {
            Stdio::piped()
        })
        .process_group(0);
    let mut guard = FetchGuard::install();
    let ttou = guard.previous_ttou;
    // SAFETY: the closure makes only async-signal-safe calls (prctl,
    // tcsetpgrp, getpid, sigaction) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // The command dies with keyrun, even on SIGKILL.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            if let Some(fd) = tty_raw {
                // SIGTTOU is ignored here (inherited from keyrun's guard),
                // so a background group may take the terminal.
                libc::tcsetpgrp(fd, libc::getpid());
            }
            if let Some(action) = &ttou {
                let _ = signal::sigaction(Signal::SIGTTOU, action);
            }
            Ok(())
        });
    }

    let mut child = command.spawn().map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => SourceError::new(
            ErrorKind::NotFound,
            format!("{shown}: program {program:?} not found; install it or give its full path"),
        ),
        std::io::ErrorKind::PermissionDenied => SourceError::new(
            ErrorKind::Denied,
            format!("{shown}: program {program:?} cannot be executed (permission denied)"),
        ),
        _ => SourceError::new(
            ErrorKind::Invalid,
            format!("{shown}: cannot start {program:?}: {err}"),
        ),
    })?;
    guard.started(&child, tty);

    let mut stdout = Zeroizing::new(Vec::new());
    let mut stderr = Vec::new();
    let collected = collect_output(&mut child, &mut stdout, &mut stderr, deadline);
    if collected != Collected::Closed {
        guard.kill_group();
    }
    let status = wait_until(&mut child, deadline, &guard);
    drop(guard);
    let mut value = Secret::new(std::mem::take(&mut *stdout));
    let tail = || {
        if live_stderr {
            "; see its stderr above".to_string()
        } else {
            stderr_tail(&stderr, &value)
        }
    };

    if collected == Collected::TimedOut || matches!(status, Err(Waited::TimedOut)) {
        return Err(SourceError::new(
            ErrorKind::TimedOut,
            format!(
                "{shown}: the command did not finish within {}; it may be waiting for input or a network; \
                 raise `timeout` under [command] if it is only slow{}",
                humanize(timeout),
                tail()
            ),
        ));
    }
    if collected == Collected::TooLarge {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!("{shown}: the command printed more than {MAX_OUTPUT_BYTES} bytes; a key is far shorter, so check the command"),
        ));
    }
    if collected == Collected::HeldOpen {
        tracing::debug!(command = %shown, "killed processes the command left holding its output");
    }
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => {
            return Err(SourceError::new(
                ErrorKind::Invalid,
                format!("{shown}: the command failed ({status}){}", tail()),
            ))
        }
        Err(Waited::Failed(err)) => {
            return Err(SourceError::new(
                ErrorKind::Invalid,
                format!("{shown}: cannot wait for the command: {err}"),
            ))
        }
        Err(Waited::TimedOut) => {}
    }
    if value.is_empty() {
        return Err(SourceError::new(
            ErrorKind::NotFound,
            format!(
                "{shown}: the command succeeded but printed nothing on stdout{}",
                tail()
            ),
        ));
    }

    value.strip_final_newline();
    Ok(Resolved::new(value))
}

enum Waited {
    TimedOut,
    Failed(std::io::Error),
}

/// Waits for the command until the deadline, then kills its process group
/// and reaps it.
fn wait_until(
    child: &mut Child,
    deadline: Instant,
    guard: &FetchGuard,
) -> Result<ExitStatus, Waited> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(err) => return Err(Waited::Failed(err)),
        }
        if Instant::now() >= deadline {
            guard.kill_group();
            let _ = child.wait();
            return Err(Waited::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads the command's stdout and stderr until both close, the deadline
/// passes, stdout passes [`MAX_OUTPUT_BYTES`], or the command exited and
/// [`EXIT_GRACE`] passed with a pipe still open. Stderr keeps only its
/// last [`STDERR_TAIL_BYTES`].
fn collect_output(
    child: &mut Child,
    stdout: &mut Vec<u8>,
    stderr: &mut Vec<u8>,
    deadline: Instant,
) -> Collected {
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let mut chunk = Zeroizing::new([0u8; 4096]);
    let mut exited_at: Option<Instant> = None;

    while out_pipe.is_some() || err_pipe.is_some() {
        let now = Instant::now();
        if now >= deadline {
            return Collected::TimedOut;
        }
        if exited_at.is_none() && matches!(child.try_wait(), Ok(Some(_))) {
            exited_at = Some(now);
        }
        if exited_at.is_some_and(|at| now.duration_since(at) >= EXIT_GRACE) {
            return Collected::HeldOpen;
        }
        let wait = deadline
            .saturating_duration_since(now)
            .min(EXIT_CHECK_INTERVAL);

        let mut fds = Vec::with_capacity(2);
        if let Some(pipe) = &out_pipe {
            fds.push(PollFd::new(as_fd(pipe.as_raw_fd()), PollFlags::POLLIN));
        }
        if let Some(pipe) = &err_pipe {
            fds.push(PollFd::new(as_fd(pipe.as_raw_fd()), PollFlags::POLLIN));
        }
        let millis = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        match poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return Collected::Closed,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);

        let mut index = 0;
        if out_pipe.is_some() {
            if ready[index] && !read_chunk(&mut out_pipe, stdout, &mut chunk[..]) {
                out_pipe = None;
            }
            if stdout.len() > MAX_OUTPUT_BYTES {
                return Collected::TooLarge;
            }
            index += 1;
        }
        if err_pipe.is_some() && ready[index] {
            if !read_chunk(&mut err_pipe, stderr, &mut chunk[..]) {
                err_pipe = None;
            }
            if stderr.len() > 2 * STDERR_TAIL_BYTES {
                stderr.drain(..stderr.len() - STDERR_TAIL_BYTES);
            }
        }
    }
    Collected::Closed
}

/// Reads what is available into `sink`; returns false at end of stream.
fn read_chunk<R: Read>(pipe: &mut Option<R>, sink: &mut Vec<u8>, chunk: &mut [u8]) -> bool {
    let Some(reader) = pipe.as_mut() else {
        return false;
    };
    match reader.read(chunk) {
        Ok(0) => false,
        Ok(n) => {
            // Reserve first, so a value never sits in a buffer that a
            // reallocation frees without wiping.
            if sink.capacity() - sink.len() < n {
                let mut grown = Zeroizing::new(Vec::with_capacity((sink.len() + n) * 2));
                grown.extend_from_slice(sink);
                sink.fill(0);
                std::mem::swap(sink, &mut grown);
            }
            sink.extend_from_slice(&chunk[..n]);
            chunk[..n].fill(0);
            true
        }
        Err(err) if err.kind() == std::io::ErrorKind::Interrupted => true,
        Err(_) => false,
    }
}

fn as_fd(raw: i32) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: the pipe outlives the poll call that uses this borrow; the
    // 'static lifetime never leaves `collect_output`.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) }
}

/// The last lines of the command's stderr for an error message, with every
/// word hidden that may be the value in any form: a word that contains the
/// trimmed value, a line or a word of stdout, or that has the shape of a
/// credential (see [`looks_like_credential`]).
fn stderr_tail(stderr: &[u8], value: &Secret) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL_BYTES);
    let text = String::from_utf8_lossy(&stderr[start..]).into_owned();
    let printed = Zeroizing::new(String::from_utf8_lossy(value.expose()).into_owned());
    let mut needles: Vec<&str> = vec![printed.trim()];
    needles.extend(printed.lines().map(str::trim));
    needles.extend(printed.split_whitespace());
    needles.extend(printed.split_whitespace().map(core_of));
    needles.retain(|n| !n.is_empty());

    let mut lines = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line
            .split_whitespace()
            .map(|word| {
                let core = core_of(word);
                let printed_here = needles.iter().any(|n| {
                    (n.len() >= 4 && word.contains(n))
                        || *n == core
                        || (core.len() >= 8 && n.contains(core))
                });
                if printed_here || looks_like_credential(core) {
                    "***"
                } else {
                    word
                }
            })
            .collect();
        lines.push(words.join(" "));
    }
    let shown = lines.join("\n");
    let shown = shown.trim();
    if shown.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with (words that may be secret shown as ***):\n{shown}")
    }
}

/// A word without the punctuation around it (quotes, commas, brackets).
fn core_of(word: &str) -> &str {
    word.trim_matches(|c: char| !c.is_ascii_alphanumeric())
}

/// Tells whether a word has the shape of a credential: 16 or more
/// characters of the kinds keys and tokens use, with both letters and
/// digits, such as `sk-proj-...` or a base64 token.
fn looks_like_credential(word: &str) -> bool {
    word.len() >= 16
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_+/=.~".contains(c))
        && word.chars().any(|c| c.is_ascii_alphabetic())
        && word.chars().any(|c| c.is_ascii_digit())
}

fn humanize(duration: Duration) -> String {
    if duration.as_millis().is_multiple_of(1000) {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(line: &str) -> String {
        CommandSource.display(&Reference::parse(&format!("cmd:{line}")).unwrap())
    }

    #[test]
    fn display_hides_credential_arguments() {
        assert_eq!(
            shown("op read op://ci/openai/key"),
            "cmd:op read op://ci/openai/key"
        );
        assert_eq!(shown("tool --token=abc123 get"), "cmd:tool --token=*** get");
        assert_eq!(
            shown("tool --password hunter2 get"),
            "cmd:tool --password *** get"
        );
    }

    #[test]
    fn display_hides_headers_users_and_scripts() {
        let text = shown("curl -H \"Authorization: Bearer tok1\" --pw hunter2 -u admin:hunter3 https://u:pw9@h/x");
        assert!(!text.contains("tok1"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("hunter3"), "{text}");
        assert!(!text.contains("pw9"), "{text}");
        assert!(text.starts_with("cmd:curl -H"), "{text}");
        let script = shown("sh -c \"echo sk-abc; exit 1\"");
        assert!(!script.contains("sk-abc"), "{script}");
    }

    #[test]
    fn stderr_tail_hides_value_in_any_form() {
        let value = Secret::new(b"\"KEY-abc\"\nexpires: never\n".to_vec());
        let tail = stderr_tail(b"auth failed for KEY-abc, warn: 'KEY-abc'\n", &value);
        assert!(!tail.contains("KEY-abc"), "{tail}");
        assert!(tail.contains("auth failed"), "{tail}");
        let empty = Secret::new(Vec::new());
        let tail = stderr_tail(b"error: sk-test-0123456789abcdef rejected\n", &empty);
        assert!(!tail.contains("0123456789"), "{tail}");
        assert!(tail.contains("rejected"), "{tail}");
    }
}
