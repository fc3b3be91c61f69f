//! References: where a value comes from, as one string in URL order,
//! `SCHEME:REST[?OPTIONS][#FIELD]`.
//!
//! `?`, `#` and `%` inside REST, option values and the field are written
//! percent-encoded. `cmd:` is the exception: its rest is a command line taken
//! verbatim, so a `#` or `?` in it stays part of the command.

use std::fmt;

use percent_encoding::percent_decode_str;

/// The schemes keyrun knows, in the order error messages list them.
pub const SCHEMES: [&str; 7] = [
    "env", "file", "cmd", "aws-sm", "vault", "azure-kv", "keyring",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub scheme: String,
    /// REST, percent-decoded (verbatim for `cmd:`).
    pub rest: String,
    /// Options in the order written, names and values percent-decoded.
    pub options: Vec<(String, String)>,
    pub field: Option<String>,
    /// The reference as written, for messages.
    pub text: String,
}

/// The reason a reference is invalid. No variant carries the reference's
/// text, because an invalid reference is often a value pasted in its place
/// (a key, or a URL with a password). Messages name where it was written
/// and, when it looks like one, its scheme.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("the reference has no scheme; write SCHEME:REST, for example env:OPENAI_API_KEY or file:~/.config/keyrun/openai.key (a value written in place of a reference is not shown)")]
    NoScheme,
    #[error("the reference has {}; known schemes: {}", describe_scheme(.0), SCHEMES.join(", "))]
    UnknownScheme(Option<String>),
    #[error("the {0}: reference names nothing after the scheme")]
    EmptyRest(String),
    #[error("the {scheme}: reference has an invalid option (option {position}); write options as ?name=value&name=value")]
    BadOption { scheme: String, position: usize },
    #[error("the {scheme}: reference repeats the option {name}")]
    RepeatedOption { scheme: String, name: String },
    #[error("the {scheme}: reference is not valid percent-encoded UTF-8 in {part}")]
    BadEncoding { scheme: String, part: &'static str },
}

fn describe_scheme(scheme: &Option<String>) -> String {
    match scheme {
        Some(name) => format!("the unknown scheme {name:?}"),
        None => "an invalid scheme (not shown, since it may be part of a value)".to_string(),
    }
}

/// The text before `:` when it has the shape of a scheme (a short run of
/// lowercase letters, digits, `+`, `-` and `.`, and not an OpenAI key
/// prefix), so that a message may show it without showing a value that
/// merely contains a colon.
fn scheme_shape(text: &str) -> Option<String> {
    let shaped = !text.is_empty()
        && text.len() <= 12
        && !text.starts_with("sk-")
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    shaped.then(|| text.to_string())
}

/// Tells whether an option name may appear in a message: a short
/// identifier.
fn is_option_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let Some((scheme, after)) = text.split_once(':') else {
            return Err(ReferenceError::NoScheme);
        };
        if !SCHEMES.contains(&scheme) {
            return Err(ReferenceError::UnknownScheme(scheme_shape(scheme)));
        }
        let empty_rest = || ReferenceError::EmptyRest(scheme.to_string());

        if scheme == "cmd" {
            if after.trim().is_empty() {
                return Err(empty_rest());
            }
            return Ok(Reference {
                scheme: scheme.to_string(),
                rest: after.to_string(),
                options: Vec::new(),
                field: None,
                text: text.to_string(),
            });
        }

        let (before_field, field) = match after.split_once('#') {
            Some((head, field)) => (head, Some(decode(scheme, field, "the field")?)),
            None => (after, None),
        };
        let (rest, query) = match before_field.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (before_field, None),
        };
        let rest = decode(scheme, rest, "the name")?;
        if rest.is_empty() {
            return Err(empty_rest());
        }

        let mut options: Vec<(String, String)> = Vec::new();
        let pairs = query.into_iter().flat_map(|q| q.split('&'));
        for (index, pair) in pairs.filter(|p| !p.is_empty()).enumerate() {
            let bad_option = || ReferenceError::BadOption {
                scheme: scheme.to_string(),
                position: index + 1,
            };
            let Some((name, value)) = pair.split_once('=') else {
                return Err(bad_option());
            };
            let name = decode(scheme, name, "an option name")?;
            if !is_option_name(&name) {
                return Err(bad_option());
            }
            if options.iter().any(|(seen, _)| *seen == name) {
                return Err(ReferenceError::RepeatedOption {
                    scheme: scheme.to_string(),
                    name,
                });
            }
            options.push((name, decode(scheme, value, "an option value")?));
        }

        Ok(Reference {
            scheme: scheme.to_string(),
            rest,
            options,
            field: field.filter(|f| !f.is_empty()),
            text: text.to_string(),
        })
    }

    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn decode(scheme: &str, part: &str, what: &'static str) -> Result<String, ReferenceError> {
    percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ReferenceError::BadEncoding {
            scheme: scheme.to_string(),
            part: what,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scheme_rest_options_field() {
        let r = Reference::parse(
            "aws-sm:prod/openai?region=eu-west-1&version_stage=AWSPREVIOUS#api_key",
        )
        .unwrap();
        assert_eq!(r.scheme, "aws-sm");
        assert_eq!(r.rest, "prod/openai");
        assert_eq!(r.option("region"), Some("eu-west-1"));
        assert_eq!(r.option("version_stage"), Some("AWSPREVIOUS"));
        assert_eq!(r.field.as_deref(), Some("api_key"));
    }

    #[test]
    fn decodes_percent_escapes() {
        let r = Reference::parse("file:/tmp/a%23b%3Fc%25d#x%20y").unwrap();
        assert_eq!(r.rest, "/tmp/a#b?c%d");
        assert_eq!(r.field.as_deref(), Some("x y"));
    }

    #[test]
    fn cmd_rest_is_verbatim() {
        let r = Reference::parse("cmd:pass show openai#key?x=1").unwrap();
        assert_eq!(r.rest, "pass show openai#key?x=1");
        assert!(r.options.is_empty());
        assert_eq!(r.field, None);
    }

    #[test]
    fn rejects_unknown_scheme() {
        let err = Reference::parse("s3:bucket/key").unwrap_err();
        assert!(matches!(err, ReferenceError::UnknownScheme { .. }));
        assert!(err.to_string().contains("env, file, cmd"));
    }

    #[test]
    fn errors_never_quote_the_text() {
        let cases = [
            "sk-test-0123456789abcdef",
            "postgres://admin:hunter2pw@127.0.0.1/db",
            "sk-proj-ab:cdefhunter2pw",
            "file:/x?hunter2pw",
            "file:/x?a=1&pw:hunter2pw=1",
            "sk-proj-ab:cdefg",
            "file:/x?hunter2pw%ff=1",
        ];
        for text in cases {
            let err = Reference::parse(text).unwrap_err().to_string();
            assert!(!err.contains("hunter2pw"), "{err}");
            assert!(!err.contains("0123456789abcdef"), "{err}");
            assert!(!err.contains("proj"), "{err}");
        }
        let err = Reference::parse("postgres://admin:pw@h/db").unwrap_err();
        assert!(err.to_string().contains("\"postgres\""), "{err}");
    }

    #[test]
    fn rejects_missing_scheme_and_empty_rest() {
        assert!(matches!(
            Reference::parse("OPENAI_API_KEY"),
            Err(ReferenceError::NoScheme)
        ));
        assert!(matches!(
            Reference::parse("env:"),
            Err(ReferenceError::EmptyRest(_))
        ));
        assert!(matches!(
            Reference::parse("cmd:  "),
            Err(ReferenceError::EmptyRest(_))
        ));
    }

    #[test]
    fn rejects_bad_options() {
        assert!(matches!(
            Reference::parse("file:/x?flag"),
            Err(ReferenceError::BadOption { .. })
        ));
        assert!(matches!(
            Reference::parse("file:/x?a=1&a=2"),
            Err(ReferenceError::RepeatedOption { .. })
        ));
        assert!(matches!(
            Reference::parse("file:/x%ff"),
            Err(ReferenceError::BadEncoding { .. })
        ));
    }
}
