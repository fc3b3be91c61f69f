//! Reading a secret from a prompt that does not echo, or from stdin when
//! stdin is not a terminal.
//!
//! The prompt turns off echo, canonical mode and the terminal's signal
//! keys, and reads one byte at a time, so that Ctrl-C reaches keyrun as a
//! byte and the terminal is restored by ordinary code before keyrun ends.
//! SIGTERM, SIGHUP and SIGQUIT from elsewhere restore it in a signal
//! handler.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::{self, SigAction, SigHandler, SigSet, Signal};
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};

use crate::secret::Secret;

/// The maximum length of one value; a key is far shorter.
const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The result of a prompt.
pub enum Input {
    Value(Secret),
    /// The user pressed Ctrl-C.
    Interrupted,
}

/// Reads a value: from a prompt on stderr that does not echo when stdin is
/// a terminal, else all of stdin.
pub fn read_secret(prompt: &str) -> Result<Input> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        read_from_terminal(prompt)
    } else {
        read_from_pipe().map(Input::Value)
    }
}

fn read_from_pipe() -> Result<Secret> {
    let mut bytes = Vec::with_capacity(4096);
    std::io::stdin()
        .lock()
        .take(MAX_VALUE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .context("cannot read the value from stdin")?;
    let mut value = Secret::new(bytes);
    if value.len() > MAX_VALUE_BYTES {
        bail!("stdin contains more than {MAX_VALUE_BYTES} bytes; pipe in the key alone");
    }
    value.strip_final_newline();
    Ok(value)
}

/// The terminal settings to restore, for the signal handler.
static SAVED: OnceLock<libc::termios> = OnceLock::new();
/// Whether the terminal is in the prompt's mode now.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Restores the terminal when the prompt ends by any path but a signal.
struct RawMode {
    saved: Termios,
}

impl Drop for RawMode {
    fn drop(&mut self) {
        ACTIVE.store(false, Ordering::SeqCst);
        let stdin = std::io::stdin();
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSAFLUSH, &self.saved);
    }
}

fn read_from_terminal(prompt: &str) -> Result<Input> {
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(stdin.as_fd()).context("cannot read the terminal settings")?;
    let _ = SAVED.set(libc::termios::from(saved.clone()));
    install_restore_handlers();

    let mut raw = saved.clone();
    raw.local_flags &= !(LocalFlags::ECHO
        | LocalFlags::ECHONL
        | LocalFlags::ICANON
        | LocalFlags::ISIG
        | LocalFlags::IEXTEN);
    raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
    raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;

    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    ACTIVE.store(true, Ordering::SeqCst);
    let guard = RawMode { saved };
    termios::tcsetattr(stdin.as_fd(), SetArg::TCSAFLUSH, &raw)
        .context("cannot turn off the terminal's echo")?;

    let result = read_line(stdin.as_raw_fd());
    drop(guard);
    eprintln!();
    result
}

/// Reads bytes up to Enter, with Backspace and Ctrl-U for editing. The
/// buffer may grow and move; keyrun's allocator zeroes what it frees.
fn read_line(fd: i32) -> Result<Input> {
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(256));
    loop {
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into a local of that size.
        let count = unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) };
        if count < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err).context("cannot read from the terminal");
        }
        let end_of_input = count == 0 || byte == 0x04;
        if end_of_input && bytes.is_empty() {
            bail!("no value entered (end of input); nothing was stored");
        }
        match byte {
            _ if end_of_input => break,
            b'\r' | b'\n' => break,
            // Ctrl-C
            0x03 => return Ok(Input::Interrupted),
            // Backspace and Delete remove the last character.
            0x7f | 0x08 => pop_char(&mut bytes),
            // Ctrl-U removes the whole line.
            0x15 => bytes.clear(),
            _ => {
                if bytes.len() >= MAX_VALUE_BYTES {
                    bail!("the value is longer than {MAX_VALUE_BYTES} bytes");
                }
                bytes.push(byte);
            }
        }
    }
    Ok(Input::Value(Secret::new(std::mem::take(&mut *bytes))))
}

/// Removes the last UTF-8 character of `bytes`.
fn pop_char(bytes: &mut Vec<u8>) {
    while let Some(last) = bytes.pop() {
        // Continuation bytes are 0b10xx_xxxx; stop after the lead byte.
        if last & 0xc0 != 0x80 {
            break;
        }
    }
}

fn install_restore_handlers() {
    let action = SigAction::new(
        SigHandler::Handler(restore_and_reraise),
        signal::SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
        // SAFETY: the handler makes only async-signal-safe calls.
        let _ = unsafe { signal::sigaction(sig, &action) };
    }
}

/// Restores the terminal and ends keyrun by the same signal. SA_RESETHAND
/// has already put back the default action, so the re-raised signal is
/// delivered when the handler returns.
extern "C" fn restore_and_reraise(sig: libc::c_int) {
    if ACTIVE.load(Ordering::SeqCst) {
        if let Some(saved) = SAVED.get() {
            // SAFETY: tcsetattr and write are async-signal-safe, and `saved`
            // is a plain struct set before the handler was installed.
            unsafe {
                libc::tcsetattr(0, libc::TCSAFLUSH, saved);
                libc::write(2, b"\n".as_ptr().cast(), 1);
            }
        }
    }
    // SAFETY: raise is async-signal-safe.
    unsafe {
        libc::raise(sig);
    }
}
