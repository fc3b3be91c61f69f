//! Signals, with real signals, terminals and a real shell: forwarding to
//! the child exactly once, keyrun's end before the child exists and after
//! it dies by a signal, the signal state the child starts with, and job
//! control. The child is a small C program that appends the name of each
//! forwarded signal to a log as it is delivered, so a test counts
//! deliveries.

#![cfg(target_os = "linux")]

mod common;

use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

use common::{keyrun_bin, random_key, stderr, Sandbox};

/// The child: a C program whose handler appends each forwarded signal's
/// name to a log as it is delivered, so two deliveries make two lines. A
/// shell's `trap` would run once for several deliveries that arrive while
/// it waits for a command. The program writes its own pid and keyrun's to
/// `LOG.pid` once the handlers are installed, then waits for signals.
const COUNTER_SOURCE: &str = r#"
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int log_fd = -1;
static const char *names[65];

static void on_signal(int signo) {
    const char *name = names[signo];
    char line[16];
    size_t length = strlen(name);
    memcpy(line, name, length);
    line[length] = '\n';
    write(log_fd, line, length + 1);
}

int main(int argc, char **argv) {
    static const struct { int signo; const char *name; } counted[] = {
        {SIGINT, "INT"}, {SIGTERM, "TERM"}, {SIGHUP, "HUP"}, {SIGQUIT, "QUIT"},
        {SIGUSR1, "USR1"}, {SIGUSR2, "USR2"}, {SIGWINCH, "WINCH"},
    };
    char pid_path[4096], temporary[4096];
    if (argc != 2) return 2;
    log_fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (log_fd < 0) return 1;
    for (size_t i = 0; i < sizeof counted / sizeof counted[0]; i++) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = on_signal;
        action.sa_flags = SA_RESTART;
        sigemptyset(&action.sa_mask);
        names[counted[i].signo] = counted[i].name;
        if (sigaction(counted[i].signo, &action, NULL) != 0) return 1;
    }
    snprintf(pid_path, sizeof pid_path, "%s.pid", argv[1]);
    snprintf(temporary, sizeof temporary, "%s.tmp", argv[1]);
    FILE *pid_file = fopen(temporary, "w");
    if (pid_file == NULL) return 1;
    fprintf(pid_file, "%d %d\n", (int)getpid(), (int)getppid());
    fclose(pid_file);
    if (rename(temporary, pid_path) != 0) return 1;
    for (;;) pause();
}
"#;

/// Compiles the counter once per test process, with the C compiler that
/// links Rust programs on Linux.
fn counter_program() -> &'static PathBuf {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let folder = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("signal-counter-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let source = folder.join("counter.c");
        let program = folder.join("counter");
        std::fs::write(&source, COUNTER_SOURCE).unwrap();
        let result = Command::new("cc")
            .arg("-o")
            .arg(&program)
            .arg(&source)
            .output()
            .expect("a C compiler (cc) builds the signal counter");
        assert!(result.status.success(), "cc: {}", stderr(&result));
        program
    })
}

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

/// How long a test waits for a second delivery that must not come.
const SETTLE: Duration = Duration::from_millis(500);

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A sandbox with a key file and the path of the counter's log.
struct Trap {
    sandbox: Sandbox,
    key_file: PathBuf,
    log: PathBuf,
}

impl Trap {
    fn new() -> Trap {
        let sandbox = Sandbox::new();
        let key_file = sandbox.write("key", random_key().as_bytes(), 0o600);
        let log = sandbox.path().join("signals.log");
        Trap {
            sandbox,
            key_file,
            log,
        }
    }

    /// Builds the keyrun arguments that run the counter.
    fn args(&self) -> Vec<String> {
        vec![
            "--from".into(),
            format!("file:{}", self.key_file.display()),
            "--".into(),
            counter_program().display().to_string(),
            self.log.display().to_string(),
        ]
    }

    fn command(&self) -> Command {
        let mut command = self.sandbox.keyrun();
        command.args(self.args());
        command
    }

    /// Waits until the child has installed its handlers; returns its pid and its
    /// parent's, which is keyrun's.
    fn wait_ready(&self) -> (Pid, Pid) {
        let pid_file = self.log.with_extension("log.pid");
        wait_for("the child to install its handlers", || pid_file.exists());
        let text = std::fs::read_to_string(&pid_file).unwrap();
        let pids: Vec<i32> = text
            .split_whitespace()
            .map(|word| word.parse().unwrap())
            .collect();
        (Pid::from_raw(pids[0]), Pid::from_raw(pids[1]))
    }

    /// keyrun's debug log, where a test runs keyrun with one.
    fn debug_log(&self) -> PathBuf {
        self.sandbox.path().join("keyrun.log")
    }

    /// Whether keyrun's debug log shows that it forwarded `sig` itself.
    fn keyrun_forwarded(&self, sig: Signal) -> bool {
        std::fs::read_to_string(self.debug_log())
            .unwrap_or_default()
            .contains(&format!("forwarding signal signal={sig}"))
    }

    /// Counts the lines in which the child logged `name`.
    fn count(&self, name: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| *line == name)
            .count()
    }

    /// Waits for the first delivery of `name`, then long enough for a
    /// second one, and returns the count.
    fn settled_count(&self, name: &str) -> usize {
        wait_for(&format!("the child to log {name}"), || self.count(name) > 0);
        std::thread::sleep(SETTLE);
        self.count(name)
    }
}

/// Kills the child, which ends keyrun, and reaps keyrun.
fn finish(child: Pid, mut keyrun: Child) {
    let _ = signal::kill(child, Signal::SIGKILL);
    let status = keyrun.wait().unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
}

fn log_name(sig: Signal) -> &'static str {
    sig.as_str().trim_start_matches("SIG")
}

fn assert_forwarded_once(sig: Signal) {
    let trap = Trap::new();
    let keyrun = trap.command().spawn().unwrap();
    let (child, keyrun_pid) = trap.wait_ready();
    assert_eq!(keyrun_pid.as_raw() as u32, keyrun.id());

    signal::kill(keyrun_pid, sig).unwrap();
    let count = trap.settled_count(log_name(sig));
    finish(child, keyrun);
    assert_eq!(count, 1, "{sig} reached the child {count} times");
}

#[test]
fn sigint_forwarded_once() {
    assert_forwarded_once(Signal::SIGINT);
}

#[test]
fn sigterm_forwarded_once() {
    assert_forwarded_once(Signal::SIGTERM);
}

#[test]
fn sighup_forwarded_once() {
    assert_forwarded_once(Signal::SIGHUP);
}

#[test]
fn sigquit_forwarded_once() {
    assert_forwarded_once(Signal::SIGQUIT);
}

#[test]
fn sigusr1_forwarded_once() {
    assert_forwarded_once(Signal::SIGUSR1);
}

#[test]
fn sigusr2_forwarded_once() {
    assert_forwarded_once(Signal::SIGUSR2);
}

#[test]
fn sigwinch_forwarded_once() {
    assert_forwarded_once(Signal::SIGWINCH);
}

#[test]
fn repeated_signals_each_forwarded() {
    let trap = Trap::new();
    let keyrun = trap.command().spawn().unwrap();
    let (child, keyrun_pid) = trap.wait_ready();

    for round in 1..=3 {
        signal::kill(keyrun_pid, Signal::SIGUSR1).unwrap();
        wait_for("the child to log USR1", || trap.count("USR1") >= round);
    }
    std::thread::sleep(SETTLE);
    let count = trap.count("USR1");
    finish(child, keyrun);
    assert_eq!(count, 3);
}

#[test]
fn signal_forwarded_while_output_blocked() {
    let sandbox = Sandbox::new();
    let marker = sandbox.path().join("got-term");
    // The child writes without end; its SIGTERM handler leaves a marker.
    // Python runs the handler even while its own write blocks (PEP 475),
    // where sh would wait for the write to finish.
    let script = format!(
        "import os, signal, sys\n\
         def stop(*_):\n    open({:?}, 'w').close()\n    os._exit(7)\n\
         signal.signal(signal.SIGTERM, stop)\n\
         while True:\n    sys.stdout.write('0' * 999 + '\\n')\n",
        marker.display().to_string()
    );
    let mut keyrun = Command::new(keyrun_bin())
        .env("OPENAI_API_KEY", random_key())
        .env_remove("KEYRUN_LOG")
        .args(["--mask", "auto", "--", "python3", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The test does not read keyrun's stdout, so its pipe fills and keyrun's write
    // of the child's masked output blocks.
    std::thread::sleep(Duration::from_millis(500));
    signal::kill(Pid::from_raw(keyrun.id() as i32), Signal::SIGTERM).unwrap();
    let started = Instant::now();
    while !marker.exists() && started.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(20));
    }
    let forwarded = marker.exists();
    drop(keyrun.stdout.take());
    let _ = keyrun.kill();
    let _ = keyrun.wait();
    assert!(
        forwarded,
        "SIGTERM did not reach the child while output was blocked"
    );
}

// The terminal sends a signal to the whole foreground process group.

/// keyrun as the session leader of a new pseudo-terminal, so that the
/// terminal's line discipline sends it and the child their signals. keyrun
/// writes its debug log to a file, so a test can tell whether keyrun
/// forwarded a signal as well.
struct PtyRun {
    trap: Trap,
    master: std::os::fd::OwnedFd,
    keyrun: Child,
    child: Pid,
}

impl PtyRun {
    fn start() -> PtyRun {
        let trap = Trap::new();
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut command = trap.command();
        command
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .env("KEYRUN_LOG", "keyrun=debug")
            .stderr(std::fs::File::create(trap.debug_log()).unwrap());
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let keyrun = command.spawn().unwrap();
        drop(pty.slave);
        let (child, _) = trap.wait_ready();
        PtyRun {
            trap,
            master: pty.master,
            keyrun,
            child,
        }
    }

    fn type_byte(&self, byte: u8) {
        nix::unistd::write(self.master.as_fd(), &[byte]).unwrap();
    }

    fn finish(self) {
        finish(self.child, self.keyrun);
        drop(self.master);
    }
}

#[test]
fn terminal_interrupt_reaches_child_once() {
    let run = PtyRun::start();
    // ^C, the terminal's default VINTR character.
    run.type_byte(0x03);
    let count = run.trap.settled_count("INT");
    let forwarded = run.trap.keyrun_forwarded(Signal::SIGINT);
    run.finish();
    assert_eq!(count, 1, "SIGINT reached the child {count} times");
    assert!(!forwarded, "keyrun forwarded SIGINT the child already had");
}

#[test]
fn terminal_quit_reaches_child_once() {
    let run = PtyRun::start();
    // ^\, the terminal's default VQUIT character.
    run.type_byte(0x1c);
    let count = run.trap.settled_count("QUIT");
    let forwarded = run.trap.keyrun_forwarded(Signal::SIGQUIT);
    run.finish();
    assert_eq!(count, 1, "SIGQUIT reached the child {count} times");
    assert!(!forwarded, "keyrun forwarded SIGQUIT the child already had");
}

#[test]
fn terminal_resize_reaches_child_once() {
    let run = PtyRun::start();
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    let set = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&run.master),
            libc::TIOCSWINSZ,
            &size,
        )
    };
    assert_eq!(set, 0);
    let count = run.trap.settled_count("WINCH");
    let forwarded = run.trap.keyrun_forwarded(Signal::SIGWINCH);
    run.finish();
    assert_eq!(count, 1, "SIGWINCH reached the child {count} times");
    assert!(
        !forwarded,
        "keyrun forwarded SIGWINCH the child already had"
    );
}

/// A process that signals keyrun's whole process group (`kill -TERM
/// -PGID`) reaches the child directly, and keyrun forwards its own copy:
/// siginfo names the sender of a signal but not whether the kill named the
/// group, so keyrun cannot tell this from a kill of keyrun alone. The
/// terminal's signals, the common case, carry SI_KERNEL and are not
/// forwarded; see the tests below.
#[test]
#[ignore = "known gap: a process's kill of the whole group reaches the child twice"]
fn group_signal_reaches_child_once() {
    let trap = Trap::new();
    let mut command = trap.command();
    command.process_group(0);
    let keyrun = command.spawn().unwrap();
    let (child, keyrun_pid) = trap.wait_ready();

    signal::killpg(keyrun_pid, Signal::SIGTERM).unwrap();
    let count = trap.settled_count("TERM");
    finish(child, keyrun);
    assert_eq!(count, 1, "SIGTERM reached the child {count} times");
}

/// A tmux server on a private socket, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts a detached session running `shell_command` with the
    /// sandbox's minimal environment.
    fn start(sandbox: &Sandbox, shell_command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("keyrun-test-{}", &random_key()[8..24]),
        };
        let mut command = tmux.command();
        command
            .env("HOME", sandbox.home())
            .env("XDG_CONFIG_HOME", sandbox.path().join("config"))
            .env("XDG_STATE_HOME", sandbox.path().join("state"))
            .env("TERM", "xterm")
            .current_dir(sandbox.path())
            .args(["new-session", "-d", "-s", "main", "-x", "80", "-y", "24"])
            .arg(shell_command);
        let result = command.output().unwrap();
        assert!(result.status.success(), "tmux: {}", stderr(&result));
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args(["-L", &self.socket, "-f", "/dev/null"]);
        command
    }

    fn send_keys(&self, keys: &[&str]) {
        let result = self
            .command()
            .args(["send-keys", "-t", "main"])
            .args(keys)
            .output()
            .unwrap();
        assert!(result.status.success(), "tmux: {}", stderr(&result));
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

fn shell_quote(words: &[String]) -> String {
    words
        .iter()
        .map(|word| format!("'{word}'"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn keyrun_line(trap: &Trap) -> String {
    let mut words = vec![keyrun_bin().display().to_string()];
    words.extend(trap.args());
    shell_quote(&words)
}

#[test]
fn tmux_ctrl_c_reaches_child_once() {
    let trap = Trap::new();
    let line = format!(
        "KEYRUN_LOG=keyrun=debug exec {} 2>'{}'",
        keyrun_line(&trap),
        trap.debug_log().display()
    );
    let tmux = Tmux::start(&trap.sandbox, &line);
    let (child, _) = trap.wait_ready();

    tmux.send_keys(&["C-c"]);
    let count = trap.settled_count("INT");
    let forwarded = trap.keyrun_forwarded(Signal::SIGINT);
    let _ = signal::kill(child, Signal::SIGKILL);
    drop(tmux);
    assert_eq!(count, 1, "SIGINT reached the child {count} times");
    assert!(!forwarded, "keyrun forwarded SIGINT the child already had");
}

/// Reads the state letter of a process (`R`, `S`, `T` for stopped, ...).
fn process_state(pid: Pid) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name in brackets may contain spaces; the state follows it.
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .unwrap_or('?')
}

#[test]
fn ctrl_z_and_fg_stop_and_resume_both() {
    let trap = Trap::new();
    let tmux = Tmux::start(&trap.sandbox, "exec bash --norc --noprofile -i");
    tmux.send_keys(&[&keyrun_line(&trap), "Enter"]);
    let (child, keyrun) = trap.wait_ready();

    tmux.send_keys(&["C-z"]);
    wait_for("keyrun to stop", || process_state(keyrun) == 'T');
    wait_for("the child to stop", || process_state(child) == 'T');
    let stopped = (process_state(keyrun), process_state(child));

    tmux.send_keys(&["fg", "Enter"]);
    wait_for("keyrun to resume", || process_state(keyrun) != 'T');
    wait_for("the child to resume", || process_state(child) != 'T');
    // The resumed child still handles signals, and keyrun still forwards.
    signal::kill(keyrun, Signal::SIGUSR2).unwrap();
    let count = trap.settled_count("USR2");

    let _ = signal::kill(child, Signal::SIGKILL);
    drop(tmux);
    assert_eq!(stopped, ('T', 'T'));
    assert_eq!(count, 1);
}

// Before the child exists.

/// Starts keyrun on a `cmd:` fetch that hangs, sends `sig` once the fetch
/// runs, and returns how keyrun ended and how long that took.
fn signal_during_fetch(sig: Signal) -> (std::process::ExitStatus, Duration) {
    let sandbox = Sandbox::new();
    let pid_file = sandbox.path().join("fetch.pid");
    let script = sandbox.write(
        "fetch",
        format!(
            "#!/bin/sh\necho $$ > {0}.tmp && mv {0}.tmp {0}\nexec sleep 30\n",
            pid_file.display()
        )
        .as_bytes(),
        0o700,
    );
    let mut keyrun = sandbox
        .keyrun()
        .args(["--from", &format!("cmd:{}", script.display()), "--", "true"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the fetch to start", || pid_file.exists());
    let fetch: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let sent = Instant::now();
    signal::kill(Pid::from_raw(keyrun.id() as i32), sig).unwrap();
    let status = keyrun.wait().unwrap();
    let elapsed = sent.elapsed();
    let _ = signal::kill(Pid::from_raw(fetch), Signal::SIGKILL);
    (status, elapsed)
}

#[test]
fn sigterm_during_fetch_ends_keyrun() {
    let (status, elapsed) = signal_during_fetch(Signal::SIGTERM);
    assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[test]
fn sigint_during_fetch_ends_keyrun() {
    let (status, elapsed) = signal_during_fetch(Signal::SIGINT);
    assert_eq!(status.signal(), Some(Signal::SIGINT as i32));
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[test]
fn sighup_during_fetch_ends_keyrun() {
    let (status, elapsed) = signal_during_fetch(Signal::SIGHUP);
    assert_eq!(status.signal(), Some(Signal::SIGHUP as i32));
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

// After the child ends by a signal.

fn keyrun_status_when_child_dies_by(sig: Signal) -> std::process::ExitStatus {
    let sandbox = Sandbox::new();
    sandbox
        .keyrun()
        .env("OPENAI_API_KEY", random_key())
        .args(["--", "sh", "-c", &format!("kill -{} $$", log_name(sig))])
        .stderr(Stdio::null())
        .status()
        .unwrap()
}

#[test]
fn child_sigterm_ends_keyrun_by_sigterm() {
    let status = keyrun_status_when_child_dies_by(Signal::SIGTERM);
    assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
}

#[test]
fn child_sigkill_ends_keyrun_by_sigkill() {
    let status = keyrun_status_when_child_dies_by(Signal::SIGKILL);
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
}

#[test]
fn child_sigusr1_ends_keyrun_by_sigusr1() {
    let status = keyrun_status_when_child_dies_by(Signal::SIGUSR1);
    assert_eq!(status.signal(), Some(Signal::SIGUSR1 as i32));
}

// The signal state the child starts with.

/// Returns the bit of `sig` in a `/proc/PID/status` signal mask.
fn bit(sig: Signal) -> u64 {
    1 << (sig as u32 - 1)
}

/// Reads the SigBlk and SigIgn masks of a `cat /proc/self/status` started
/// by `command`, after `prepare` ran in the forked process before exec.
fn signal_masks(mut command: Command, prepare: fn() -> std::io::Result<()>) -> (u64, u64) {
    command.arg("/proc/self/status");
    // SAFETY: each `prepare` makes only async-signal-safe calls.
    unsafe {
        command.pre_exec(prepare);
    }
    let result = command.output().unwrap();
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let text = String::from_utf8(result.stdout).unwrap();
    let mask = |field: &str| -> u64 {
        let line = text
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"));
        u64::from_str_radix(line.trim(), 16).unwrap()
    };
    (mask("SigBlk:"), mask("SigIgn:"))
}

/// Reads the masks of keyrun's child when keyrun starts in the state `prepare`
/// sets, and the masks of the same program started directly in that state.
fn child_and_direct_masks(prepare: fn() -> std::io::Result<()>) -> ((u64, u64), (u64, u64)) {
    let sandbox = Sandbox::new();
    let mut keyrun = sandbox.keyrun();
    keyrun
        .env("OPENAI_API_KEY", random_key())
        .args(["--", "cat"]);
    let through_keyrun = signal_masks(keyrun, prepare);
    let direct = signal_masks(Command::new("cat"), prepare);
    (through_keyrun, direct)
}

fn set_disposition(sig: Signal, handler: SigHandler) -> std::io::Result<()> {
    let action = SigAction::new(handler, signal::SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_IGN or SIG_DFL runs no code.
    unsafe { signal::sigaction(sig, &action) }?;
    Ok(())
}

fn default_sigpipe() -> std::io::Result<()> {
    set_disposition(Signal::SIGPIPE, SigHandler::SigDfl)
}

fn ignore_sigpipe() -> std::io::Result<()> {
    set_disposition(Signal::SIGPIPE, SigHandler::SigIgn)
}

fn ignore_sigint() -> std::io::Result<()> {
    set_disposition(Signal::SIGINT, SigHandler::SigIgn)
}

fn block_sigusr1() -> std::io::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGUSR1);
    signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(())
}

fn block_nothing() -> std::io::Result<()> {
    signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    Ok(())
}

#[test]
fn child_gets_default_sigpipe() {
    let ((_, ignored), _) = child_and_direct_masks(default_sigpipe);
    assert_eq!(ignored & bit(Signal::SIGPIPE), 0);
}

#[test]
fn child_keeps_ignored_sigpipe() {
    let ((_, ignored), _) = child_and_direct_masks(ignore_sigpipe);
    assert_eq!(ignored & bit(Signal::SIGPIPE), bit(Signal::SIGPIPE));
}

#[test]
fn child_keeps_ignored_sigint() {
    let ((_, ignored), _) = child_and_direct_masks(ignore_sigint);
    assert_eq!(ignored & bit(Signal::SIGINT), bit(Signal::SIGINT));
}

#[test]
fn child_ignores_what_keyrun_started_with() {
    let ((_, ignored), (_, direct)) = child_and_direct_masks(ignore_sigint);
    assert_eq!(ignored, direct);
}

#[test]
fn child_keeps_blocked_signal() {
    let ((blocked, _), _) = child_and_direct_masks(block_sigusr1);
    assert_eq!(blocked & bit(Signal::SIGUSR1), bit(Signal::SIGUSR1));
}

#[test]
fn child_blocks_what_keyrun_started_with() {
    let ((blocked, _), (direct, _)) = child_and_direct_masks(block_sigusr1);
    assert_eq!(blocked, direct);
}

#[test]
fn child_blocks_nothing_by_default() {
    let ((blocked, _), _) = child_and_direct_masks(block_nothing);
    assert_eq!(blocked, 0);
}
