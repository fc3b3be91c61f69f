//! The pseudo-terminal a child runs on under `--mask always`, so that it
//! still sees a TTY (and keeps its colours) while keyrun masks what it
//! writes.
//!
//! keyrun sits between its own terminal and the pseudo-terminal: it puts
//! its terminal in raw mode and passes keystrokes through, so the child's
//! line discipline (echo, Ctrl-C, line editing) applies as it would
//! without keyrun. The child leads its own session with the
//! pseudo-terminal as its controlling terminal. Its process group is then
//! orphaned from the kernel's point of view, and the kernel discards a
//! Ctrl-Z its line discipline generates, so keyrun watches for the suspend
//! character itself, stops the child, and stops itself. A window size
//! change on keyrun's terminal is copied to the pseudo-terminal, which
//! sends the child SIGWINCH.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};
use nix::errno::Errno;
use nix::sys::signal::{self, SigAction, SigHandler, SigSet, Signal};
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};

/// For each of keyrun's standard descriptors, whether it is a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Ttys {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A pseudo-terminal for the child, and the mode of keyrun's own terminal
/// to restore when keyrun ends or stops.
pub struct Terminal {
    master: OwnedFd,
    slave: Option<OwnedFd>,
    ttys: Ttys,
    /// keyrun's terminal: its stdout or stderr, whichever is one.
    output: RawFd,
    /// The mode of keyrun's stdin before raw mode, when stdin is a terminal.
    saved: Option<Termios>,
}

impl Terminal {
    /// Opens a pseudo-terminal with the size and mode of keyrun's terminal.
    pub fn open(ttys: Ttys) -> Result<Terminal> {
        let output = if ttys.stdout {
            libc::STDOUT_FILENO
        } else {
            libc::STDERR_FILENO
        };
        // SAFETY: keyrun's standard descriptors stay open for its whole life.
        let output_fd = unsafe { BorrowedFd::borrow_raw(output) };
        let size = window_size(output_fd);
        let mode = termios::tcgetattr(output_fd).ok();
        let pty = nix::pty::openpty(size.as_ref(), mode.as_ref())
            .context("cannot open a pseudo-terminal for the command")?;
        for fd in [&pty.master, &pty.slave] {
            set_cloexec(fd)?;
        }
        tracing::debug!("pseudo-terminal opened");
        Ok(Terminal {
            master: pty.master,
            slave: Some(pty.slave),
            ttys,
            output,
            saved: None,
        })
    }

    /// Connects the command's terminal streams to the pseudo-terminal and
    /// makes it the controlling terminal of a new session.
    pub fn attach(&self, command: &mut Command) -> Result<()> {
        let slave = self
            .slave
            .as_ref()
            .context("the pseudo-terminal is already attached")?;
        let clone = || -> Result<Stdio> {
            Ok(Stdio::from(
                slave
                    .try_clone()
                    .context("cannot duplicate the pseudo-terminal")?,
            ))
        };
        if self.ttys.stdin {
            command.stdin(clone()?);
        }
        if self.ttys.stdout {
            command.stdout(clone()?);
        }
        if self.ttys.stderr {
            command.stderr(clone()?);
        }
        let slave_fd = slave.as_raw_fd();
        // SAFETY: setsid and ioctl are async-signal-safe, and the slave
        // descriptor stays open in the child until exec closes it.
        unsafe {
            command.pre_exec(move || {
                nix::unistd::setsid()?;
                if libc::ioctl(slave_fd, libc::TIOCSCTTY as _, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// Closes keyrun's copy of the slave side once the child has it, so a
    /// read of the master ends when the child's side closes, and puts
    /// keyrun's terminal in raw mode.
    pub fn started(&mut self) -> Result<()> {
        self.slave = None;
        self.install_suspend_handler()?;
        self.enter_raw_mode()
    }

    /// Returns a second descriptor for the master side, for the output
    /// pump.
    pub fn master_clone(&self) -> Result<OwnedFd> {
        self.master
            .try_clone()
            .context("cannot duplicate the pseudo-terminal")
    }

    /// keyrun's terminal, where the child's masked output goes.
    pub fn output(&self) -> RawFd {
        self.output
    }

    /// Returns whether keystrokes from keyrun's stdin go to the child.
    pub fn reads_stdin(&self) -> bool {
        self.ttys.stdin
    }

    fn install_suspend_handler(&self) -> Result<()> {
        let action = SigAction::new(
            SigHandler::SigAction(crate::child::on_signal),
            signal::SaFlags::SA_SIGINFO | signal::SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler is async-signal-safe.
        unsafe { signal::sigaction(Signal::SIGTSTP, &action) }.context("cannot handle SIGTSTP")?;
        Ok(())
    }

    fn enter_raw_mode(&mut self) -> Result<()> {
        if !self.ttys.stdin {
            return Ok(());
        }
        let stdin = stdin_fd();
        let saved = termios::tcgetattr(stdin).context("cannot read the terminal's mode")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin, SetArg::TCSADRAIN, &raw)
            .context("cannot put the terminal in raw mode")?;
        if self.saved.is_none() {
            self.saved = Some(saved);
        }
        Ok(())
    }

    fn restore_mode(&self) {
        if let Some(saved) = &self.saved {
            if let Err(err) = termios::tcsetattr(stdin_fd(), SetArg::TCSADRAIN, saved) {
                tracing::warn!(
                    "cannot restore the terminal's mode: {err}; run `stty sane` to fix it"
                );
            }
        }
    }

    /// Copies the window size of keyrun's terminal to the pseudo-terminal;
    /// the kernel then sends SIGWINCH to the child's foreground group.
    pub fn sync_window_size(&self) {
        // SAFETY: keyrun's standard descriptors stay open for its whole life.
        let output = unsafe { BorrowedFd::borrow_raw(self.output) };
        if let Some(size) = window_size(output) {
            // SAFETY: TIOCSWINSZ reads a valid winsize struct.
            let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
            if rc != 0 {
                tracing::debug!(
                    "cannot set the window size: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }

    /// Passes the bytes keyrun's terminal sent on to the child. Returns
    /// false when keyrun's stdin is closed.
    pub fn forward_input(&self, child: nix::unistd::Pid) -> Result<bool> {
        let mut buffer = zeroize::Zeroizing::new([0u8; 4096]);
        let count = match nix::unistd::read(stdin_fd(), &mut buffer[..]) {
            Ok(0) => return Ok(false),
            Ok(count) => count,
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => return Ok(true),
            Err(Errno::EIO) => return Ok(false),
            Err(err) => return Err(err).context("cannot read keyrun's terminal"),
        };
        let mut input = &buffer[..count];
        let suspend = self.suspend_character();
        while let Some(at) = suspend.and_then(|c| input.iter().position(|&b| b == c)) {
            self.write_master(&input[..at])?;
            self.suspend(child);
            input = &input[at + 1..];
        }
        self.write_master(input)?;
        Ok(true)
    }

    /// The child's suspend character (usually Ctrl-Z), when its
    /// pseudo-terminal turns it into a signal.
    fn suspend_character(&self) -> Option<u8> {
        let mode = termios::tcgetattr(&self.master).ok()?;
        if !mode.local_flags.contains(LocalFlags::ISIG) {
            return None;
        }
        let character = mode.control_chars[SpecialCharacterIndices::VSUSP as usize];
        // _POSIX_VDISABLE: the character is switched off.
        (character != 0).then_some(character)
    }

    fn write_master(&self, mut bytes: &[u8]) -> Result<()> {
        // NOTE: a child that reads no input while keyrun writes more than
        // the pseudo-terminal buffers blocks keyrun here.
        while !bytes.is_empty() {
            match nix::unistd::write(&self.master, bytes) {
                Ok(written) => bytes = &bytes[written..],
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    // The output pump made the master non-blocking.
                    let mut fds = [nix::poll::PollFd::new(
                        self.master.as_fd(),
                        nix::poll::PollFlags::POLLOUT,
                    )];
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE);
                }
                Err(Errno::EIO) => return Ok(()),
                Err(err) => return Err(err).context("cannot write to the command's terminal"),
            }
        }
        Ok(())
    }

    /// Stops the child and keyrun, as Ctrl-Z does without keyrun, and
    /// resumes the child when keyrun is continued (`fg`).
    pub fn suspend(&self, child: nix::unistd::Pid) {
        tracing::debug!("suspending the command and keyrun");
        self.restore_mode();
        // The child leads its own process group: stop all of it.
        let group = nix::unistd::Pid::from_raw(-child.as_raw());
        let _ = signal::kill(group, Signal::SIGSTOP);

        let default = SigAction::new(
            SigHandler::SigDfl,
            signal::SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: installing SIG_DFL runs no code.
        let _ = unsafe { signal::sigaction(Signal::SIGTSTP, &default) };
        let _ = signal::raise(Signal::SIGTSTP);

        // Continued.
        tracing::debug!("resuming the command");
        if let Err(err) = self.install_suspend_handler() {
            tracing::debug!("{err:#}");
        }
        if let Err(err) = self.reenter_raw_mode() {
            tracing::warn!("{err:#}");
        }
        self.sync_window_size();
        let _ = signal::kill(group, Signal::SIGCONT);
    }

    fn reenter_raw_mode(&self) -> Result<()> {
        let Some(saved) = &self.saved else {
            return Ok(());
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin_fd(), SetArg::TCSADRAIN, &raw)
            .context("cannot put the terminal in raw mode again")
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.restore_mode();
    }
}

fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: keyrun's stdin stays open for its whole life.
    unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) }
}

fn window_size(fd: BorrowedFd<'_>) -> Option<nix::pty::Winsize> {
    let mut size = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize struct to a valid pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0).then_some(size)
}

fn set_cloexec(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .context("cannot mark the pseudo-terminal close-on-exec")?;
    Ok(())
}
