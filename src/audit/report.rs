//! `keyrun audit report`: a summary of a log per fingerprint, with flags
//! for a key that spreads to new hosts or sources, and for a key used
//! after a newer one replaced it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::verify::{lines, Entry};

/// The use of one fingerprint, as a log records it.
#[derive(Debug, Serialize)]
pub struct Usage {
    pub fingerprint: String,
    /// The variables it was injected as, as `PROFILE/VAR` or `VAR`.
    pub variables: Vec<String>,
    pub first_use: Option<String>,
    pub last_use: Option<String>,
    pub count: usize,
    pub hosts: Vec<String>,
    pub commands: Vec<String>,
    pub sources: Vec<String>,
    pub flags: Vec<Flag>,
}

/// Something a reviewer should look at.
#[derive(Debug, Serialize)]
pub struct Flag {
    /// `new_host`, `new_source` or `replaced`.
    pub kind: &'static str,
    pub time: Option<String>,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub records: usize,
    /// Lines that are not records. `keyrun audit verify` reports why.
    pub invalid_lines: usize,
    pub fingerprints: Vec<Usage>,
}

pub fn report_file(path: &Path) -> Result<Report> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the audit log {}", path.display()))?;
    Ok(report(&bytes))
}

/// Builds the report. The log's order is taken as the order of use, since
/// records are appended as they happen.
pub fn report(bytes: &[u8]) -> Report {
    let mut usages: Vec<Usage> = Vec::new();
    let mut index_of: BTreeMap<String, usize> = BTreeMap::new();
    // Per variable, its fingerprints in the order they first appeared,
    // with that time.
    let mut history: BTreeMap<String, Vec<(String, Option<String>)>> = BTreeMap::new();
    let mut records = 0;
    let mut invalid_lines = 0;

    for line in lines(bytes) {
        let Ok(entry) = serde_json::from_slice::<Entry>(line) else {
            invalid_lines += 1;
            continue;
        };
        records += 1;
        if entry.event.as_deref() != Some("secret.resolved") {
            continue;
        }
        let Some(fingerprint) = entry.fingerprint.clone() else {
            continue;
        };
        let variable = match (&entry.profile, &entry.var) {
            (Some(profile), Some(var)) => format!("{profile}/{var}"),
            (None, Some(var)) => var.clone(),
            (_, None) => "?".to_string(),
        };

        let index = *index_of.entry(fingerprint.clone()).or_insert_with(|| {
            usages.push(Usage {
                fingerprint: fingerprint.clone(),
                variables: Vec::new(),
                first_use: entry.time.clone(),
                last_use: None,
                count: 0,
                hosts: Vec::new(),
                commands: Vec::new(),
                sources: Vec::new(),
                flags: Vec::new(),
            });
            usages.len() - 1
        });
        let usage = &mut usages[index];
        usage.count += 1;
        usage.last_use = entry.time.clone();
        add_unique(&mut usage.variables, &variable);
        if let Some(command) = &entry.argv0 {
            add_unique(&mut usage.commands, command);
        }
        note_spread(usage, "new_host", "host", entry.host.as_deref(), &entry);
        note_spread(
            usage,
            "new_source",
            "source",
            entry.reference.as_deref(),
            &entry,
        );

        let seen = history.entry(variable.clone()).or_default();
        match seen.iter().position(|(f, _)| *f == fingerprint) {
            None => seen.push((fingerprint.clone(), entry.time.clone())),
            Some(at) => {
                if let Some((newer, since)) = seen.get(at + 1) {
                    note_replaced(usage, &variable, newer, since.as_deref(), &entry);
                }
            }
        }
    }

    Report {
        records,
        invalid_lines,
        fingerprints: usages,
    }
}

fn add_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|known| known == item) {
        list.push(item.to_string());
    }
}

/// Adds `item` to the fingerprint's hosts or sources, and flags it when
/// the fingerprint had been seen from others before.
fn note_spread(
    usage: &mut Usage,
    kind: &'static str,
    noun: &str,
    item: Option<&str>,
    entry: &Entry,
) {
    let Some(item) = item else {
        return;
    };
    let list = match kind {
        "new_host" => &mut usage.hosts,
        _ => &mut usage.sources,
    };
    if list.iter().any(|known| known == item) {
        return;
    }
    let before = list.join(", ");
    list.push(item.to_string());
    if list.len() > 1 {
        usage.flags.push(Flag {
            kind,
            time: entry.time.clone(),
            message: format!(
                "seen from a new {noun} {item} at {}, after only {before}",
                entry.time.as_deref().unwrap_or("an unknown time")
            ),
        });
    }
}

/// Flags a use of an old fingerprint after `newer` replaced it for the
/// same variable; one flag per fingerprint and variable, with a count.
fn note_replaced(
    usage: &mut Usage,
    variable: &str,
    newer: &str,
    since: Option<&str>,
    entry: &Entry,
) {
    let marker = format!("for {variable} after {newer}");
    if let Some(flag) = usage
        .flags
        .iter_mut()
        .find(|f| f.kind == "replaced" && f.message.contains(&marker))
    {
        flag.message = bump_count(&flag.message);
        return;
    }
    usage.flags.push(Flag {
        kind: "replaced",
        time: entry.time.clone(),
        message: format!(
            "used at {} for {variable} after {newer} replaced it at {} (1 use since)",
            entry.time.as_deref().unwrap_or("an unknown time"),
            since.unwrap_or("an unknown time")
        ),
    });
}

/// Raises the `(N use since)` count at the end of a flag's message.
fn bump_count(message: &str) -> String {
    let Some(open) = message.rfind('(') else {
        return message.to_string();
    };
    let count: usize = message[open + 1..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    format!("{}({} uses since)", &message[..open], count + 1)
}

/// Renders the report as text for a terminal.
pub fn render(report: &Report) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{} records, {} fingerprints{}",
        report.records,
        report.fingerprints.len(),
        match report.invalid_lines {
            0 => String::new(),
            n => format!(", {n} lines that are not records (run `keyrun audit verify`)"),
        }
    );
    for usage in &report.fingerprints {
        let _ = writeln!(text);
        let _ = writeln!(
            text,
            "fingerprint {} ({})",
            usage.fingerprint,
            usage.variables.join(", ")
        );
        let unknown = "unknown";
        let _ = writeln!(
            text,
            "  first use  {}",
            usage.first_use.as_deref().unwrap_or(unknown)
        );
        let _ = writeln!(
            text,
            "  last use   {}",
            usage.last_use.as_deref().unwrap_or(unknown)
        );
        let _ = writeln!(text, "  uses       {}", usage.count);
        let _ = writeln!(text, "  hosts      {}", usage.hosts.join(", "));
        let _ = writeln!(text, "  commands   {}", usage.commands.join(", "));
        let _ = writeln!(text, "  sources    {}", usage.sources.join(", "));
        for flag in &usage.flags {
            let _ = writeln!(text, "  ! {}: {}", flag.kind, flag.message);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(time: &str, host: &str, var: &str, fingerprint: &str, reference: &str) -> String {
        format!(
            r#"{{"time":"{time}","event":"secret.resolved","host":"{host}","var":"{var}","reference":"{reference}","fingerprint":"{fingerprint}","argv0":"python"}}"#
        )
    }

    #[test]
    fn replaced_fingerprint_is_flagged() {
        let log = [
            record("t1", "h", "K", "aaa", "file:/k"),
            record("t2", "h", "K", "bbb", "file:/k"),
            record("t3", "h", "K", "aaa", "file:/k"),
            record("t4", "h", "K", "aaa", "file:/k"),
        ]
        .join("\n");
        let report = report(log.as_bytes());
        let old = &report.fingerprints[0];
        assert_eq!(old.count, 3);
        assert_eq!(old.flags.len(), 1);
        assert_eq!(old.flags[0].kind, "replaced");
        assert!(
            old.flags[0].message.contains("2 uses since"),
            "{}",
            old.flags[0].message
        );
        assert!(report.fingerprints[1].flags.is_empty());
    }

    #[test]
    fn new_host_is_flagged() {
        let log = [
            record("t1", "a", "K", "aaa", "file:/k"),
            record("t2", "a", "K", "aaa", "file:/k"),
            record("t3", "b", "K", "aaa", "file:/k"),
        ]
        .join("\n");
        let report = report(log.as_bytes());
        let usage = &report.fingerprints[0];
        assert_eq!(usage.hosts, vec!["a", "b"]);
        assert_eq!(usage.flags.len(), 1);
        assert_eq!(usage.flags[0].kind, "new_host");
        assert_eq!(usage.flags[0].time.as_deref(), Some("t3"));
    }
}
