//! The prompt of `keyrun set` and `keyrun shell` on a real terminal: a
//! tmux server on a private socket runs a script in a pane, the test types
//! into it with `send-keys` and reads the screen with `capture-pane`.

#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::keyutils::{entry_name, join_session_keyring, EntryGuard};
use common::{
    assert_not_leaked, check_var_command, keyrun_bin, output, random_key, stderr, stdout, Sandbox,
};

/// A tmux server with one pane, killed on drop.
struct Tmux {
    socket: String,
    /// Values to replace in a screen that a failure message shows.
    secrets: Vec<String>,
}

impl Tmux {
    /// Starts a detached session that runs `script` in the sandbox, with
    /// an environment that names the sandbox's folders and the keyutils
    /// store.
    fn start(sandbox: &Sandbox, script: &str, secrets: &[&str]) -> Tmux {
        let socket = format!("keyrun-test-{}", &random_key()[8..20]);
        let prelude = format!(
            "export HOME='{home}' XDG_CONFIG_HOME='{root}/config' XDG_STATE_HOME='{root}/state' \
             KEYRUN_KEYRING_STORE=keyutils AWS_EC2_METADATA_DISABLED=true SHELL=/bin/sh PS1='$ '\n\
             cd '{root}'\n",
            home = sandbox.home().display(),
            root = sandbox.path().display(),
        );
        let path = sandbox.write(
            "session.sh",
            format!("{prelude}{script}\nexec sleep 600\n").as_bytes(),
            0o700,
        );
        let tmux = Tmux {
            socket,
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
        };
        let status = tmux
            .command()
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "200",
                "-y",
                "50",
            ])
            .arg(&path)
            .status()
            .expect("tmux runs");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TERM", "xterm-256color")
            .env("SHELL", "/bin/sh")
            .args(["-L", &self.socket]);
        command
    }

    fn send_literal(&self, text: &str) {
        let status = self
            .command()
            .args(["send-keys", "-l", text])
            .status()
            .unwrap();
        assert!(status.success(), "tmux send-keys failed");
    }

    fn send_key(&self, key: &str) {
        let status = self.command().args(["send-keys", key]).status().unwrap();
        assert!(status.success(), "tmux send-keys {key} failed");
    }

    /// The pane's whole screen and history.
    fn capture(&self) -> String {
        let output = self
            .command()
            .args(["capture-pane", "-p", "-J", "-S", "-"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The pane's terminal device, such as /dev/pts/3.
    fn tty(&self) -> PathBuf {
        let output = self
            .command()
            .args(["display-message", "-p", "#{pane_tty}"])
            .output()
            .unwrap();
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    }

    /// The pid of the keyrun process that runs in the pane, found among
    /// the descendants of the pane's first process.
    fn keyrun_pid(&self) -> u32 {
        let output = self
            .command()
            .args(["display-message", "-p", "#{pane_pid}"])
            .output()
            .unwrap();
        let mut pending: Vec<u32> = vec![String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("tmux prints the pane's pid")];
        while let Some(pid) = pending.pop() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "keyrun" {
                return pid;
            }
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            pending.extend(
                children
                    .split_whitespace()
                    .map(|p| p.parse::<u32>().unwrap()),
            );
        }
        panic!("no keyrun process runs in the pane");
    }

    /// Waits until the screen contains `needle` and returns the screen.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.capture();
            if screen.contains(needle) {
                return screen;
            }
            if Instant::now() > deadline {
                let mut shown = screen;
                for secret in &self.secrets {
                    shown = shown.replace(secret.as_str(), "***");
                }
                panic!("the screen never showed {needle:?}; it shows:\n{shown}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// The settings `stty -a` prints for a terminal device.
fn stty(tty: &Path) -> String {
    let output = Command::new("stty")
        .arg("-a")
        .arg("-F")
        .arg(tty)
        .output()
        .unwrap();
    assert!(output.status.success(), "stty -F failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether `stty -a` output lists `flag` as on (`echo`, not `-echo`).
fn flag_on(settings: &str, flag: &str) -> bool {
    settings
        .split(|c: char| c.is_whitespace() || c == ';')
        .any(|word| word == flag)
}

fn keyrun_check(sandbox: &Sandbox, name: &str, expected: &str) -> std::process::Output {
    let mut command = sandbox.keyrun();
    command
        .env("KEYRUN_KEYRING_STORE", "keyutils")
        .args(["--from", &format!("keyring:{name}"), "--"])
        .args(check_var_command("OPENAI_API_KEY", expected));
    output(&mut command)
}

#[test]
fn prompt_hides_value_and_stores_it() {
    join_session_keyring();
    let sandbox = Sandbox::new();
    let name = entry_name("prompt");
    let _guard = EntryGuard { name: name.clone() };
    let key = random_key();
    let script = format!(
        "'{bin}' set {name}\necho \"set-status=$?\"",
        bin = keyrun_bin().display()
    );
    let tmux = Tmux::start(&sandbox, &script, &[&key]);

    tmux.wait_for("input is hidden");
    let during = stty(&tmux.tty());
    assert!(!flag_on(&during, "echo"), "echo is on at the prompt");
    assert!(flag_on(&during, "-echo"), "stty does not list -echo");

    tmux.send_literal(&key);
    tmux.send_key("Enter");
    let screen = tmux.wait_for("set-status=");
    assert_not_leaked(screen.as_bytes(), &key, "the terminal");
    assert!(screen.contains("set-status=0"), "keyrun set failed");
    assert!(
        flag_on(&stty(&tmux.tty()), "echo"),
        "echo is off after the prompt"
    );

    let run = keyrun_check(&sandbox, &name, &key);
    assert_eq!(
        stdout(&run).trim(),
        "OPENAI_API_KEY=match",
        "{}",
        stderr(&run)
    );
}

#[test]
fn ctrl_c_at_prompt_restores_terminal() {
    join_session_keyring();
    let sandbox = Sandbox::new();
    let name = entry_name("ctrl_c");
    let _guard = EntryGuard { name: name.clone() };
    let partial = random_key();
    let script = format!(
        "stty -a > before.txt\n'{bin}' set {name}\necho \"set-status=$?\"\nstty -a > after.txt\necho finished",
        bin = keyrun_bin().display()
    );
    let tmux = Tmux::start(&sandbox, &script, &[&partial]);

    tmux.wait_for("input is hidden");
    tmux.send_literal(&partial);
    tmux.send_key("C-c");
    let screen = tmux.wait_for("finished");

    // A shell reports a command ended by SIGINT as 130.
    assert!(
        screen.contains("set-status=130"),
        "keyrun did not end by SIGINT"
    );
    assert!(screen.contains("nothing was stored"), "no cancel message");
    assert_not_leaked(screen.as_bytes(), &partial, "the terminal");
    let before = std::fs::read_to_string(sandbox.path().join("before.txt")).unwrap();
    let after = std::fs::read_to_string(sandbox.path().join("after.txt")).unwrap();
    assert!(flag_on(&after, "echo"), "echo is off after Ctrl-C");
    assert!(
        flag_on(&after, "icanon"),
        "canonical mode is off after Ctrl-C"
    );
    assert!(flag_on(&after, "isig"), "signal keys are off after Ctrl-C");
    assert_eq!(before, after, "the terminal settings changed");

    let run = keyrun_check(&sandbox, &name, &partial);
    assert_eq!(run.status.code(), Some(125), "a value was stored");
}

#[test]
fn shell_has_value_and_refuses_nesting() {
    join_session_keyring();
    let sandbox = Sandbox::new();
    let name = entry_name("shell");
    let _guard = EntryGuard { name: name.clone() };
    let key = random_key();
    let key_file = sandbox.write("expected.txt", key.as_bytes(), 0o600);

    let mut set = sandbox.keyrun();
    set.env("KEYRUN_KEYRING_STORE", "keyutils").args([
        "set",
        &name,
        "--from",
        &format!("file:{}", key_file.display()),
    ]);
    let set = output(&mut set);
    assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));

    let bin = keyrun_bin();
    let script = format!(
        "'{bin}' shell --from keyring:{name}\necho \"shell-status=$?\"",
        bin = bin.display()
    );
    let tmux = Tmux::start(&sandbox, &script, &[&key]);
    tmux.wait_for("type `exit` to leave");

    tmux.send_literal(
        "if [ \"$OPENAI_API_KEY\" = \"$(cat expected.txt)\" ]; then echo value-$((40+2)); else echo value-$((0+0)); fi",
    );
    tmux.send_key("Enter");
    // The typed line shows `value-$((40+2))`; only the test's result shows
    // `value-42`, and `value-0` means the shell lacks the value.
    tmux.wait_for("value-42");

    tmux.send_literal("echo \"marker:$KEYRUN_SHELL:\"");
    tmux.send_key("Enter");
    tmux.wait_for("marker:default:");

    tmux.send_literal(&format!("'{}' shell; echo \"nested:$?:\"", bin.display()));
    tmux.send_key("Enter");
    let screen = tmux.wait_for("nested:125:");
    assert!(screen.contains("already runs inside"), "no nesting message");
    assert!(screen.contains("--force"), "the message lacks --force");

    tmux.send_literal("exit");
    tmux.send_key("Enter");
    let screen = tmux.wait_for("shell-status=");
    assert!(
        screen.contains("shell-status=0"),
        "the shell's status was lost"
    );
    assert_not_leaked(screen.as_bytes(), &key, "the terminal");
}

#[test]
fn init_asks_on_terminal() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let script = format!(
        "'{bin}' init\necho \"init-status=$?\"",
        bin = keyrun_bin().display()
    );
    let tmux = Tmux::start(&sandbox, &script, &[]);

    tmux.wait_for("Choice [1]:");
    tmux.send_literal("2");
    tmux.send_key("Enter");
    tmux.wait_for("Variable name [OPENAI_API_KEY]:");
    tmux.send_literal("MY_KEY");
    tmux.send_key("Enter");
    let screen = tmux.wait_for("init-status=");
    assert!(screen.contains("init-status=0"), "keyrun init failed");

    let text = std::fs::read_to_string(sandbox.path().join("keyrun.toml")).unwrap();
    assert!(
        text.contains("env.OPENAI_API_KEY = \"env:MY_KEY\""),
        "{text}"
    );
    let run = output(
        sandbox
            .keyrun()
            .env("MY_KEY", &key)
            .arg("--")
            .args(check_var_command("OPENAI_API_KEY", &key)),
    );
    assert_eq!(
        stdout(&run).trim(),
        "OPENAI_API_KEY=match",
        "{}",
        stderr(&run)
    );
}

#[test]
fn sigterm_at_prompt_restores_terminal() {
    join_session_keyring();
    let sandbox = Sandbox::new();
    let name = entry_name("sigterm");
    let script = format!(
        "stty -a > before.txt\n'{bin}' set {name}\necho \"set-status=$?\"\nstty -a > after.txt\necho finished",
        bin = keyrun_bin().display()
    );
    let tmux = Tmux::start(&sandbox, &script, &[]);

    tmux.wait_for("input is hidden");
    let status = Command::new("kill")
        .args(["-TERM", &tmux.keyrun_pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let screen = tmux.wait_for("finished");

    // A shell reports a command ended by SIGTERM as 143.
    assert!(
        screen.contains("set-status=143"),
        "keyrun did not end by SIGTERM"
    );
    let before = std::fs::read_to_string(sandbox.path().join("before.txt")).unwrap();
    let after = std::fs::read_to_string(sandbox.path().join("after.txt")).unwrap();
    assert!(flag_on(&after, "echo"), "echo is off after SIGTERM");
    assert_eq!(before, after, "the terminal settings changed");
}
