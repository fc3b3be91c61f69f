//! `keyrun init`: the file it writes parses, is trusted, runs, and contains no
//! value.

mod common;

use common::{assert_not_leaked, check_var_command, output, random_key, stderr, stdout, Sandbox};

#[test]
fn init_file_runs() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let init = output(sandbox.keyrun().args(["init", "--from", "env:MY_KEY"]));
    assert_eq!(init.status.code(), Some(0), "{}", stderr(&init));

    let text = std::fs::read_to_string(sandbox.path().join("keyrun.toml")).unwrap();
    assert!(
        text.contains("env.OPENAI_API_KEY = \"env:MY_KEY\""),
        "{text}"
    );
    assert!(text.contains("default_profile = \"dev\""), "{text}");

    let run = output(
        sandbox
            .keyrun()
            .env("MY_KEY", &key)
            .arg("--")
            .args(check_var_command("OPENAI_API_KEY", &key)),
    );
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert_eq!(stdout(&run).trim(), "OPENAI_API_KEY=match");
}

#[test]
fn init_writes_var_and_profile() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let path = sandbox.write("secret.key", key.as_bytes(), 0o600);
    let init = output(sandbox.keyrun().args([
        "init",
        "--from",
        &format!("file:{}", path.display()),
        "--var",
        "AZURE_OPENAI_API_KEY",
        "--profile",
        "work",
    ]));
    assert_eq!(init.status.code(), Some(0), "{}", stderr(&init));
    let text = std::fs::read(sandbox.path().join("keyrun.toml")).unwrap();
    assert_not_leaked(&text, &key, "keyrun.toml");

    let run = output(
        sandbox
            .keyrun()
            .arg("--")
            .args(check_var_command("AZURE_OPENAI_API_KEY", &key)),
    );
    assert_eq!(
        stdout(&run).trim(),
        "AZURE_OPENAI_API_KEY=match",
        "{}",
        stderr(&run)
    );
}

#[test]
fn init_refuses_overwrite() {
    let sandbox = Sandbox::new();
    let existing = sandbox.write("keyrun.toml", b"# mine\n", 0o644);
    let init = output(sandbox.keyrun().args(["init", "--from", "env:MY_KEY"]));
    assert_eq!(init.status.code(), Some(125));
    assert!(stderr(&init).contains("--force"), "{}", stderr(&init));
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "# mine\n");

    let forced = output(
        sandbox
            .keyrun()
            .args(["init", "--from", "env:MY_KEY", "--force"]),
    );
    assert_eq!(forced.status.code(), Some(0), "{}", stderr(&forced));
    assert!(std::fs::read_to_string(&existing)
        .unwrap()
        .contains("env:MY_KEY"));
}

#[test]
fn init_needs_from_without_terminal() {
    let sandbox = Sandbox::new();
    let init = output(sandbox.keyrun().arg("init"));
    assert_eq!(init.status.code(), Some(125));
    assert!(stderr(&init).contains("--from"), "{}", stderr(&init));
    assert!(!sandbox.path().join("keyrun.toml").exists());
}

#[test]
fn init_rejects_key_in_reference() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let init = output(
        sandbox
            .keyrun()
            .args(["init", "--from", &format!("cmd:echo {key}")]),
    );
    assert_eq!(init.status.code(), Some(125));
    assert_not_leaked(&init.stderr, &key, "the error of keyrun init");
    assert!(!sandbox.path().join("keyrun.toml").exists());
}

#[test]
fn init_rejects_bad_reference() {
    let sandbox = Sandbox::new();
    let init = output(sandbox.keyrun().args(["init", "--from", "s3:bucket/key"]));
    assert_eq!(init.status.code(), Some(125));
    assert!(
        stderr(&init).contains("unknown scheme"),
        "{}",
        stderr(&init)
    );
}

#[test]
fn man_page_lists_subcommands() {
    let sandbox = Sandbox::new();
    let man = output(sandbox.keyrun().arg("man"));
    assert_eq!(man.status.code(), Some(0), "{}", stderr(&man));
    let text = stdout(&man);
    assert!(text.contains(".TH keyrun 1"), "no roff title line");
    for name in ["set", "delete", "shell", "init", "man"] {
        let entry = format!("keyrun\\-{name}(1)");
        assert!(text.contains(&entry), "the man page lacks {entry}");
    }
}
