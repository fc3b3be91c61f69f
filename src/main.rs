//! keyrun: run a command with an API key in its environment, and only there.
//!
//! `main` parses the command line, calls [`run::run`] and maps the result to
//! an exit status; everything else lives in the modules.

// keyrun defines the C `main` itself, so the Rust runtime's start-up does not
// replace the SIGPIPE disposition before keyrun can record it for the child.
#![cfg_attr(not(test), no_main)]
// Unit tests build without the C `main`, so code reached only from it looks
// unused there.
#![cfg_attr(test, allow(dead_code))]

mod audit;
mod check;
mod child;
mod cli;
mod config;
mod envfile;
mod harden;
mod init;
mod logging;
mod mask;
mod prompt;
mod reference;
mod run;
mod secret;
mod shell;
mod source;
mod store;
mod terminal;
mod trust;

#[cfg(not(test))]
use std::ffi::{c_char, c_int};
#[cfg(not(test))]
use std::io::Write;

#[global_allocator]
static ALLOCATOR: harden::ZeroingAllocator = harden::ZeroingAllocator;

// The test harness brings its own `main`.
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    if !open_standard_streams() {
        return c_int::from(run::FAILURE);
    }
    child::capture_start_state();
    harden::protect_process();
    std::panic::set_hook(Box::new(|info| report_panic(info.location())));

    // A panic must not unwind into the C caller. Release builds abort on
    // panic instead, and `report_panic` exits with 125 there.
    let code = std::panic::catch_unwind(|| match parse() {
        Ok(cli) => {
            logging::init(&cli.log);
            finish(run::run(cli))
        }
        Err(err) => usage_error(err),
    })
    .unwrap_or(c_int::from(run::FAILURE));
    let _ = std::io::stdout().flush();
    code
}

/// Parses the command line. The clap command tree is leaked, not dropped:
/// it holds only keyrun's own definitions, and freeing its thousands of
/// small allocations (each zeroed by the allocator) measured about a third
/// of clap's cost on every run (callgrind).
#[cfg(not(test))]
fn parse() -> Result<cli::Cli, clap::Error> {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let mut command = cli::Cli::command();
    let parsed = match command.try_get_matches_from_mut(std::env::args_os()) {
        Ok(mut matches) => {
            cli::Cli::from_arg_matches_mut(&mut matches).map_err(|err| err.format(&mut command))
        }
        Err(err) => Err(err),
    };
    std::mem::forget(command);
    parsed
}

/// Opens /dev/null on each of fds 0, 1 and 2 that is closed, so that no
/// file keyrun opens later (the signal pipe, a configuration file) takes
/// the number of a standard stream and receives its reads or writes.
/// Returns false when a closed one cannot be replaced.
#[cfg(not(test))]
fn open_standard_streams() -> bool {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let closed = unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF);
        if !closed {
            continue;
        }
        // SAFETY: open takes a NUL-terminated path. It returns the lowest
        // free descriptor, which is `fd` because those below it are open.
        let opened = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if opened != fd {
            return false;
        }
    }
    true
}

/// Reports a panic without its message, which could quote a value keyrun
/// was handling, and gives the location so it can be reported.
#[cfg(not(test))]
fn report_panic(location: Option<&std::panic::Location<'_>>) {
    let location = location
        .map(|at| format!(" at {}:{}", at.file(), at.line()))
        .unwrap_or_default();
    let _ = writeln!(
        std::io::stderr(),
        "keyrun: error: internal error{location}; please report it"
    );
    if cfg!(panic = "abort") {
        // SAFETY: _exit ends the process at once, which is what abort would
        // do next, with keyrun's failure status in place of SIGABRT.
        unsafe { libc::_exit(c_int::from(run::FAILURE)) };
    }
}

#[cfg(not(test))]
fn finish(result: anyhow::Result<run::Exit>) -> c_int {
    match result {
        Ok(run::Exit::Code(code)) => c_int::from(code),
        Ok(run::Exit::Signal(sig)) => {
            let _ = std::io::stdout().flush();
            child::die_by_signal(sig)
        }
        Err(err) => {
            // A broken pipe here is an error too: the subcommands whose
            // output a reader may cut short handle that themselves
            // (`run::write_stdout`), and a failed CI mask registration
            // must not pass for success. A closed stderr leaves nowhere
            // to report the error to.
            let message = run::escape_controls(&format!("{err:#}"));
            let _ = writeln!(std::io::stderr(), "keyrun: error: {message}");
            c_int::from(run::FAILURE)
        }
    }
}

/// Whether the argument clap rejected is a bare word such as `python`, not
/// an option: clap reports a command written without `--` as an unknown
/// argument once another option precedes it, and as an unknown subcommand
/// otherwise.
#[cfg(not(test))]
fn names_a_word(err: &clap::Error) -> bool {
    use clap::error::{ContextKind, ContextValue};
    match err
        .get(ContextKind::InvalidSubcommand)
        .or(err.get(ContextKind::InvalidArg))
    {
        Some(ContextValue::String(arg)) => !arg.starts_with('-'),
        _ => false,
    }
}

#[cfg(not(test))]
/// Prints a usage error and returns 125, not clap's 2, so a wrapped
/// command's own status 2 is never confused with keyrun's.
fn usage_error(err: clap::Error) -> c_int {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            0
        }
        ErrorKind::InvalidSubcommand | ErrorKind::UnknownArgument if names_a_word(&err) => {
            let _ = err.print();
            let _ = writeln!(
                std::io::stderr(),
                "note: keyrun runs a command only after `--`, for example `keyrun -- python app.py`"
            );
            c_int::from(run::FAILURE)
        }
        _ => {
            let _ = err.print();
            c_int::from(run::FAILURE)
        }
    }
}
