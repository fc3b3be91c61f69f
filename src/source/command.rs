//! `cmd:COMMAND LINE`: the standard output of a program, such as
//! `op read op://ci/openai/key` or `pass show openai`.
//!
//! The line is split into words as a POSIX shell would, but no shell runs
//! it, so no expansion or redirection happens.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{Context, ErrorKind, Request, Resolved, Source, SourceError};
use crate::reference::Reference;
use crate::secret::Secret;

pub const SETTINGS: &[&str] = &["timeout"];

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The most output keyrun reads from a command; a key is far shorter.
const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// How much of the command's stderr an error shows.
const STDERR_TAIL_BYTES: usize = 2048;

/// Words in a command line whose value is a credential, such as
/// `--token=...` or `--password X`; [`CommandSource::display`] hides the
/// value.
const SECRET_WORDS: [&str; 6] = ["token", "secret", "password", "passwd", "key", "auth"];

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
            } else {
                hide_next = names_secret && word.starts_with('-');
                shown.push(shell_words::quote(&word).into_owned());
            }
        }
        format!("cmd:{}", shown.join(" "))
    }
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

    tracing::debug!(var = %request.var, source = "cmd", command = %shown, "running command");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| match err.kind() {
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

    let (stdout, stderr, timed_out) = collect_output(&mut child, timeout);
    if timed_out {
        // The program may ignore SIGTERM; a key fetch has no state to save.
        let _ = child.kill();
    }
    let status = child.wait();
    let mut value = Secret::new(stdout);

    if timed_out {
        return Err(SourceError::new(
            ErrorKind::TimedOut,
            format!(
                "{shown}: the command did not finish within {}; it may be waiting for input or a network; \
                 raise `timeout` under [command] if it is only slow{}",
                humanize(timeout),
                stderr_tail(&stderr, &value)
            ),
        ));
    }
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => {
            return Err(SourceError::new(
                ErrorKind::Invalid,
                format!(
                    "{shown}: the command failed ({status}){}",
                    stderr_tail(&stderr, &value)
                ),
            ))
        }
        Err(err) => {
            return Err(SourceError::new(
                ErrorKind::Invalid,
                format!("{shown}: cannot wait for the command: {err}"),
            ))
        }
    }
    if value.len() > MAX_OUTPUT_BYTES {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!("{shown}: the command printed more than {MAX_OUTPUT_BYTES} bytes; a key is far shorter, so check the command"),
        ));
    }
    if value.is_empty() {
        return Err(SourceError::new(
            ErrorKind::NotFound,
            format!(
                "{shown}: the command succeeded but printed nothing on stdout{}",
                stderr_tail(&stderr, &value)
            ),
        ));
    }

    value.strip_final_newline();
    Ok(Resolved::new(value))
}

/// Reads the child's stdout and stderr until both close or the deadline
/// passes. Returns stdout, stderr, and whether the deadline passed.
fn collect_output(child: &mut std::process::Child, timeout: Duration) -> (Vec<u8>, Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let mut chunk = zeroize::Zeroizing::new([0u8; 4096]);

    while out_pipe.is_some() || err_pipe.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (stdout, stderr, true);
        }
        let mut fds = Vec::with_capacity(2);
        if let Some(pipe) = &out_pipe {
            fds.push(PollFd::new(as_fd(pipe.as_raw_fd()), PollFlags::POLLIN));
        }
        if let Some(pipe) = &err_pipe {
            fds.push(PollFd::new(as_fd(pipe.as_raw_fd()), PollFlags::POLLIN));
        }
        let millis = left.as_millis().min(i32::MAX as u128) as i32;
        match poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return (stdout, stderr, false),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);

        let mut index = 0;
        if out_pipe.is_some() {
            if ready[index]
                && !read_chunk(
                    &mut out_pipe,
                    &mut stdout,
                    &mut chunk[..],
                    MAX_OUTPUT_BYTES + 1,
                )
            {
                out_pipe = None;
            }
            index += 1;
        }
        if err_pipe.is_some()
            && ready[index]
            && !read_chunk(&mut err_pipe, &mut stderr, &mut chunk[..], usize::MAX)
        {
            err_pipe = None;
        }
    }
    (stdout, stderr, false)
}

/// Reads what is available into `sink`; returns false at end of stream.
fn read_chunk<R: Read>(
    pipe: &mut Option<R>,
    sink: &mut Vec<u8>,
    chunk: &mut [u8],
    limit: usize,
) -> bool {
    let Some(reader) = pipe.as_mut() else {
        return false;
    };
    match reader.read(chunk) {
        Ok(0) => false,
        Ok(n) => {
            if sink.len() < limit {
                sink.extend_from_slice(&chunk[..n.min(limit - sink.len())]);
            }
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

/// The last lines of the command's stderr, with any copy of the printed
/// value replaced, for an error message.
fn stderr_tail(stderr: &[u8], value: &Secret) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL_BYTES);
    let mut tail = stderr[start..].to_vec();
    let mut needle = value.duplicate();
    needle.strip_final_newline();
    if needle.len() >= 4 {
        tail = replace_all(&tail, needle.expose(), b"***");
    }
    let text = String::from_utf8_lossy(&tail);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with:\n{text}")
    }
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = memchr::memmem::find(rest, needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn humanize(duration: Duration) -> String {
    if duration.as_millis() % 1000 == 0 {
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
    fn replace_all_replaces_every_copy() {
        assert_eq!(replace_all(b"a KEY b KEY", b"KEY", b"***"), b"a *** b ***");
    }
}
