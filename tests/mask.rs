//! Output masking on the real binary: the child's output reaches the
//! test through pipes (masked under `--mask auto`) or through a
//! pseudo-terminal the test opens (`--mask always`). No test prints a
//! value: checks compare without formatting it.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::{assert_not_leaked, output, random_key, stderr, stdout, Sandbox};

/// Returns a key with characters that base64, percent-encoding and JSON
/// change.
fn awkward_key() -> String {
    format!("{}+/?\"&", random_key())
}

/// keyrun with `key` as OPENAI_API_KEY, running `script` under `sh -c`.
fn keyrun_sh(sandbox: &Sandbox, key: &str, script: &str) -> Command {
    keyrun_with(sandbox, key, &[], script)
}

/// keyrun with `options`, `key` as OPENAI_API_KEY, running `script` under
/// `sh -c`.
fn keyrun_with(sandbox: &Sandbox, key: &str, options: &[&str], script: &str) -> Command {
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", key)
        .args(options)
        .args(["--", "sh", "-c", script]);
    command
}

/// Writes a configuration file and returns the options that select its
/// profile `p`.
fn profile_options(sandbox: &Sandbox, toml: &str) -> [String; 4] {
    let path = sandbox.write("keyrun.toml", toml.as_bytes(), 0o600);
    [
        "--config".to_string(),
        path.to_str().unwrap().to_string(),
        "--profile".to_string(),
        "p".to_string(),
    ]
}

fn refs(options: &[String]) -> Vec<&str> {
    options.iter().map(String::as_str).collect()
}

#[test]
fn echoed_key_is_masked() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let out = output(&mut keyrun_sh(
        &sandbox,
        &key,
        r#"echo "key=$OPENAI_API_KEY done""#,
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_not_leaked(&out.stdout, &key, "stdout");
    assert_eq!(stdout(&out), "key=*** done\n");
}

#[test]
fn key_split_across_writes_is_masked() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let (head, tail) = key.split_at(10);
    let (middle, tail) = tail.split_at(12);
    let mut command = keyrun_sh(
        &sandbox,
        &key,
        r#"printf 'x %s' "$A"; sleep 0.005; printf '%s' "$B"; sleep 0.005; printf '%s y\n' "$C""#,
    );
    command.env("A", head).env("B", middle).env("C", tail);
    let out = output(&mut command);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_not_leaked(&out.stdout, &key, "stdout");
    assert_eq!(stdout(&out), "x *** y\n");
}

#[test]
fn key_on_stderr_is_masked_separately() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let out = output(&mut keyrun_sh(
        &sandbox,
        &key,
        r#"echo "out $OPENAI_API_KEY"; echo "err $OPENAI_API_KEY" >&2; echo out2"#,
    ));
    assert!(out.status.success());
    assert_not_leaked(&out.stdout, &key, "stdout");
    assert_not_leaked(&out.stderr, &key, "stderr");
    assert_eq!(stdout(&out), "out ***\nout2\n");
    assert_eq!(stderr(&out), "err ***\n");
}

#[test]
fn binary_output_passes_byte_exact() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let out = output(&mut keyrun_sh(
        &sandbox,
        &key,
        r#"printf 'a\000b\377\r\n\tc'; printf '%s\000' "$OPENAI_API_KEY""#,
    ));
    assert!(out.status.success());
    assert_eq!(out.stdout, b"a\0b\xff\r\n\tc***\0");
}

#[test]
fn encoded_forms_are_masked() {
    let sandbox = Sandbox::new();
    let key = awkward_key();
    let forms = [
        ("standard base64", STANDARD.encode(&key)),
        ("URL-safe base64", URL_SAFE_NO_PAD.encode(&key)),
        ("base64 after one byte", STANDARD.encode(format!("u{key}"))),
        (
            "base64 after two bytes",
            STANDARD.encode(format!("us{key}")),
        ),
        (
            "Basic authorization",
            STANDARD.encode(format!("user:{key}")),
        ),
        ("percent-encoded", percent_encode(&key)),
        ("JSON-escaped", key.replace('"', "\\\"")),
    ];
    for (name, form) in forms {
        let mut command = keyrun_sh(&sandbox, &key, r#"printf '<%s>\n' "$FORM""#);
        command.env("FORM", &form);
        let out = output(&mut command);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_not_leaked(&out.stdout, &form, name);
        assert!(stdout(&out).contains("***"), "{name}: no replacement");
        // What is left is at most the characters that encode the bytes
        // around the value ("u", "us", "user:") and one on each side that
        // mixes them with it.
        assert!(
            out.stdout.len() <= "<***>\n".len() + 8,
            "{name}: more than the edges is left"
        );
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn json_fields_are_masked_on_their_own() {
    let sandbox = Sandbox::new();
    let user = format!("user-{}", &random_key()[8..20]);
    let password = random_key();
    let secret = format!(r#"{{"user":"{user}","password":"{password}"}}"#);
    let config = sandbox.write(
        "keyrun.toml",
        b"[profiles.p]\nenv.CREDS = { from = \"env:CREDS_JSON\", raw = true }\n",
        0o600,
    );
    let mut command = sandbox.keyrun();
    command
        .env("CREDS_JSON", &secret)
        .env("P", &password)
        .env("U", &user)
        .arg("--config")
        .arg(&config)
        .args(["--profile", "p", "--", "sh", "-c"])
        .arg(r#"echo "password=$P"; echo "user=$U"; echo "all=$CREDS""#);
    let out = output(&mut command);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_not_leaked(&out.stdout, &password, "stdout");
    assert_not_leaked(&out.stdout, &user, "stdout");
    assert_eq!(stdout(&out), "password=***\nuser=***\nall=***\n");
}

#[test]
fn mask_never_passes_output_through() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = keyrun_with(
        &sandbox,
        &key,
        &["--mask", "never"],
        r#"echo "$OPENAI_API_KEY""#,
    );
    let out = output(&mut command);
    assert!(out.status.success());
    assert!(
        out.stdout == format!("{key}\n").as_bytes(),
        "the value did not pass through unchanged"
    );
}

#[test]
fn mask_with_and_delay_from_profile() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let options = profile_options(&sandbox, "[profiles.p]\nenv.OPENAI_API_KEY = \"env:OPENAI_API_KEY\"\nmask_with = \"[hidden]\"\nmask_delay = \"5ms\"\n");
    let mut command = keyrun_with(
        &sandbox,
        &key,
        &refs(&options),
        r#"echo "k=$OPENAI_API_KEY""#,
    );
    let out = output(&mut command);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "k=[hidden]\n");
}

#[test]
fn invalid_mask_delay_is_rejected() {
    let sandbox = Sandbox::new();
    let options = profile_options(&sandbox, "[profiles.p]\nmask_delay = \"soon\"\n");
    let mut command = keyrun_with(&sandbox, &random_key(), &refs(&options), "true");
    let out = output(&mut command);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("profiles.p.mask_delay"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn short_value_is_not_masked_with_warning() {
    let sandbox = Sandbox::new();
    let out = output(&mut keyrun_sh(
        &sandbox,
        "sk-1234",
        r#"echo "$OPENAI_API_KEY""#,
    ));
    assert!(out.status.success());
    assert_eq!(stdout(&out), "sk-1234\n");
    assert!(
        stderr(&out).contains("shorter than 8 bytes"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn child_closing_stdout_early() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let out = output(&mut keyrun_sh(
        &sandbox,
        &key,
        r#"echo "a $OPENAI_API_KEY"; exec >&-; sleep 0.2; echo "b $OPENAI_API_KEY" >&2; exit 3"#,
    ));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "a ***\n");
    assert_eq!(stderr(&out), "b ***\n");
}

#[test]
fn partial_line_is_flushed_after_delay() {
    let sandbox = Sandbox::new();
    let mut command = keyrun_sh(
        &sandbox,
        &random_key(),
        "printf 'waiting-for-input'; sleep 3",
    );
    command.stdout(Stdio::piped()).stderr(Stdio::null());
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    let mut reader = child.stdout.take().unwrap();
    let mut buffer = [0u8; 64];
    let read = reader.read(&mut buffer).unwrap();
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(&buffer[..read], b"waiting-for-input");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[test]
fn reader_going_away_ends_child_output() {
    let sandbox = Sandbox::new();
    let mut command = keyrun_sh(&sandbox, &random_key(), "yes line; echo gone >&2");
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut reader = child.stdout.take().unwrap();
    let mut buffer = [0u8; 5];
    reader.read_exact(&mut buffer).unwrap();
    drop(reader);
    let out = child.wait_with_output().unwrap();
    assert_eq!(&buffer, b"line\n");
    assert!(out.status.success(), "keyrun ended with {:?}", out.status);
    assert_eq!(stderr(&out), "gone\n");
}

// CI registration -----------------------------------------------------

#[test]
fn github_add_mask_line_on_pipe() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = keyrun_sh(&sandbox, &key, "echo child");
    command.env("GITHUB_ACTIONS", "true");
    let out = output(&mut command);
    assert!(out.status.success());
    let text = stdout(&out);
    let mut lines = text.lines();
    let expected = format!("::add-mask::{key}");
    assert!(
        lines.next() == Some(expected.as_str()),
        "the first line is not the add-mask command for the value"
    );
    assert_eq!(lines.next(), Some("child"));
    assert_eq!(lines.next(), None);
}

#[test]
fn azure_setsecret_line_on_pipe() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = keyrun_sh(&sandbox, &key, "true");
    command.env("TF_BUILD", "True");
    let out = output(&mut command);
    assert!(out.status.success());
    let expected = format!("##vso[task.setsecret]{key}\n");
    assert!(
        out.stdout == expected.as_bytes(),
        "the output is not the setsecret command for the value"
    );
}

#[test]
fn add_mask_lines_split_raw_value() {
    let sandbox = Sandbox::new();
    let long_line = random_key();
    let value = format!("{long_line}\nshort\n");
    let options = profile_options(
        &sandbox,
        "[profiles.p]\nenv.PEM = { from = \"env:PEM_SOURCE\", raw = true }\n",
    );
    let mut command = keyrun_with(&sandbox, &random_key(), &refs(&options), "true");
    command
        .env("GITHUB_ACTIONS", "true")
        .env("PEM_SOURCE", &value);
    let out = output(&mut command);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = format!("::add-mask::{long_line}\n");
    assert!(
        out.stdout == expected.as_bytes(),
        "expected one add-mask command, for the long line only"
    );
}

#[test]
fn no_add_mask_line_to_file() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let path = sandbox.path().join("out.log");
    let file = std::fs::File::create(&path).unwrap();
    let mut command = keyrun_sh(&sandbox, &key, "echo child");
    command.env("GITHUB_ACTIONS", "true").stdout(file);
    let status = command.status().unwrap();
    assert!(status.success());
    let written = std::fs::read(&path).unwrap();
    assert_not_leaked(&written, &key, "the output file");
    assert_eq!(written, b"child\n");
}

#[test]
fn ci_mask_false_writes_no_line() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let options = profile_options(
        &sandbox,
        "[profiles.p]\nenv.OPENAI_API_KEY = \"env:OPENAI_API_KEY\"\nci_mask = false\n",
    );
    let mut command = keyrun_with(&sandbox, &key, &refs(&options), "echo child");
    command.env("GITHUB_ACTIONS", "true");
    let out = output(&mut command);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_not_leaked(&out.stdout, &key, "stdout");
    assert_eq!(stdout(&out), "child\n");
}

// Pseudo-terminal ------------------------------------------------------

/// keyrun started on a pseudo-terminal the test holds the master side of,
/// in its own process group so that it can stop and resume as a shell job
/// does.
struct OnTerminal {
    master: std::os::fd::OwnedFd,
    slave: std::os::fd::OwnedFd,
    pid: nix::unistd::Pid,
    output: Vec<u8>,
}

impl OnTerminal {
    fn start(mut command: Command) -> OnTerminal {
        use std::os::unix::process::CommandExt as _;

        let size = nix::pty::Winsize {
            ws_row: 33,
            ws_col: 101,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(&size, None).unwrap();
        let flags = nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
        command
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave.try_clone().unwrap()))
            .process_group(0);
        let child = command.spawn().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        // The test reaps keyrun with waitpid, to see it stop.
        std::mem::forget(child);
        OnTerminal {
            master: pty.master,
            slave: pty.slave,
            pid,
            output: Vec::new(),
        }
    }

    /// Reads the terminal until its output contains `needle`; panics after
    /// five seconds.
    fn read_until(&mut self, needle: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while common::memchr_find(&self.output, needle).is_none() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {:?}; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.output)
            );
            let mut buffer = [0u8; 4096];
            match nix::unistd::read(&self.master, &mut buffer) {
                Ok(0) | Err(nix::errno::Errno::EIO) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(count) => self.output.extend_from_slice(&buffer[..count]),
                Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(10)),
                Err(err) => panic!("cannot read the terminal: {err}"),
            }
        }
    }

    fn write(&self, bytes: &[u8]) {
        nix::unistd::write(&self.master, bytes).unwrap();
    }

    fn local_flags(&self) -> nix::sys::termios::LocalFlags {
        nix::sys::termios::tcgetattr(&self.slave)
            .unwrap()
            .local_flags
    }

    fn wait(&mut self) -> nix::sys::wait::WaitStatus {
        use nix::sys::wait::{waitpid, WaitPidFlag};
        let status = waitpid(self.pid, Some(WaitPidFlag::WUNTRACED)).unwrap();
        // Collect what the child wrote last.
        let mut buffer = [0u8; 4096];
        while let Ok(count) = nix::unistd::read(&self.master, &mut buffer) {
            if count == 0 {
                break;
            }
            self.output.extend_from_slice(&buffer[..count]);
        }
        status
    }
}

fn exited(pid: nix::unistd::Pid, code: i32) -> nix::sys::wait::WaitStatus {
    nix::sys::wait::WaitStatus::Exited(pid, code)
}

#[test]
fn always_on_terminal_keeps_tty_and_colours() {
    use nix::sys::termios::LocalFlags;

    let sandbox = Sandbox::new();
    let key = random_key();
    let command = keyrun_with(
        &sandbox,
        &key,
        &["--mask", "always"],
        r#"test -t 1 && echo tty=yes; printf '\033[31mred\033[0m\n'; echo "k=$OPENAI_API_KEY"; echo end"#,
    );
    let mut terminal = OnTerminal::start(command);
    let before = terminal.local_flags();
    terminal.read_until(b"end");
    let status = terminal.wait();

    assert_eq!(status, exited(terminal.pid, 0));
    assert_not_leaked(&terminal.output, &key, "the terminal");
    let text = String::from_utf8_lossy(&terminal.output).into_owned();
    assert!(text.contains("tty=yes"), "the child saw no TTY: {text:?}");
    assert!(
        text.contains("\x1b[31mred\x1b[0m"),
        "colours lost: {text:?}"
    );
    assert!(text.contains("k=***"), "not masked: {text:?}");
    assert!(before.contains(LocalFlags::ICANON));
    assert_eq!(terminal.local_flags(), before, "terminal mode not restored");
}

#[test]
fn always_on_terminal_passes_input() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let command = keyrun_with(
        &sandbox,
        &key,
        &["--mask", "always"],
        r#"echo ready; read line; echo "got:$line"; echo "$OPENAI_API_KEY""#,
    );
    let mut terminal = OnTerminal::start(command);
    terminal.read_until(b"ready");
    terminal.write(b"hello\r");
    terminal.read_until(b"got:hello");
    let status = terminal.wait();
    assert_eq!(status, exited(terminal.pid, 0));
    assert_not_leaked(&terminal.output, &key, "the terminal");
    assert!(String::from_utf8_lossy(&terminal.output).contains("***"));
}

#[test]
fn always_on_terminal_follows_window_size() {
    let sandbox = Sandbox::new();
    let command = keyrun_with(
        &sandbox,
        &random_key(),
        &["--mask", "always"],
        "stty size; read x; stty size",
    );
    let mut terminal = OnTerminal::start(command);
    terminal.read_until(b"33 101");
    let size = nix::pty::Winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a valid winsize struct.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&terminal.master),
            libc::TIOCSWINSZ,
            &size,
        )
    };
    assert_eq!(rc, 0);
    // keyrun's terminal is not its controlling one here, so the test sends
    // the SIGWINCH a terminal would.
    nix::sys::signal::kill(terminal.pid, nix::sys::signal::Signal::SIGWINCH).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    terminal.write(b"\r");
    terminal.read_until(b"40 120");
    assert_eq!(terminal.wait(), exited(terminal.pid, 0));
}

#[test]
fn always_on_terminal_ctrl_z_and_continue() {
    use nix::sys::signal::{kill, Signal};
    use nix::sys::termios::LocalFlags;
    use nix::sys::wait::WaitStatus;

    let sandbox = Sandbox::new();
    let command = keyrun_with(
        &sandbox,
        &random_key(),
        &["--mask", "always"],
        r#"echo "pid=$$."; read x; echo resumed"#,
    );
    let mut terminal = OnTerminal::start(command);
    terminal.read_until(b".\r\n");
    let text = String::from_utf8_lossy(&terminal.output).into_owned();
    let child: u32 = text
        .split("pid=")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .and_then(|pid| pid.parse().ok())
        .expect("the child's pid");

    terminal.write(b"\x1a");
    let status = terminal.wait();
    assert_eq!(status, WaitStatus::Stopped(terminal.pid, Signal::SIGTSTP));
    // SIGSTOP reaches the child asynchronously: give it a moment.
    let process_state = || {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap();
        stat.rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .map(str::to_string)
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while process_state().as_deref() != Some("T") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        process_state().as_deref(),
        Some("T"),
        "the child is not stopped"
    );
    assert!(
        terminal.local_flags().contains(LocalFlags::ICANON),
        "the terminal mode is not restored while stopped"
    );

    kill(terminal.pid, Signal::SIGCONT).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    terminal.write(b"\r");
    terminal.read_until(b"resumed");
    assert_eq!(terminal.wait(), exited(terminal.pid, 0));
}

/// Output to /dev/null goes there straight from the command: it cannot be
/// read, so keyrun does not pipe it through the masker.
#[cfg(target_os = "linux")]
#[test]
fn dev_null_output_not_piped() {
    let sandbox = Sandbox::new();
    let key = random_key();
    // Python reads its own descriptors; a shell's `>&2` would move them.
    let script = "import os, sys\n\
                  for fd in (1, 2):\n    sys.stderr.write(os.readlink(f'/proc/self/fd/{fd}') + '\\n')\n";
    let out = sandbox
        .keyrun()
        .env("OPENAI_API_KEY", &key)
        .args(["--", "python3", "-c", script])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<String> = stderr(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "/dev/null", "stdout was piped");
    assert!(
        lines[1].starts_with("pipe:"),
        "stderr was not masked: {lines:?}"
    );
}
