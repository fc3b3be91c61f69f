//! The memory scan: reads every readable mapping of a running keyrun
//! through `/proc/<pid>/mem` and looks for a value. Needs root (keyrun is
//! non-dumpable) and Linux.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::process::{Child, Stdio};

use super::random_key;

/// Reads every readable mapping of `pid`; returns (bytes read, whether
/// each needle was found).
pub fn scan_memory(pid: u32, needles: &[&[u8]]) -> (usize, Vec<bool>) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps");
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem"))
        .expect("open /proc/PID/mem (the test needs root)");
    let mut found = vec![false; needles.len()];
    let mut total = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut region = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() {
            continue;
        }
        let Ok(read) = mem.read(&mut region) else {
            continue;
        };
        total += read;
        for (index, needle) in needles.iter().enumerate() {
            if super::memchr_find(&region[..read], needle).is_some() {
                found[index] = true;
            }
        }
    }
    (total, found)
}

/// Starts keyrun with the given arguments and a child that reports ready and
/// sleeps, waits for the ready line, and returns the running keyrun.
pub fn start_waiting(
    mut command: std::process::Command,
    marker: &str,
) -> (Child, BufReader<std::process::ChildStdout>) {
    command.args(["--", "sh", "-c", "echo ready; exec sleep 30", marker]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("start keyrun");
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    if line.trim() != "ready" {
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        panic!("the child did not start: {err}");
    }
    (child, reader)
}

/// Checks that the value is nowhere in keyrun's memory while its child
/// runs, and that the scan does find a marker keyrun does hold (the child's
/// argv), so a scan that reads nothing cannot pass.
pub fn assert_value_absent(command: std::process::Command, value: &str) {
    let marker = format!("marker-{}", &random_key()[8..]);
    let (mut keyrun, _stdout) = start_waiting(command, &marker);
    let (bytes, found) = scan_memory(keyrun.id(), &[value.as_bytes(), marker.as_bytes()]);

    let _ = nix_kill(keyrun.id());
    let _ = keyrun.wait();

    assert!(
        bytes > 100_000,
        "the scan read only {bytes} bytes of keyrun's memory"
    );
    assert!(found[1], "the scan did not find the marker it must find");
    assert!(!found[0], "the injected value is still in keyrun's memory");
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()?;
    assert!(status.success());
    Ok(())
}
