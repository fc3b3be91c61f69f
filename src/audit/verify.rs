//! `keyrun audit verify`: walks the chain of `seq` and `prev` and reports
//! the first record that was edited, removed or moved.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde::Deserialize;

use super::{hash_line, GENESIS};

/// The fields of a record that `verify` and `report` read. Unknown fields
/// are ignored, so older and newer records read alike.
#[derive(Debug, Default, Deserialize)]
pub struct Entry {
    pub time: Option<String>,
    pub event: Option<String>,
    pub seq: Option<u64>,
    pub prev: Option<String>,
    pub host: Option<String>,
    pub profile: Option<String>,
    pub var: Option<String>,
    pub reference: Option<String>,
    pub fingerprint: Option<String>,
    pub argv0: Option<String>,
}

/// The result of a walk over the chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every record links to the one before it.
    Intact { records: usize },
    /// The first break: its 1-based line and what it shows.
    Broken { line: usize, problem: String },
}

/// Splits a log into its lines, without their line breaks.
pub fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if body.is_empty() {
        return Vec::new();
    }
    body.split(|&b| b == b'\n').collect()
}

/// Reads the log at `path` and verifies its chain.
pub fn verify_file(path: &Path) -> Result<Verdict> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the audit log {}", path.display()))?;
    Ok(verify(&bytes))
}

/// Verifies a log's chain: each line is a record, each `seq` is one more
/// than the line before's, and each `prev` is the SHA-256 of the line
/// before (the first line's, [`GENESIS`]).
pub fn verify(bytes: &[u8]) -> Verdict {
    let lines = lines(bytes);
    let mut seqs: Vec<u64> = Vec::with_capacity(lines.len());

    for (index, line) in lines.iter().enumerate() {
        let number = index + 1;
        let entry: Entry = match serde_json::from_slice(line) {
            Ok(entry) => entry,
            Err(err) => {
                return Verdict::Broken {
                    line: number,
                    problem: format!(
                        "line {number} is not a JSON record ({err}): it was edited or cut short"
                    ),
                }
            }
        };
        let (Some(seq), Some(prev)) = (entry.seq, entry.prev) else {
            return Verdict::Broken {
                line: number,
                problem: format!("line {number} has no seq or prev field: it was edited"),
            };
        };
        seqs.push(seq);

        let expected_seq = match index {
            0 => 1,
            _ => seqs[index - 1] + 1,
        };
        if seq > expected_seq {
            return Verdict::Broken {
                line: number,
                problem: gap(&lines, index, expected_seq, seq),
            };
        }
        if seq < expected_seq {
            return Verdict::Broken {
                line: number,
                problem: format!(
                    "line {number} (seq {seq}) is out of order: it comes after seq {}; records were reordered",
                    expected_seq - 1
                ),
            };
        }

        let expected_prev = match index {
            0 => GENESIS.to_string(),
            _ => hash_line(lines[index - 1]),
        };
        if prev != expected_prev {
            let problem = match index {
                0 => "line 1 (seq 1) was edited: its prev is not the start of a chain".to_string(),
                _ => format!(
                    "line {index} (seq {}) was edited: its SHA-256 no longer matches the prev of line {number}",
                    expected_seq - 1
                ),
            };
            return Verdict::Broken {
                line: number.max(2) - 1,
                problem,
            };
        }
    }
    Verdict::Intact {
        records: lines.len(),
    }
}

/// Describes a jump in `seq` at line `index + 1`: records moved, when a
/// missing `seq` appears later in the file, or records removed otherwise.
fn gap(lines: &[&[u8]], index: usize, expected: u64, found: u64) -> String {
    let number = index + 1;
    let later = lines[index + 1..]
        .iter()
        .enumerate()
        .find_map(|(offset, line)| {
            let entry: Entry = serde_json::from_slice(line).ok()?;
            let seq = entry.seq?;
            (expected..found)
                .contains(&seq)
                .then_some((index + 2 + offset, seq))
        });
    match later {
        Some((at, seq)) => format!(
            "line {number} (seq {found}) is out of order: seq {seq} comes later, at line {at}; records were reordered"
        ),
        None if expected + 1 == found => format!(
            "the record with seq {expected} was removed before line {number} (seq {found})"
        ),
        None => format!(
            "the records with seq {expected} to {} were removed before line {number} (seq {found})",
            found - 1
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a valid chain of `count` records.
    fn chain(count: u64) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for seq in 1..=count {
            let prev = match lines.last() {
                Some(line) => hash_line(line.as_bytes()),
                None => GENESIS.to_string(),
            };
            lines.push(format!(
                r#"{{"event":"child.started","seq":{seq},"prev":"{prev}"}}"#
            ));
        }
        lines
    }

    fn join(lines: &[String]) -> Vec<u8> {
        let mut text = lines.join("\n");
        text.push('\n');
        text.into_bytes()
    }

    #[test]
    fn intact_chain_passes() {
        assert_eq!(verify(&join(&chain(5))), Verdict::Intact { records: 5 });
    }

    #[test]
    fn empty_log_passes() {
        assert_eq!(verify(b""), Verdict::Intact { records: 0 });
    }

    #[test]
    fn edited_line_is_named() {
        let mut lines = chain(5);
        lines[2] = lines[2].replace("child.started", "child.exited");
        let Verdict::Broken { line, problem } = verify(&join(&lines)) else {
            panic!("an edit passed");
        };
        assert_eq!(line, 3);
        assert!(problem.contains("edited"), "{problem}");
    }

    #[test]
    fn removed_line_is_named() {
        let mut lines = chain(5);
        lines.remove(1);
        let Verdict::Broken { line, problem } = verify(&join(&lines)) else {
            panic!("a removal passed");
        };
        assert_eq!(line, 2);
        assert!(problem.contains("seq 2 was removed"), "{problem}");
    }

    #[test]
    fn swapped_lines_are_named() {
        let mut lines = chain(5);
        lines.swap(1, 2);
        let Verdict::Broken { line, problem } = verify(&join(&lines)) else {
            panic!("a swap passed");
        };
        assert_eq!(line, 2);
        assert!(problem.contains("reordered"), "{problem}");
    }

    #[test]
    fn removed_first_line_is_named() {
        let mut lines = chain(3);
        lines.remove(0);
        let Verdict::Broken { line, .. } = verify(&join(&lines)) else {
            panic!("a removal passed");
        };
        assert_eq!(line, 1);
    }
}
