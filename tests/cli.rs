//! The command line of the real binary: every bad input exits 125 with a
//! message that names the problem and never the value, and the options that
//! choose, merge and shape the injected variables work as documented.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{
    assert_failed, assert_not_leaked, check_var_command, env_has_command, output, random_key,
    run_with_config, stderr, stdout, Sandbox,
};

/// Asserts that keyrun failed with its own status and that neither stream
/// carries `value`.
fn assert_failed_clean(result: &Output, value: &str) {
    assert_eq!(result.status.code(), Some(125), "{}", stderr(result));
    assert_not_leaked(&result.stdout, value, "stdout");
    assert_not_leaked(&result.stderr, value, "stderr");
}

/// Asserts that keyrun ran the child, which printed `expected`, and that
/// stderr carries no value.
fn assert_ran(result: &Output, expected: &str, value: &str) {
    assert_eq!(result.status.code(), Some(0), "{}", stderr(result));
    assert_eq!(stdout(result).trim(), expected);
    assert_not_leaked(&result.stderr, value, "stderr");
}

fn file_reference(path: &std::path::Path) -> String {
    format!("file:{}", path.display())
}

// Bad input: values.

#[test]
fn no_key_anywhere() {
    let sandbox = Sandbox::new();
    let result = output(sandbox.keyrun().args(["--", "true"]));
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("OPENAI_API_KEY is not set"), "{message}");
    assert!(message.contains("export OPENAI_API_KEY="), "{message}");
    assert!(message.contains("--from REF"), "{message}");
}

#[test]
fn empty_value_rejected() {
    let sandbox = Sandbox::new();
    let result = output(
        sandbox
            .keyrun()
            .env("OPENAI_API_KEY", "")
            .args(["--", "true"]),
    );
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("env:OPENAI_API_KEY"), "{message}");
    assert!(message.contains("the value is empty"), "{message}");
}

#[test]
fn blank_value_rejected() {
    let sandbox = Sandbox::new();
    let result = output(
        sandbox
            .keyrun()
            .env("OPENAI_API_KEY", " \t  ")
            .args(["--", "true"]),
    );
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("env:OPENAI_API_KEY"), "{message}");
    assert!(message.contains("the value is empty"), "{message}");
}

#[test]
fn quoted_value_trimmed_with_warning() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", format!("\"{key}\""))
        .arg("--")
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
    let message = stderr(&result);
    assert!(message.contains("warning"), "{message}");
    assert!(message.contains("removed surrounding quotes"), "{message}");
    assert!(message.contains("env:OPENAI_API_KEY"), "{message}");
}

#[test]
fn quiet_silences_trim_warning() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", format!("'{key}'"))
        .args(["-q", "--"])
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
    assert_eq!(stderr(&result), "");
}

#[test]
fn unusual_key_shape_warns_and_runs() {
    let sandbox = Sandbox::new();
    let key = random_key().replace("sk-test-", "gw_");
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", &key)
        .arg("--")
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
    let message = stderr(&result);
    assert!(
        message.contains("does not look like an OpenAI key"),
        "{message}"
    );
}

#[test]
fn inner_space_rejected() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let (head, tail) = key.split_at(20);
    let result = output(
        sandbox
            .keyrun()
            .env("OPENAI_API_KEY", format!("{head} {tail}"))
            .args(["--", "true"]),
    );
    assert_failed_clean(&result, head);
    assert_not_leaked(&result.stderr, tail, "stderr");
    let message = stderr(&result);
    assert!(message.contains("contains whitespace"), "{message}");
    assert!(message.contains("raw = true"), "{message}");
}

#[test]
fn raw_variable_keeps_inner_space() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let value = format!("{} {}", &key[..20], &key[20..]);
    let config = sandbox.write(
        "keyrun.conf",
        b"[profiles.pem]\nenv.OPENAI_API_KEY = { from = \"env:PEM\", raw = true }\n",
        0o600,
    );
    let mut command = sandbox.keyrun();
    command
        .env("PEM", &value)
        .arg("--config")
        .arg(&config)
        .args(["--profile", "pem", "--"])
        .args(check_var_command("OPENAI_API_KEY", &value));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &value);
}

// Bad input: files.

#[test]
fn missing_file_rejected() {
    let sandbox = Sandbox::new();
    let path = sandbox.path().join("no-such-key");
    let result = output(
        sandbox
            .keyrun()
            .args(["--from", &file_reference(&path), "--", "true"]),
    );
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("does not exist"), "{message}");
    assert!(message.contains("no-such-key"), "{message}");
}

#[test]
fn directory_rejected() {
    let sandbox = Sandbox::new();
    let result =
        output(
            sandbox
                .keyrun()
                .args(["--from", &file_reference(&sandbox.home()), "--", "true"]),
        );
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("is a directory"), "{message}");
}

#[test]
fn readable_file_rejected() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let path = sandbox.write("key", key.as_bytes(), 0o644);
    let result = output(
        sandbox
            .keyrun()
            .args(["--from", &file_reference(&path), "--", "true"]),
    );
    assert_failed_clean(&result, &key);
    let message = stderr(&result);
    assert!(message.contains("readable by other users"), "{message}");
    assert!(message.contains("mode 644"), "{message}");
    assert!(message.contains("chmod 600"), "{message}");
    assert!(message.contains("allow_readable=true"), "{message}");
}

#[test]
fn allow_readable_option_accepts_file() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let path = sandbox.write("key", key.as_bytes(), 0o644);
    let reference = format!("{}?allow_readable=true", file_reference(&path));
    let mut command = sandbox.keyrun();
    command
        .args(["--from", &reference, "--"])
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
}

#[test]
fn allow_readable_section_accepts_file() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let path = sandbox.write("key", key.as_bytes(), 0o640);
    let config = sandbox.write("keyrun.conf", b"[file]\nallow_readable = true\n", 0o600);
    let mut command = sandbox.keyrun();
    command
        .arg("--config")
        .arg(&config)
        .args(["--from", &file_reference(&path), "--"])
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
}

#[test]
fn oversize_file_rejected() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut content = key.clone().into_bytes();
    content.resize(64 * 1024 + 1, b'a');
    let path = sandbox.write("key", &content, 0o600);
    let result = output(
        sandbox
            .keyrun()
            .args(["--from", &file_reference(&path), "--", "true"]),
    );
    assert_failed_clean(&result, &key);
    let message = stderr(&result);
    assert!(message.contains("65537 bytes"), "{message}");
    assert!(message.contains("65536-byte limit"), "{message}");
}

// Bad input: commands.

#[test]
fn failing_command_rejected() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let script = sandbox.write(
        "fetch",
        format!("#!/bin/sh\necho {key}\necho \"login failed for {key}\" >&2\nexit 3\n").as_bytes(),
        0o700,
    );
    let result = output(sandbox.keyrun().args([
        "--from",
        &format!("cmd:{}", script.display()),
        "--",
        "true",
    ]));
    assert_failed_clean(&result, &key);
    let message = stderr(&result);
    assert!(message.contains("the command failed"), "{message}");
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(message.contains("login failed for ***"), "{message}");
}

#[test]
fn missing_command_rejected() {
    let sandbox = Sandbox::new();
    let result = output(sandbox.keyrun().args([
        "--from",
        "cmd:keyrun-test-no-such-program read it",
        "--",
        "true",
    ]));
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(
        message.contains("\"keyrun-test-no-such-program\" not found"),
        "{message}"
    );
}

#[test]
fn silent_command_rejected() {
    let sandbox = Sandbox::new();
    let result = output(sandbox.keyrun().args(["--from", "cmd:true", "--", "true"]));
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("printed nothing on stdout"), "{message}");
}

#[test]
fn hanging_command_times_out() {
    let sandbox = Sandbox::new();
    let config = sandbox.write("keyrun.conf", b"[command]\ntimeout = \"1s\"\n", 0o600);
    let started = Instant::now();
    let result = output(sandbox.keyrun().arg("--config").arg(&config).args([
        "--from",
        "cmd:sleep 30",
        "--",
        "true",
    ]));
    let elapsed = started.elapsed();
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("did not finish within 1s"), "{message}");
    assert!(message.contains("timeout"), "{message}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

// Bad input: references and flags.

#[test]
fn unknown_scheme_rejected() {
    let sandbox = Sandbox::new();
    let result = output(
        sandbox
            .keyrun()
            .args(["--from", "nosuch:thing", "--", "true"]),
    );
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("unknown scheme \"nosuch\""), "{message}");
    assert!(
        message.contains("known schemes: env, file, cmd"),
        "{message}"
    );
}

#[test]
fn set_without_equals_rejected() {
    let sandbox = Sandbox::new();
    let result = output(sandbox.keyrun().args(["--set", "ORG", "--", "true"]));
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("expected NAME=REF"), "{message}");
}

#[test]
fn set_with_invalid_name_rejected() {
    let sandbox = Sandbox::new();
    let result = output(
        sandbox
            .keyrun()
            .args(["--set", "1ORG=env:ORG", "--", "true"]),
    );
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(
        message.contains("the variable name is invalid"),
        "{message}"
    );
}

#[test]
fn set_of_pasted_value_not_echoed() {
    let sandbox = Sandbox::new();
    // Pasted values with an `=`: base64 padding, and a key-like word
    // before an `=` that makes an invalid name.
    for (argument, part) in [
        ("QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "QWxhZGRpbjpvcGVuIHNlc2FtZQ"),
        ("sk-proj-Ab12Cd34Ef56=Gh78", "sk-proj-Ab12Cd34Ef56"),
    ] {
        let result = output(sandbox.keyrun().args(["--set", argument, "--", "true"]));
        assert_failed_clean(&result, part);
        assert!(stderr(&result).contains("--set"), "{}", stderr(&result));
    }
}

#[test]
fn env_file_pasted_value_not_echoed() {
    let sandbox = Sandbox::new();
    let path = sandbox.write("b64.env", b"QWxhZGRpbjpvcGVuIHNlc2FtZQ==\n", 0o600);
    let mut command = sandbox.keyrun();
    command.arg("--env-file").arg(&path).args(["--", "true"]);
    let result = output(&mut command);
    assert_failed_clean(&result, "QWxhZGRpbjpvcGVuIHNlc2FtZQ");
    assert!(stderr(&result).contains("line 1"), "{}", stderr(&result));
}

#[test]
fn env_file_bad_line_rejected() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let path = sandbox.write("app.env", format!("ORG=env:ORG\n{key}\n").as_bytes(), 0o600);
    let result = output(
        sandbox
            .keyrun()
            .arg("--env-file")
            .arg(&path)
            .args(["--", "true"]),
    );
    assert_failed_clean(&result, &key);
    let message = stderr(&result);
    assert!(message.contains("app.env"), "{message}");
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("expected NAME=REF"), "{message}");
}

#[test]
fn missing_env_file_rejected() {
    let sandbox = Sandbox::new();
    let result = output(
        sandbox
            .keyrun()
            .args(["--env-file", "missing.env", "--", "true"]),
    );
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("cannot read the env file"), "{message}");
    assert!(message.contains("missing.env"), "{message}");
}

#[test]
fn no_command_after_separator() {
    let sandbox = Sandbox::new();
    let result = output(
        sandbox
            .keyrun()
            .env("OPENAI_API_KEY", random_key())
            .arg("--"),
    );
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("no command to run"), "{message}");
    assert!(message.contains("keyrun -- python app.py"), "{message}");
}

#[test]
fn command_without_separator_rejected() {
    let sandbox = Sandbox::new();
    let result = output(sandbox.keyrun().args(["python", "app.py"]));
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("'python'"), "{message}");
    assert!(message.contains("only after `--`"), "{message}");
}

#[test]
fn unknown_option_exits_125() {
    let sandbox = Sandbox::new();
    let result = output(sandbox.keyrun().args(["--form", "env:X", "--", "true"]));
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("--form"), "{message}");
}

// Bad input: the configuration.

#[test]
fn unknown_section_key_names_line() {
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "keyrun.conf",
        b"[profiles.dev]\nenv.A = \"env:A\"\n\n[command]\ntimout = \"1s\"\n",
        0o600,
    );
    let message = assert_failed(&run_with_config(sandbox.keyrun(), &config));
    assert!(message.contains("keyrun.conf, line 5"), "{message}");
    assert!(
        message.contains("unknown key `command.timout`"),
        "{message}"
    );
    assert!(message.contains("known keys there: timeout"), "{message}");
}

#[test]
fn unknown_profile_key_names_line() {
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "keyrun.conf",
        b"[profiles.dev]\nenv.A = \"env:A\"\nunsett = [\"B\"]\n",
        0o600,
    );
    let message = assert_failed(&run_with_config(sandbox.keyrun(), &config));
    assert!(message.contains("keyrun.conf"), "{message}");
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("unknown field `unsett`"), "{message}");
}

#[test]
fn toml_syntax_error_names_line() {
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "keyrun.conf",
        b"default_profile = \"dev\"\n[profiles.dev\nenv.A = \"env:A\"\n",
        0o600,
    );
    let message = assert_failed(&run_with_config(sandbox.keyrun(), &config));
    assert!(message.contains("invalid configuration file"), "{message}");
    assert!(message.contains("keyrun.conf"), "{message}");
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn world_writable_config_rejected() {
    let sandbox = Sandbox::new();
    let config = sandbox.write("keyrun.conf", b"[profiles.dev]\n", 0o666);
    let message = assert_failed(&run_with_config(sandbox.keyrun(), &config));
    assert!(message.contains("keyrun.conf"), "{message}");
    assert!(message.contains("every user can write to it"), "{message}");
    assert!(message.contains("chmod o-w"), "{message}");
}

#[test]
fn group_writable_config_accepted() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let config = sandbox.write("keyrun.conf", b"[profiles.dev]\n", 0o664);
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", &key)
        .arg("--config")
        .arg(&config)
        .args(["--"])
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
}

#[test]
fn world_writable_env_file_rejected() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let env_file = sandbox.write("ci.env", b"OPENAI_API_KEY=env:CI_KEY\n", 0o646);
    let mut command = sandbox.keyrun();
    command
        .env("CI_KEY", &key)
        .arg("--env-file")
        .arg(&env_file)
        .args(["--", "true"]);
    let result = output(&mut command);
    assert_failed_clean(&result, &key);
    let message = stderr(&result);
    assert!(message.contains("ci.env"), "{message}");
    assert!(message.contains("every user can write to it"), "{message}");
}

#[test]
fn bad_reference_in_config_rejected() {
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "keyrun.conf",
        b"[profiles.dev]\nenv.A = \"nosuch:thing\"\n",
        0o600,
    );
    let message = assert_failed(&run_with_config(sandbox.keyrun(), &config));
    assert!(message.contains("profiles.dev.env.A"), "{message}");
    assert!(message.contains("unknown scheme"), "{message}");
}

#[test]
fn missing_config_file_rejected() {
    let sandbox = Sandbox::new();
    let result = output(
        sandbox
            .keyrun()
            .args(["--config", "missing.toml", "--", "true"]),
    );
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("missing.toml"), "{message}");
    assert!(message.contains("--config or KEYRUN_CONFIG"), "{message}");
}

const TWO_PROFILES: &[u8] =
    b"[profiles.dev]\nenv.A = \"env:DEV\"\n\n[profiles.ci]\nenv.A = \"env:CI_KEY\"\n";

#[test]
fn unknown_profile_lists_profiles() {
    let sandbox = Sandbox::new();
    let config = sandbox.write("keyrun.conf", TWO_PROFILES, 0o600);
    let result = output(sandbox.keyrun().arg("--config").arg(&config).args([
        "--profile",
        "prod",
        "--",
        "true",
    ]));
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("unknown profile \"prod\""), "{message}");
    assert!(
        message.contains("profiles defined there: ci, dev"),
        "{message}"
    );
}

#[test]
fn unknown_profile_without_config() {
    let sandbox = Sandbox::new();
    let result = output(sandbox.keyrun().args(["--profile", "prod", "--", "true"]));
    assert_eq!(result.status.code(), Some(125));
    let message = stderr(&result);
    assert!(message.contains("unknown profile \"prod\""), "{message}");
    assert!(message.contains("no configuration file"), "{message}");
}

#[test]
fn unknown_default_profile_rejected() {
    let sandbox = Sandbox::new();
    let mut text = b"default_profile = \"prod\"\n".to_vec();
    text.extend_from_slice(TWO_PROFILES);
    let config = sandbox.write("keyrun.conf", &text, 0o600);
    let message = assert_failed(&run_with_config(sandbox.keyrun(), &config));
    assert!(message.contains("default_profile = \"prod\""), "{message}");
    assert!(message.contains("profiles defined: ci, dev"), "{message}");
}

// Trust of ./keyrun.toml.

const LOCAL_CONFIG: &[u8] =
    b"default_profile = \"dev\"\n\n[profiles.dev]\nenv.OPENAI_API_KEY = \"env:DEV_KEY\"\n";

#[test]
fn untrusted_local_config_rejected() {
    let sandbox = Sandbox::new();
    let key = random_key();
    sandbox.write("keyrun.toml", LOCAL_CONFIG, 0o644);
    let result = output(sandbox.keyrun().env("DEV_KEY", &key).args(["--", "true"]));
    assert_failed_clean(&result, &key);
    let message = stderr(&result);
    assert!(message.contains("keyrun.toml is not trusted"), "{message}");
    assert!(message.contains("can run programs"), "{message}");
    assert!(message.contains("run `keyrun trust "), "{message}");
}

#[test]
fn trusted_local_config_used() {
    let sandbox = Sandbox::new();
    let key = random_key();
    sandbox.write("keyrun.toml", LOCAL_CONFIG, 0o644);
    let trust = output(sandbox.keyrun().arg("trust"));
    assert_eq!(trust.status.code(), Some(0), "{}", stderr(&trust));
    assert!(stderr(&trust).contains("trusted "), "{}", stderr(&trust));

    let mut command = sandbox.keyrun();
    command
        .env("DEV_KEY", &key)
        .arg("--")
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
}

#[test]
fn changed_local_config_needs_trust() {
    let sandbox = Sandbox::new();
    let key = random_key();
    sandbox.write("keyrun.toml", LOCAL_CONFIG, 0o644);
    let trust = output(sandbox.keyrun().arg("trust"));
    assert_eq!(trust.status.code(), Some(0), "{}", stderr(&trust));
    let mut changed = LOCAL_CONFIG.to_vec();
    changed.extend_from_slice(b"unset = [\"HOME\"]\n");
    sandbox.write("keyrun.toml", &changed, 0o644);

    let result = output(sandbox.keyrun().env("DEV_KEY", &key).args(["--", "true"]));
    assert_failed_clean(&result, &key);
    let message = stderr(&result);
    assert!(
        message.contains("changed since it was trusted"),
        "{message}"
    );
    assert!(message.contains("run `keyrun trust "), "{message}");

    let trust = output(sandbox.keyrun().arg("trust"));
    assert_eq!(trust.status.code(), Some(0), "{}", stderr(&trust));
    let mut command = sandbox.keyrun();
    command
        .env("DEV_KEY", &key)
        .arg("--")
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
}

#[test]
fn invalid_local_config_not_trusted() {
    let sandbox = Sandbox::new();
    sandbox.write("keyrun.toml", b"[profiles.dev\n", 0o644);
    let trust = output(sandbox.keyrun().arg("trust"));
    assert_eq!(trust.status.code(), Some(125));
    let message = stderr(&trust);
    assert!(
        message.contains("was not trusted because it is invalid"),
        "{message}"
    );
}

#[test]
fn ci_counts_as_trust() {
    let sandbox = Sandbox::new();
    let key = random_key();
    sandbox.write("keyrun.toml", LOCAL_CONFIG, 0o644);
    let mut command = sandbox.keyrun();
    command
        .env("CI", "true")
        .env("DEV_KEY", &key)
        .arg("--")
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
}

#[test]
fn config_flag_counts_as_trust() {
    let sandbox = Sandbox::new();
    let key = random_key();
    sandbox.write("keyrun.toml", LOCAL_CONFIG, 0o644);
    let mut command = sandbox.keyrun();
    command
        .env("DEV_KEY", &key)
        .args(["--config", "keyrun.toml", "--"])
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
}

#[test]
fn keyrun_config_counts_as_trust() {
    let sandbox = Sandbox::new();
    let key = random_key();
    sandbox.write("keyrun.toml", LOCAL_CONFIG, 0o644);
    let mut command = sandbox.keyrun();
    command
        .env("KEYRUN_CONFIG", "keyrun.toml")
        .env("DEV_KEY", &key)
        .arg("--")
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
}

// Choosing the variables.

#[test]
fn from_env_sets_default_variable() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("MY_KEY", &key)
        .args(["--from", "env:MY_KEY", "--"])
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
}

#[test]
fn from_relative_file_uses_working_directory() {
    let sandbox = Sandbox::new();
    let key = random_key();
    sandbox.write("secrets/openai.key", format!("{key}\n").as_bytes(), 0o600);
    let mut command = sandbox.keyrun();
    command
        .args(["--from", "file:secrets/openai.key", "--"])
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
    assert_eq!(stderr(&result), "");
}

#[test]
fn from_file_expands_home() {
    let sandbox = Sandbox::new();
    let key = random_key();
    sandbox.write("home/openai.key", key.as_bytes(), 0o600);
    let mut command = sandbox.keyrun();
    command
        .args(["--from", "file:~/openai.key", "--"])
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
}

#[test]
fn var_names_target_variable() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("MY_KEY", &key)
        .args(["--var", "ANTHROPIC_API_KEY", "--from", "env:MY_KEY", "--"])
        .args(check_var_command("ANTHROPIC_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "ANTHROPIC_API_KEY=match", &key);
}

#[test]
fn var_leaves_default_unset() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("MY_KEY", &key)
        .args(["--var", "ANTHROPIC_API_KEY", "--from", "env:MY_KEY", "--"])
        .args(env_has_command("OPENAI_API_KEY"));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=absent", &key);
}

#[test]
fn set_adds_variables() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let org = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", &key)
        .env("MY_ORG", &org)
        .args(["--set", "OPENAI_ORG_ID=env:MY_ORG", "--"])
        .args(check_var_command("OPENAI_ORG_ID", &org));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_ORG_ID=match", &org);
}

#[test]
fn set_with_cmd_source() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .args(["--set", &format!("TOKEN=cmd:printf '%s\\n' {key}"), "--"])
        .args(check_var_command("TOKEN", &key));
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(stdout(&result).trim(), "TOKEN=match");
}

#[test]
fn env_file_relative_to_its_folder() {
    let sandbox = Sandbox::new();
    let key = random_key();
    sandbox.write("deploy/openai.key", key.as_bytes(), 0o600);
    let env_file = sandbox.write(
        "deploy/app.env",
        b"# the key\nexport OPENAI_API_KEY=\"file:openai.key\" # beside this file\n",
        0o600,
    );
    let mut command = sandbox.keyrun();
    command
        .arg("--env-file")
        .arg(&env_file)
        .arg("--")
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
}

#[test]
fn default_profile_chosen() {
    let sandbox = Sandbox::new();
    let key = random_key();
    sandbox.write("home/openai.key", key.as_bytes(), 0o600);
    sandbox.write(
        "config/keyrun/config.toml",
        b"default_profile = \"dev\"\n\n[profiles.dev]\nenv.OPENAI_API_KEY = \"file:~/openai.key\"\n",
        0o600,
    );
    let mut command = sandbox.keyrun();
    command
        .arg("--")
        .args(check_var_command("OPENAI_API_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "OPENAI_API_KEY=match", &key);
}

#[test]
fn profile_flag_chosen() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let config = sandbox.write("keyrun.conf", TWO_PROFILES, 0o600);
    let mut command = sandbox.keyrun();
    command
        .env("DEV", random_key())
        .env("CI_KEY", &key)
        .arg("--config")
        .arg(&config)
        .args(["--profile", "ci", "--"])
        .args(check_var_command("A", &key));
    let result = output(&mut command);
    assert_ran(&result, "A=match", &key);
}

#[test]
fn keyrun_profile_chosen() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let config = sandbox.write("keyrun.conf", TWO_PROFILES, 0o600);
    let mut command = sandbox.keyrun();
    command
        .env("DEV", random_key())
        .env("CI_KEY", &key)
        .env("KEYRUN_PROFILE", "ci")
        .env("KEYRUN_CONFIG", &config)
        .arg("--")
        .args(check_var_command("A", &key));
    let result = output(&mut command);
    assert_ran(&result, "A=match", &key);
}

#[test]
fn profile_flag_beats_keyrun_profile() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let config = sandbox.write("keyrun.conf", TWO_PROFILES, 0o600);
    let mut command = sandbox.keyrun();
    command
        .env("DEV", &key)
        .env("CI_KEY", random_key())
        .env("KEYRUN_PROFILE", "ci")
        .arg("--config")
        .arg(&config)
        .args(["--profile", "dev", "--"])
        .args(check_var_command("A", &key));
    let result = output(&mut command);
    assert_ran(&result, "A=match", &key);
}

/// A sandbox whose configuration and env file each set `A`, from `PROFILE_A`
/// and `FILE_A`, and whose profile also sets `KEPT` from `PROFILE_KEPT`.
fn merge_setup() -> (Sandbox, std::path::PathBuf, std::path::PathBuf) {
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "keyrun.conf",
        b"default_profile = \"dev\"\n\n[profiles.dev]\nenv.A = \"env:PROFILE_A\"\nenv.KEPT = \"env:PROFILE_KEPT\"\n",
        0o600,
    );
    let env_file = sandbox.write("app.env", b"A=env:FILE_A\n", 0o600);
    (sandbox, config, env_file)
}

#[test]
fn env_file_beats_profile() {
    let (sandbox, config, env_file) = merge_setup();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("PROFILE_A", random_key())
        .env("PROFILE_KEPT", random_key())
        .env("FILE_A", &key)
        .arg("--config")
        .arg(&config)
        .arg("--env-file")
        .arg(&env_file)
        .arg("--")
        .args(check_var_command("A", &key));
    let result = output(&mut command);
    assert_ran(&result, "A=match", &key);
}

#[test]
fn from_beats_env_file() {
    let (sandbox, config, env_file) = merge_setup();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("PROFILE_A", random_key())
        .env("PROFILE_KEPT", random_key())
        .env("FILE_A", random_key())
        .env("FROM_A", &key)
        .arg("--config")
        .arg(&config)
        .arg("--env-file")
        .arg(&env_file)
        .args(["--var", "A", "--from", "env:FROM_A", "--"])
        .args(check_var_command("A", &key));
    let result = output(&mut command);
    assert_ran(&result, "A=match", &key);
}

#[test]
fn set_beats_from() {
    let (sandbox, config, env_file) = merge_setup();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("PROFILE_A", random_key())
        .env("PROFILE_KEPT", random_key())
        .env("FILE_A", random_key())
        .env("FROM_A", random_key())
        .env("SET_A", &key)
        .arg("--config")
        .arg(&config)
        .arg("--env-file")
        .arg(&env_file)
        .args(["--set", "A=env:SET_A", "--var", "A", "--from", "env:FROM_A"])
        .arg("--")
        .args(check_var_command("A", &key));
    let result = output(&mut command);
    assert_ran(&result, "A=match", &key);
}

#[test]
fn merge_keeps_other_profile_variables() {
    let (sandbox, config, env_file) = merge_setup();
    let kept = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("PROFILE_A", random_key())
        .env("PROFILE_KEPT", &kept)
        .env("FILE_A", random_key())
        .env("SET_A", random_key())
        .arg("--config")
        .arg(&config)
        .arg("--env-file")
        .arg(&env_file)
        .args(["--set", "A=env:SET_A", "--"])
        .args(check_var_command("KEPT", &kept));
    let result = output(&mut command);
    assert_ran(&result, "KEPT=match", &kept);
}

// The child's environment.

#[test]
fn unset_removes_variable() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", &key)
        .env("SOME_TOKEN", random_key())
        .args(["--unset", "SOME_TOKEN", "--"])
        .args(env_has_command("SOME_TOKEN"));
    let result = output(&mut command);
    assert_ran(&result, "SOME_TOKEN=absent", &key);
}

#[test]
fn unset_of_injected_variable_rejected() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", &key)
        .args(["--unset", "OPENAI_API_KEY", "--", "true"]);
    let result = output(&mut command);
    assert_failed_clean(&result, &key);
    let message = stderr(&result);
    assert!(message.contains("--unset"), "{message}");
    assert!(
        message.contains("OPENAI_API_KEY is also a variable this run injects"),
        "{message}"
    );
}

#[test]
fn profile_unset_of_injected_variable_rejected() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let config = sandbox.write(
        "keyrun.conf",
        b"[profiles.dev]\nenv.OPENAI_API_KEY = \"env:DEV_KEY\"\nunset = [\"OPENAI_API_KEY\"]\n",
        0o600,
    );
    for check in [false, true] {
        let mut command = sandbox.keyrun();
        command.env("DEV_KEY", &key);
        if check {
            command.arg("check");
        }
        command
            .arg("--config")
            .arg(&config)
            .args(["--profile", "dev"]);
        if !check {
            command.args(["--", "true"]);
        }
        let result = output(&mut command);
        assert_failed_clean(&result, &key);
        let message = stderr(&result);
        assert!(message.contains("profile dev: unset"), "{message}");
        assert!(message.contains("OPENAI_API_KEY is also"), "{message}");
    }
}

#[test]
fn unset_invalid_name_rejected() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", &key)
        .args(["--unset", "A=B", "--", "true"]);
    let result = output(&mut command);
    assert_failed_clean(&result, &key);
    let message = stderr(&result);
    assert!(message.contains("not a valid variable name"), "{message}");
    assert!(
        !message.contains("A=B"),
        "the argument was echoed: {message}"
    );
}

#[test]
fn profile_unset_removes_variable() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let config = sandbox.write(
        "keyrun.conf",
        b"[profiles.dev]\nenv.OPENAI_API_KEY = \"env:DEV_KEY\"\nunset = [\"SOME_TOKEN\"]\n",
        0o600,
    );
    let mut command = sandbox.keyrun();
    command
        .env("DEV_KEY", &key)
        .env("SOME_TOKEN", random_key())
        .arg("--config")
        .arg(&config)
        .args(["--profile", "dev", "--"])
        .args(env_has_command("SOME_TOKEN"));
    let result = output(&mut command);
    assert_ran(&result, "SOME_TOKEN=absent", &key);
}

/// Runs `env` under keyrun with `--clean-env` and returns the names the
/// child sees.
fn clean_env_names(sandbox: &Sandbox, key: &str) -> Vec<String> {
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", key)
        .env("EXTRA_SETTING", "1")
        .env("LC_ALL", "C")
        .env("TERM", "dumb")
        .args(["--clean-env", "--", "env"]);
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    stdout(&result)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, _)| name.to_string())
        .collect()
}

#[test]
fn clean_env_drops_other_variables() {
    let sandbox = Sandbox::new();
    let names = clean_env_names(&sandbox, &random_key());
    assert!(!names.contains(&"EXTRA_SETTING".to_string()), "{names:?}");
    assert!(!names.contains(&"XDG_STATE_HOME".to_string()), "{names:?}");
}

#[test]
fn clean_env_keeps_minimal_set() {
    let sandbox = Sandbox::new();
    let names = clean_env_names(&sandbox, &random_key());
    for kept in ["PATH", "HOME", "LC_ALL", "TERM", "OPENAI_API_KEY"] {
        assert!(
            names.contains(&kept.to_string()),
            "{kept} missing: {names:?}"
        );
    }
}

#[test]
fn env_source_variable_not_forwarded() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("MY_KEY", &key)
        .args(["--from", "env:MY_KEY", "--"])
        .args(env_has_command("MY_KEY"));
    let result = output(&mut command);
    assert_ran(&result, "MY_KEY=absent", &key);
}

#[test]
fn keep_backend_env_still_drops_env_source() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("MY_KEY", &key)
        .args(["--keep-backend-env", "--from", "env:MY_KEY", "--"])
        .args(env_has_command("MY_KEY"));
    let result = output(&mut command);
    assert_ran(&result, "MY_KEY=absent", &key);
}

#[test]
fn env_source_kept_when_also_injected() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("MY_KEY", &key)
        .args(["--from", "env:MY_KEY", "--set", "MY_KEY=env:MY_KEY", "--"])
        .args(check_var_command("MY_KEY", &key));
    let result = output(&mut command);
    assert_ran(&result, "MY_KEY=match", &key);
}

// Exit statuses.

#[test]
fn child_exit_code_returned() {
    let sandbox = Sandbox::new();
    let result = output(
        sandbox
            .keyrun()
            .env("OPENAI_API_KEY", random_key())
            .args(["--", "sh", "-c", "exit 7"]),
    );
    assert_eq!(result.status.code(), Some(7));
}

#[test]
fn child_exit_code_2_not_usage() {
    let sandbox = Sandbox::new();
    let result = output(
        sandbox
            .keyrun()
            .env("OPENAI_API_KEY", random_key())
            .args(["--", "sh", "-c", "exit 2"]),
    );
    assert_eq!(result.status.code(), Some(2));
    assert_eq!(stderr(&result), "");
}

#[test]
fn command_not_found_exits_127() {
    let sandbox = Sandbox::new();
    let result = output(
        sandbox
            .keyrun()
            .env("OPENAI_API_KEY", random_key())
            .args(["--", "keyrun-test-no-such-program"]),
    );
    assert_eq!(result.status.code(), Some(127));
    let message = stderr(&result);
    assert!(message.contains("command not found"), "{message}");
}

#[test]
fn command_not_executable_exits_126() {
    let sandbox = Sandbox::new();
    let script = sandbox.write("script", b"#!/bin/sh\ntrue\n", 0o600);
    let result = output(
        sandbox
            .keyrun()
            .env("OPENAI_API_KEY", random_key())
            .arg("--")
            .arg(&script),
    );
    assert_eq!(result.status.code(), Some(126));
    let message = stderr(&result);
    assert!(message.contains("cannot execute"), "{message}");
}

// Subcommands and flags that print.

#[test]
fn completions_bash_prints_script() {
    let sandbox = Sandbox::new();
    let result = output(sandbox.keyrun().args(["completions", "bash"]));
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let script = stdout(&result);
    assert!(script.contains("_keyrun()"), "{script}");
    assert!(script.contains("--env-file"), "{script}");
    assert!(script.contains("complete -F _keyrun"), "{script}");
}

#[test]
fn version_printed() {
    let sandbox = Sandbox::new();
    let result = output(sandbox.keyrun().arg("--version"));
    assert_eq!(result.status.code(), Some(0));
    assert_eq!(
        stdout(&result).trim(),
        format!("keyrun {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn verbose_logs_without_value() {
    let sandbox = Sandbox::new();
    let key = random_key();
    let mut command = sandbox.keyrun();
    command
        .env("OPENAI_API_KEY", &key)
        .args(["-vv", "--", "true"]);
    let result = output(&mut command);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_not_leaked(&result.stderr, &key, "stderr");
    let log = stderr(&result);
    assert!(log.contains("resolved"), "{log}");
    assert!(log.contains("child started"), "{log}");
}
