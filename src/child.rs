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
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SigAction, SigHandler, SigSet, SigmaskHow, Signal};

use crate::mask::{MaskStream, Masker};
use crate::secret::Secret;
use crate::terminal::{Terminal, Ttys};

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
    #[error(
        "{program}: its interpreter {interpreter} was not found; check the #! line at the top of {path}"
    )]
    InterpreterNotFound {
        program: String,
        path: String,
        /// The `#!` line's program, or a description when the file has no
        /// such line (a binary whose dynamic loader is missing).
        interpreter: String,
    },
    #[error("{program}: cannot execute: {source}")]
    CannotExecute {
        program: String,
        source: std::io::Error,
    },
}

impl SpawnError {
    pub fn exit_code(&self) -> u8 {
        match self {
            SpawnError::NotFound { .. } | SpawnError::InterpreterNotFound { .. } => 127,
            SpawnError::CannotExecute { .. } => 126,
        }
    }
}

/// Explains an ENOENT from `exec`: either no file has the program's name,
/// or the file exists and the kernel did not find its interpreter.
fn not_found(program: String) -> SpawnError {
    let Some(path) = locate_program(Path::new(&program)) else {
        return SpawnError::NotFound { program };
    };
    let interpreter = read_interpreter(&path)
        .map(|name| format!("\"{name}\""))
        .unwrap_or_else(|| "(the #! line, or the dynamic loader of a binary)".to_string());
    SpawnError::InterpreterNotFound {
        program,
        path: path.display().to_string(),
        interpreter,
    }
}

/// Finds the file `exec` would run: the path itself when it contains a
/// slash, else the first executable file of that name on PATH.
fn locate_program(program: &Path) -> Option<PathBuf> {
    let is_executable_file = |path: &Path| {
        std::fs::metadata(path)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.as_os_str().as_bytes().contains(&b'/') {
        return is_executable_file(program).then(|| program.to_path_buf());
    }
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .map(|folder| folder.join(program))
        .find(|candidate| is_executable_file(candidate))
}

/// Returns the interpreter named on a script's `#!` line, if it has one.
fn read_interpreter(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let count = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..count].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let text = String::from_utf8_lossy(line);
    let name = text.split_whitespace().next()?;
    // The name is printed, so keep it to plain characters.
    Some(
        name.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
    )
}

/// The read end of the pipe the signal handler writes to, and the handler's
/// copy of the write end.
static SIGNAL_PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// Marks a byte on the signal pipe: the kernel sent this signal, for the
/// terminal, to the whole foreground process group.
// NOTE: a process that signals keyrun's whole group (`kill -TERM -PGID`)
// reaches the child directly and through keyrun, so the child gets the
// signal twice. The siginfo of `kill(-pgid)` and `kill(pid)` is the same,
// and starting the child in a group of its own would stop group-wide
// SIGSTOP and SIGKILL from reaching it.
const FROM_KERNEL: u8 = 0x80;

pub(crate) extern "C" fn on_signal(
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
    let read_end = above_standard_streams(read_end)?;
    let write_end = above_standard_streams(write_end)?;
    SIGNAL_PIPE_WRITE.store(write_end.as_raw_fd(), Ordering::Relaxed);
    // The handler owns the write end for the rest of the process's life.
    std::mem::forget(write_end);

    // No SA_RESTART: a write to keyrun's own stdout that blocks because
    // the reader is slow must return EINTR, so the signal is forwarded
    // then and not once the reader catches up. The waiting loop's polls,
    // reads and writes all retry on EINTR.
    let action = SigAction::new(
        SigHandler::SigAction(on_signal),
        signal::SaFlags::SA_SIGINFO,
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

/// Moves `fd` to a number above 2 when it took a standard stream's, so
/// keyrun's own log lines never land in the signal pipe.
fn above_standard_streams(fd: OwnedFd) -> Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let moved = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
        .context("cannot move the signal pipe above the standard streams")?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(moved) })
}

/// A running child, the signal pipe that reports to keyrun, and the read
/// ends of the child's output pipes that keyrun masks.
pub struct Supervisor {
    child: Child,
    signals: OwnedFd,
    outputs: Vec<(OwnedFd, std::os::fd::RawFd)>,
    terminal: Option<Terminal>,
    /// Whether keyrun's stdin, read for a child on a pseudo-terminal, is
    /// still open.
    stdin_open: bool,
}

/// The child's output streams that keyrun reads through a pipe, to mask
/// them, rather than letting the child inherit them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Piped {
    pub stdout: bool,
    pub stderr: bool,
    /// Run the child on a pseudo-terminal for those of keyrun's streams
    /// that are terminals.
    pub terminal: Option<Ttys>,
}

/// The matcher and the idle delay after which held output is written.
pub struct Masking {
    pub masker: Masker,
    pub delay: Duration,
}

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(u8),
    Signaled(SignalNumber),
}

/// A signal number as the kernel reports it, real-time signals included,
/// which nix's `Signal` does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalNumber(pub i32);

impl From<Signal> for SignalNumber {
    fn from(sig: Signal) -> Self {
        SignalNumber(sig as i32)
    }
}

impl std::fmt::Display for SignalNumber {
    /// Writes the signal's name: `SIGTERM`, `SIGRTMIN+3`, or `signal N`
    /// for a number with no name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Ok(sig) = Signal::try_from(self.0) {
            return f.write_str(sig.as_str());
        }
        #[cfg(target_os = "linux")]
        if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&self.0) {
            return write!(f, "SIGRTMIN+{}", self.0 - libc::SIGRTMIN());
        }
        write!(f, "signal {}", self.0)
    }
}

/// Starts `argv` with `env`, the signal mask and dispositions keyrun was
/// started with, stdin inherited, and stdout and stderr inherited unless
/// `piped` names them.
pub fn spawn(
    argv: &[OsString],
    env: ChildEnv,
    piped: Piped,
) -> Result<Result<Supervisor, SpawnError>> {
    let signals = install_handlers()?;
    let (program, args) = argv.split_first().context("no command to run")?;
    let mut command = Command::new(program);
    command.args(args);
    env.apply(&mut command);
    drop(env);
    if piped.stdout {
        command.stdout(Stdio::piped());
    }
    if piped.stderr {
        command.stderr(Stdio::piped());
    }
    let mut terminal = match piped.terminal {
        Some(ttys) => {
            let terminal = Terminal::open(ttys)?;
            terminal.attach(&mut command)?;
            Some(terminal)
        }
        None => None,
    };

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

    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            let program = program.to_string_lossy().into_owned();
            return Ok(Err(match err.kind() {
                std::io::ErrorKind::NotFound => not_found(program),
                _ => SpawnError::CannotExecute {
                    program,
                    source: err,
                },
            }));
        }
    };
    tracing::debug!(pid = child.id(), "child started");
    let mut outputs = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        outputs.push((OwnedFd::from(stdout), libc::STDOUT_FILENO));
    }
    if let Some(stderr) = child.stderr.take() {
        outputs.push((OwnedFd::from(stderr), libc::STDERR_FILENO));
    }
    if let Some(terminal) = &mut terminal {
        outputs.push((terminal.master_clone()?, terminal.output()));
        terminal.started()?;
    }
    for (fd, _) in &outputs {
        set_nonblocking(fd)?;
    }
    Ok(Ok(Supervisor {
        child,
        signals,
        outputs,
        terminal,
        stdin_open: true,
    }))
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).context("cannot read the output pipe's flags")?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).context("cannot make the output pipe non-blocking")?;
    Ok(())
}

impl Supervisor {
    /// Returns the child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Forwards signals to the child, and passes its piped output through
    /// the masker, until it ends.
    pub fn wait(mut self, masking: Option<&Masking>) -> Result<Outcome> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let mut pumps: Vec<Pump> = match masking {
            Some(masking) => std::mem::take(&mut self.outputs)
                .into_iter()
                .map(|(source, target)| Pump::new(source, target, &masking.masker))
                .collect(),
            None => Vec::new(),
        };
        let delay = masking.map_or(Duration::ZERO, |m| m.delay);

        // Set when a SIGCHLD arrives, so the loop checks the child's status
        // only then and not once per chunk of output.
        let mut check_child = true;
        // Set when signals handled during a blocked write included SIGCHLD.
        let child_changed = std::cell::Cell::new(false);
        loop {
            let status = if std::mem::take(&mut check_child) {
                self.child.try_wait().context("cannot wait for the child")?
            } else {
                None
            };
            if let Some(status) = status {
                // NOTE: output that a process the child left behind writes
                // after this drain is dropped, because waiting for the
                // pipe to close would hang on a background daemon.
                for pump in &mut pumps {
                    pump.drain(&|| self.relay_signals(pid, &child_changed))?;
                }
                return Ok(outcome_of(status));
            }

            let mut fds = vec![PollFd::new(self.signals_fd(), PollFlags::POLLIN)];
            let reads_input = self
                .terminal
                .as_ref()
                .is_some_and(|t| t.reads_stdin() && self.stdin_open);
            if reads_input {
                // SAFETY: keyrun's stdin stays open for its whole life.
                let stdin = unsafe { std::os::fd::BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
                fds.push(PollFd::new(stdin, PollFlags::POLLIN));
            }
            let first_output = fds.len();
            let open: Vec<usize> = (0..pumps.len()).filter(|&i| pumps[i].is_open()).collect();
            for &index in &open {
                if let Some(source) = pumps[index].source() {
                    fds.push(PollFd::new(source, PollFlags::POLLIN));
                }
            }
            let timeout = pumps
                .iter()
                .filter_map(|pump| pump.flush_due(delay))
                .min()
                .map(|due| due.saturating_duration_since(Instant::now()));
            let timeout = match timeout {
                // Round up, so the poll does not return just before the
                // flush is due.
                Some(wait) => {
                    PollTimeout::try_from(wait.as_millis() as u64 + 1).unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(err) => return Err(err).context("cannot wait for signals"),
            }
            let signals_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
            let input_ready = reads_input && fds[1].revents().is_some_and(|r| !r.is_empty());
            let ready: Vec<bool> = fds[first_output..]
                .iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);

            if input_ready {
                if let Some(terminal) = &self.terminal {
                    self.stdin_open = terminal.forward_input(pid)?;
                }
            }
            for (&index, ready) in open.iter().zip(ready) {
                if !ready {
                    continue;
                }
                // A full read means more output is likely waiting: read
                // again before the next poll, a bounded number of times so
                // signals and the other stream still get their turn.
                for _ in 0..READS_PER_POLL {
                    let size = pumps[index].read_size;
                    if pumps[index].pump(&|| self.relay_signals(pid, &child_changed))? < size {
                        break;
                    }
                }
            }
            let now = Instant::now();
            for pump in &mut pumps {
                if pump.flush_due(delay).is_some_and(|due| due <= now) {
                    pump.flush(&|| self.relay_signals(pid, &child_changed))?;
                }
            }

            if signals_ready {
                check_child |= self.read_signals(pid)?;
            }
            check_child |= child_changed.take();
        }
    }

    /// Handles the signals on the signal pipe. Returns whether SIGCHLD was
    /// among them.
    fn read_signals(&self, pid: nix::unistd::Pid) -> Result<bool> {
        let mut buffer = [0u8; 64];
        let mut child_changed = false;
        loop {
            let read = nix::unistd::read(&self.signals, &mut buffer);
            let count = match read {
                Ok(0) | Err(Errno::EAGAIN) => return Ok(child_changed),
                Ok(count) => count,
                Err(Errno::EINTR) => continue,
                Err(err) => return Err(err).context("cannot read the signal pipe"),
            };
            for &byte in &buffer[..count] {
                if byte & 0x7f == Signal::SIGCHLD as u8 {
                    child_changed = true;
                }
                self.forward(pid, byte);
            }
        }
    }

    /// Forwards the signals that arrived while a write of the child's
    /// output was blocked, and notes a SIGCHLD among them in
    /// `child_changed`.
    fn relay_signals(&self, pid: nix::unistd::Pid, child_changed: &std::cell::Cell<bool>) {
        match self.read_signals(pid) {
            Ok(changed) => child_changed.set(child_changed.get() || changed),
            Err(err) => tracing::debug!("cannot relay signals during a write: {err:#}"),
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
        if let Some(terminal) = &self.terminal {
            // A child on a pseudo-terminal is in its own session, so the
            // signals of keyrun's terminal do not reach it by themselves.
            match sig {
                Signal::SIGWINCH => return terminal.sync_window_size(),
                Signal::SIGTSTP => return terminal.suspend(pid),
                _ => {}
            }
        } else if byte & FROM_KERNEL != 0 {
            // The terminal sent it to the whole foreground process group,
            // which the child shares with keyrun: it has its copy already.
            tracing::debug!(signal = %sig, "signal from the terminal reached the child directly");
            return;
        }
        // NOTE: a process that signals the whole group (`kill -TERM -PGID`)
        // reaches the child directly as well, and it gets this second copy:
        // siginfo does not say whether a kill named the group.
        tracing::debug!(signal = %sig, pid = pid.as_raw(), "forwarding signal");
        if let Err(err) = signal::kill(pid, sig) {
            tracing::debug!(signal = %sig, "forwarding failed: {err}");
        }
    }
}

/// Bytes read from a child's output pipe at a time: the default capacity of
/// a Linux pipe. A 1 MiB pipe with 256 KiB reads measured slower in
/// benches/mask.sh, probably because the data then leaves the CPU cache
/// between the child's write and keyrun's read.
const READ_SIZE: usize = 64 * 1024;

/// The first read of a stream. Each read that fills the buffer doubles the
/// next up to [`READ_SIZE`], so a command that prints little does not pay
/// for zeroing and wiping 64 KiB buffers.
const FIRST_READ_SIZE: usize = 4 * 1024;

/// The maximum number of reads of one stream between two polls.
const READS_PER_POLL: usize = 8;

/// One of the child's output streams on its way through the masker to
/// keyrun's own stdout or stderr.
struct Pump<'m> {
    /// The read end of the child's pipe; `None` once it is closed.
    source: Option<OwnedFd>,
    target: std::os::fd::RawFd,
    stream: MaskStream<'m>,
    last_read: Instant,
    /// The size of the next read.
    read_size: usize,
}

impl<'m> Pump<'m> {
    fn new(source: OwnedFd, target: std::os::fd::RawFd, masker: &'m Masker) -> Self {
        Pump {
            source: Some(source),
            target,
            stream: MaskStream::new(masker),
            last_read: Instant::now(),
            read_size: FIRST_READ_SIZE,
        }
    }

    fn is_open(&self) -> bool {
        self.source.is_some()
    }

    fn source(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.source.as_ref().map(|fd| fd.as_fd())
    }

    /// When the held bytes are to be written, if any are held.
    fn flush_due(&self, delay: Duration) -> Option<Instant> {
        self.stream.holds_bytes().then(|| self.last_read + delay)
    }

    /// Reads and masks what the pipe has now, and returns the count read;
    /// at its end, writes the held bytes and closes it.
    fn pump(&mut self, relay: &dyn Fn()) -> Result<usize> {
        let Some(source) = &self.source else {
            return Ok(0);
        };
        let buffer = self.stream.read_buffer(self.read_size);
        let count = match nix::unistd::read(source, buffer) {
            Ok(count) => count,
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => {
                self.commit(0, relay)?;
                return Ok(0);
            }
            // A pseudo-terminal's master reports the end of the child's
            // side this way.
            Err(Errno::EIO) => 0,
            Err(err) => {
                self.commit(0, relay)?;
                return Err(err).context("cannot read the command's output");
            }
        };
        self.last_read = Instant::now();
        let full = count == self.read_size;
        if full {
            self.read_size = (self.read_size * 2).min(READ_SIZE);
        }
        self.commit(count, relay)?;
        if count == 0 {
            tracing::debug!(fd = self.target, "the command closed its output");
            self.flush(relay)?;
            self.source = None;
        }
        Ok(count)
    }

    /// Reads until the pipe is empty or closed, then writes the held bytes.
    fn drain(&mut self, relay: &dyn Fn()) -> Result<()> {
        while self.pump(relay)? > 0 {}
        self.flush(relay)
    }

    fn commit(&mut self, count: usize, relay: &dyn Fn()) -> Result<()> {
        let target = self.target;
        let result = self
            .stream
            .commit(count, &mut |bytes: &[u8]| write_all(target, bytes, relay));
        self.after_write(result)
    }

    fn flush(&mut self, relay: &dyn Fn()) -> Result<()> {
        let target = self.target;
        let result = self
            .stream
            .flush(&mut |bytes: &[u8]| write_all(target, bytes, relay));
        self.after_write(result)
    }

    /// A reader of keyrun's output that went away closes the child's pipe
    /// too, so the child gets the broken pipe it would get without keyrun.
    fn after_write(&mut self, result: std::io::Result<()>) -> Result<()> {
        match result {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
                tracing::debug!(fd = self.target, "the reader of keyrun's output went away");
                self.source = None;
                self.stream.discard();
                Ok(())
            }
            Err(err) => Err(err).context("cannot write the command's output"),
        }
    }
}

/// How long a write to a full non-blocking descriptor waits before it
/// relays signals and tries again.
const FULL_WRITE_POLL_MS: u16 = 50;

/// Writes all of `bytes` to `fd`, waiting while the reader is slow. A
/// signal interrupts a blocked write (the handlers have no SA_RESTART),
/// and `relay` forwards it before the write goes on.
fn write_all(fd: std::os::fd::RawFd, mut bytes: &[u8], relay: &dyn Fn()) -> std::io::Result<()> {
    // SAFETY: keyrun's stdout and stderr stay open for its whole life.
    let target = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    while !bytes.is_empty() {
        match nix::unistd::write(target, bytes) {
            Ok(written) => {
                bytes = &bytes[written..];
                // A signal also cuts a write short after some bytes.
                if !bytes.is_empty() {
                    relay();
                }
            }
            Err(Errno::EINTR) => relay(),
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(target, PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::from(FULL_WRITE_POLL_MS));
                relay();
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

fn outcome_of(status: std::process::ExitStatus) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Exited(code as u8),
        (None, Some(number)) => Outcome::Signaled(SignalNumber(number)),
        // Neither an exit nor a signal: `wait` reports only those for a
        // child that ended, so this is unreachable in practice.
        (None, None) => Outcome::Exited(crate::run::FAILURE),
    }
}

/// Ends keyrun the way the child ended: by the same signal number, so that
/// a shell sees the same status, or with 128 + N where the signal does not
/// end keyrun.
pub fn die_by_signal(sig: SignalNumber) -> ! {
    // SAFETY: the sigaction and sigset structs are zeroed and then set by
    // libc's own functions. Installing SIG_DFL and raising a signal run no
    // Rust code in signal context.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut default.sa_mask);
        libc::sigaction(sig.0, &default, std::ptr::null_mut());

        let mut only: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut only);
        libc::sigaddset(&mut only, sig.0);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
        libc::raise(sig.0);
    }
    // Still alive: the signal's default action does not terminate (SIGWINCH,
    // SIGCHLD) or it was caught elsewhere.
    std::process::exit(128 + sig.0)
}
