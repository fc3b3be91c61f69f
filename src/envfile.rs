//! `--env-file`: dotenv-syntax files whose values are references, as
//! `op run --env-file` reads them.

use std::path::Path;

use anyhow::{bail, Context as _, Result};

/// One `NAME=REF` entry and the line it came from.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub reference: String,
    pub line: usize,
}

pub fn read(path: &Path) -> Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the env file {}; check the path given to --env-file",
            path.display()
        )
    })?;
    parse(&text).with_context(|| format!("invalid env file {}", path.display()))
}

/// Parses `NAME=REF` lines. Blank lines and `#` comments are skipped, an
/// `export ` prefix is allowed, and a value may be wrapped in single or
/// double quotes; an unquoted value ends at ` #`.
pub fn parse(text: &str) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (index, raw_line) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            bail!("line {line_number}: expected NAME=REF, found no `=`");
        };
        let name = name.trim();
        if !is_variable_name(name) {
            bail!("line {line_number}: {name:?} is not a valid variable name (letters, digits and _, not starting with a digit)");
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
    for quote in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(quote) {
            let Some(end) = inner.rfind(quote) else {
                bail!("the quote {quote} is not closed");
            };
            let after = inner[end + 1..].trim();
            if !after.is_empty() && !after.starts_with('#') {
                bail!("unexpected text after the closing quote");
            }
            return Ok(inner[..end].to_string());
        }
    }
    let value = match value.find(" #") {
        Some(at) => &value[..at],
        None => value,
    };
    Ok(value.trim_end().to_string())
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
}
