//! The child: its environment, its start, the signals keyrun forwards to
//! it, and its exit status.
//!
//! keyrun follows the child's life in order: [`capture_start_state`] notes
//! the signal mask and dispositions keyrun was started with, [`spawn`]
//! starts the child with exactly those, [`Supervisor::wait`] forwards
//! signals until the child ends, and [`Outcome`] turns its end into
//! keyrun's own.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use anyhow::{Context as _, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SigAction, SigHandler, SigSet, SigmaskHow, Signal};

use crate::secret::Secret;

/// Signals keyrun passes on to the child once it runs.
pub const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// The signal state keyrun was started with, restored in the child.
struct StartState {
    mask: SigSet,
    sigpipe: SigAction,
}

static START_STATE: OnceLock<StartState> = OnceLock::new();

/// Records the signal mask and the SIGPIPE disposition keyrun was started
/// with, then ignores SIGPIPE so that a closed output pipe is an error keyrun
/// sees rather than a silent death. Call this first thing in `main`: keyrun
/// has no Rust runtime start-up (`#![no_main]`), which would already have
/// replaced the SIGPIPE disposition.
pub fn capture_start_state() {
    let mask = SigSet::thread_get_mask().unwrap_or_else(|_| SigSet::empty());
    let ignore = SigAction::new(
        SigHandler::SigIgn,
        signal::SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: installing SIG_IGN runs no code in signal context.
    let sigpipe = unsafe { signal::sigaction(Signal::SIGPIPE, &ignore) }.unwrap_or_else(|_| {
        SigAction::new(
            SigHandler::SigDfl,
            signal::SaFlags::empty(),
            SigSet::empty(),
        )
    });
    let _ = START_STATE.set(StartState { mask, sigpipe });
}

/// The child's environment, built from keyrun's by visible steps.
#[derive(Default)]
pub struct ChildEnv {
    vars: Vec<(OsString, EnvValue)>,
}

enum EnvValue {
    Plain(OsString),
    Secret(Secret),
}

impl ChildEnv {
    /// Starts from keyrun's own environment.
    pub fn inherit() -> Self {
        let vars = std::env::vars_os()
            .map(|(name, value)| (name, EnvValue::Plain(value)))
            .collect();
        ChildEnv { vars }
    }

    /// Starts from the variables a clean environment keeps: PATH, HOME,
    /// USER, LOGNAME, SHELL, LANG, LC_*, TERM, TZ and TMPDIR.
    pub fn clean() -> Self {
        const KEPT: [&str; 9] = [
            "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TERM", "TZ", "TMPDIR",
        ];
        let vars = std::env::vars_os()
            .filter(|(name, _)| {
                let bytes = name.as_bytes();
                KEPT.iter().any(|kept| kept.as_bytes() == bytes) || bytes.starts_with(b"LC_")
            })
            .map(|(name, value)| (name, EnvValue::Plain(value)))
            .collect();
        ChildEnv { vars }
    }

    pub fn set_secret(&mut self, name: &str, value: Secret) {
        self.unset(name);
        tracing::debug!(var = name, "child environment: set");
        self.vars
            .push((OsString::from(name), EnvValue::Secret(value)));
    }

    /// Sets a variable that is not secret, such as `KEYRUN_SHELL`.
    pub fn set(&mut self, name: &str, value: &OsStr) {
        self.unset(name);
        tracing::debug!(var = name, "child environment: set");
        self.vars
            .push((OsString::from(name), EnvValue::Plain(value.to_os_string())));
    }

    pub fn unset(&mut self, name: &str) {
        let before = self.vars.len();
        self.vars
            .retain(|(var, _)| var.as_bytes() != name.as_bytes());
        if self.vars.len() != before {
            tracing::debug!(var = name, "child environment: unset");
        }
    }

    fn apply(&self, command: &mut Command) {
        command.env_clear();
        for (name, value) in &self.vars {
            match value {
                EnvValue::Plain(text) => command.env(name, text),
                EnvValue::Secret(secret) => command.env(name, OsStr::from_bytes(secret.expose())),
            };
        }
    }
}

/// Why the child could not start, with the exit status `env` and `timeout`
/// use for it.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{program}: command not found; check the name and PATH")]
    NotFound { program: String },
    #[error("{program}: cannot execute: {source}")]
    CannotExecute {
        program: String,
        source: std::io::Error,
    },
}

impl SpawnError {
    pub fn exit_code(&self) -> u8 {
        match self {
            SpawnError::NotFound { .. } => 127,
            SpawnError::CannotExecute { .. } => 126,
        }
    }
}

/// The read end of the pipe the signal handler writes to, and the handler's
/// copy of the write end.
static SIGNAL_PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// Marks a byte on the signal pipe: the kernel sent this signal, for the
/// terminal, to the whole foreground process group.
const FROM_KERNEL: u8 = 0x80;

extern "C" fn on_signal(
    signo: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // SAFETY: only async-signal-safe calls (read of errno, write) run here.
    unsafe {
        let saved_errno = *errno_location();
        let mut byte = signo as u8 & 0x7f;
        if !info.is_null() && sent_by_kernel(&*info) {
            byte |= FROM_KERNEL;
        }
        let fd = SIGNAL_PIPE_WRITE.load(Ordering::Relaxed);
        if fd >= 0 {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
        *errno_location() = saved_errno;
    }
}

#[cfg(target_os = "linux")]
fn sent_by_kernel(info: &libc::siginfo_t) -> bool {
    info.si_code == libc::SI_KERNEL
}

#[cfg(not(target_os = "linux"))]
fn sent_by_kernel(info: &libc::siginfo_t) -> bool {
    // SAFETY: si_pid is valid for every signal on macOS.
    info.si_code != libc::SI_USER && unsafe { info.si_pid() } == 0
}

#[cfg(target_os = "linux")]
unsafe fn errno_location() -> *mut libc::c_int {
    libc::__errno_location()
}

#[cfg(not(target_os = "linux"))]
unsafe fn errno_location() -> *mut libc::c_int {
    libc::__error()
}

/// Installs the forwarding handler for each forwarded signal that keyrun
/// was not started with ignored, and for SIGCHLD. A signal the parent
/// ignored stays ignored, as it does for the child after `exec`.
fn install_handlers() -> Result<OwnedFd> {
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .context("cannot create the signal pipe")?;
    SIGNAL_PIPE_WRITE.store(write_end.as_raw_fd(), Ordering::Relaxed);
    // The handler owns the write end for the rest of the process's life.
    std::mem::forget(write_end);

    let action = SigAction::new(
        SigHandler::SigAction(on_signal),
        signal::SaFlags::SA_SIGINFO | signal::SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in FORWARDED.iter().copied().chain([Signal::SIGCHLD]) {
        // SAFETY: the handler is async-signal-safe.
        let previous = unsafe { signal::sigaction(sig, &action) }
            .with_context(|| format!("cannot handle {sig}"))?;
        if previous.handler() == SigHandler::SigIgn && sig != Signal::SIGCHLD {
            // SAFETY: restoring SIG_IGN runs no code.
            unsafe { signal::sigaction(sig, &previous) }
                .with_context(|| format!("cannot restore {sig}"))?;
            tracing::debug!(signal = %sig, "left ignored, as keyrun was started");
        }
    }
    Ok(read_end)
}

/// A running child and the signal pipe that reports to keyrun.
pub struct Supervisor {
    child: Child,
    signals: OwnedFd,
}

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(u8),
    Signaled(Signal),
}

/// Starts `argv` with `env`, the signal mask and dispositions keyrun was
/// started with, and stdin, stdout and stderr inherited.
pub fn spawn(argv: &[OsString], env: ChildEnv) -> Result<Result<Supervisor, SpawnError>> {
    let signals = install_handlers()?;
    let (program, args) = argv.split_first().context("no command to run")?;
    let mut command = Command::new(program);
    command.args(args);
    env.apply(&mut command);
    drop(env);

    let start = START_STATE.get();
    let mask = start.map(|s| s.mask).unwrap_or_else(SigSet::empty);
    let sigpipe = start.map(|s| s.sigpipe);
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe calls (sigaction, sigprocmask).
    unsafe {
        command.pre_exec(move || {
            if let Some(action) = &sigpipe {
                signal::sigaction(Signal::SIGPIPE, action)?;
            }
            signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None)?;
            Ok(())
        });
    }

    let spawned = command.spawn();
    // Dropping the command frees its copies of the environment, values
    // included; the zeroing allocator wipes them.
    drop(command);

    let child = match spawned {
        Ok(child) => child,
        Err(err) => {
            let program = program.to_string_lossy().into_owned();
            return Ok(Err(match err.kind() {
                std::io::ErrorKind::NotFound => SpawnError::NotFound { program },
                _ => SpawnError::CannotExecute {
                    program,
                    source: err,
                },
            }));
        }
    };
    tracing::debug!(pid = child.id(), "child started");
    Ok(Ok(Supervisor { child, signals }))
}

impl Supervisor {
    /// Returns the child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Forwards signals to the child until it ends.
    pub fn wait(mut self) -> Result<Outcome> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        loop {
            if let Some(status) = self.child.try_wait().context("cannot wait for the child")? {
                return Ok(outcome_of(status));
            }

            let mut fds = [PollFd::new(self.signals_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(err) => return Err(err).context("cannot wait for signals"),
            }

            let mut buffer = [0u8; 64];
            loop {
                let read = nix::unistd::read(&self.signals, &mut buffer);
                let count = match read {
                    Ok(0) | Err(Errno::EAGAIN) => break,
                    Ok(count) => count,
                    Err(Errno::EINTR) => continue,
                    Err(err) => return Err(err).context("cannot read the signal pipe"),
                };
                for &byte in &buffer[..count] {
                    self.forward(pid, byte);
                }
            }
        }
    }

    fn signals_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.signals.as_fd()
    }

    fn forward(&self, pid: nix::unistd::Pid, byte: u8) {
        let Ok(sig) = Signal::try_from((byte & 0x7f) as i32) else {
            return;
        };
        if sig == Signal::SIGCHLD {
            return;
        }
        if byte & FROM_KERNEL != 0 {
            // The terminal sent it to the whole foreground process group,
            // which the child shares with keyrun: it has its copy already.
            tracing::debug!(signal = %sig, "signal from the terminal reached the child directly");
            return;
        }
        tracing::debug!(signal = %sig, pid = pid.as_raw(), "forwarding signal");
        if let Err(err) = signal::kill(pid, sig) {
            tracing::debug!(signal = %sig, "forwarding failed: {err}");
        }
    }
}

fn outcome_of(status: std::process::ExitStatus) -> Outcome {
    if let Some(code) = status.code() {
        return Outcome::Exited(code as u8);
    }
    match status.signal().map(Signal::try_from) {
        Some(Ok(sig)) => Outcome::Signaled(sig),
        // An unknown signal number: report it as a shell would.
        _ => Outcome::Exited(128u8.wrapping_add(status.signal().unwrap_or(0) as u8)),
    }
}

/// Ends keyrun the way the child ended: by the same signal, so that a
/// shell sees the same status, or with 128 + N where the signal does not
/// end keyrun.
pub fn die_by_signal(sig: Signal) -> ! {
    let default = SigAction::new(
        SigHandler::SigDfl,
        signal::SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: installing SIG_DFL runs no code.
    let _ = unsafe { signal::sigaction(sig, &default) };
    let mut only = SigSet::empty();
    only.add(sig);
    let _ = signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
    let _ = signal::raise(sig);
    // Still alive: the signal's default action does not terminate (SIGWINCH,
    // SIGCHLD) or it was caught elsewhere.
    std::process::exit(128 + sig as i32)
}
