//! `--env-file`: dotenv-syntax files whose values are references, as
//! `op run --env-file` reads them.

use std::path::Path;

use anyhow::{bail, Context as _, Result};

use crate::config::{read_text_file, MAX_CONFIG_BYTES};

/// One `NAME=REF` entry and the line it came from.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub reference: String,
    pub line: usize,
}

pub fn read(path: &Path) -> Result<Vec<Entry>> {
    let text = read_text_file(path, MAX_CONFIG_BYTES).with_context(|| {
        format!(
            "cannot read the env file {}; check the path given to --env-file",
            path.display()
        )
    })?;
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => {
            tracing::warn!(
                "{}: ignored the UTF-8 byte order mark at the start; save the file without it to silence this",
                path.display()
            );
            rest
        }
        None => &text,
    };
    parse(text).with_context(|| format!("invalid env file {}", path.display()))
}

/// Parses `NAME=REF` lines. Blank lines and `#` comments are skipped, an
/// `export` prefix is allowed, and a value may be wrapped in single quotes
/// (taken as written) or double quotes (where `\"` and `\\` are escapes);
/// an unquoted value ends at ` #`. Messages name the line and variable but
/// never quote the line, which may hold a value pasted in place of a
/// reference.
pub fn parse(text: &str) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (index, raw_line) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match line.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => line,
        };
        let Some((name, value)) = line.split_once('=') else {
            bail!("line {line_number}: expected NAME=REF, found no `=`");
        };
        let name = name.trim();
        if !is_variable_name(name) {
            bail!("line {line_number}: the variable name is invalid; use letters, digits and _, not starting with a digit");
        }
        let value = unquote(value.trim()).with_context(|| format!("line {line_number}: {name}"))?;
        if value.is_empty() {
            bail!("line {line_number}: {name} has no reference after `=`");
        }
        entries.push(Entry {
            name: name.to_string(),
            reference: value,
            line: line_number,
        });
    }
    Ok(entries)
}

fn unquote(value: &str) -> Result<String> {
    if let Some(inner) = value.strip_prefix('\'') {
        let Some(end) = inner.find('\'') else {
            bail!("the quote ' is not closed");
        };
        check_after_quote(&inner[end + 1..])?;
        return Ok(inner[..end].to_string());
    }
    if let Some(inner) = value.strip_prefix('"') {
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                '"' => {
                    check_after_quote(&inner[at + 1..])?;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, escaped @ ('"' | '\\'))) => out.push(escaped),
                    Some((_, other)) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => break,
                },
                other => out.push(other),
            }
        }
        bail!("the quote \" is not closed");
    }
    let value = match value.find(" #") {
        Some(at) => &value[..at],
        None => value,
    };
    Ok(value.trim_end().to_string())
}

fn check_after_quote(after: &str) -> Result<()> {
    let after = after.trim();
    if !after.is_empty() && !after.starts_with('#') {
        bail!("unexpected text after the closing quote; quote the whole reference once");
    }
    Ok(())
}

pub fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_comments_export_quotes() {
        let entries = parse(
            "# comment\n\nOPENAI_API_KEY=aws-sm:prod/openai#api_key\nexport ORG=\"env:MY_ORG\"\nP='file:/x y' # trailing\nQ=env:Q # note\n",
        )
        .unwrap();
        let pairs: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.reference.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("OPENAI_API_KEY", "aws-sm:prod/openai#api_key"),
                ("ORG", "env:MY_ORG"),
                ("P", "file:/x y"),
                ("Q", "env:Q"),
            ]
        );
        assert_eq!(entries[0].line, 3);
    }

    #[test]
    fn rejects_line_without_equals() {
        let err = parse("A=env:A\nnonsense\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn rejects_bad_name_and_empty_value() {
        assert!(parse("1A=env:A\n").is_err());
        assert!(parse("A B=env:A\n").is_err());
        assert!(parse("A=\n").is_err());
        assert!(parse("A=\"env:A\n").is_err());
    }

    #[test]
    fn export_with_tab_and_escapes() {
        let entries = parse("export\tA=env:A\nB=\"file:/a\\\"b\"\nexported=env:C\n").unwrap();
        assert_eq!(entries[0].name, "A");
        assert_eq!(entries[1].reference, "file:/a\"b");
        assert_eq!(entries[2].name, "exported");
    }

    #[test]
    fn rejects_text_after_closing_quote() {
        assert!(parse("A=\"env:FOO\" \"x\"\n").is_err());
        assert!(parse("A='env:FOO' 'x'\n").is_err());
        assert!(parse("A=\"env:FOO\" # note\n").is_ok());
    }

    #[test]
    fn errors_do_not_quote_the_line() {
        let err = parse("sk-test hunter2pw=env:A\n").unwrap_err();
        assert!(!format!("{err:#}").contains("hunter2pw"), "{err:#}");
    }
}
