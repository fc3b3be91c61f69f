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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("reference {0:?} has no scheme; write SCHEME:REST, for example env:OPENAI_API_KEY or file:~/.config/keyrun/openai.key")]
    NoScheme(String),
    #[error("reference {text:?} has the unknown scheme {scheme:?}; known schemes: {}", SCHEMES.join(", "))]
    UnknownScheme { text: String, scheme: String },
    #[error("reference {0:?} names nothing after the scheme")]
    EmptyRest(String),
    #[error("reference {text:?} has an invalid option {option:?}; write options as ?name=value&name=value")]
    BadOption { text: String, option: String },
    #[error("reference {text:?} repeats the option {name:?}")]
    RepeatedOption { text: String, name: String },
    #[error("reference {text:?} is not valid percent-encoded UTF-8 in {part}")]
    BadEncoding { text: String, part: &'static str },
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let Some((scheme, after)) = text.split_once(':') else {
            return Err(ReferenceError::NoScheme(text.to_string()));
        };
        if !SCHEMES.contains(&scheme) {
            return Err(ReferenceError::UnknownScheme {
                text: text.to_string(),
                scheme: scheme.to_string(),
            });
        }

        if scheme == "cmd" {
            if after.trim().is_empty() {
                return Err(ReferenceError::EmptyRest(text.to_string()));
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
            Some((head, field)) => (head, Some(decode(text, field, "the field")?)),
            None => (after, None),
        };
        let (rest, query) = match before_field.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (before_field, None),
        };
        let rest = decode(text, rest, "the name")?;
        if rest.is_empty() {
            return Err(ReferenceError::EmptyRest(text.to_string()));
        }

        let mut options: Vec<(String, String)> = Vec::new();
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let Some((name, value)) = pair.split_once('=') else {
                return Err(ReferenceError::BadOption {
                    text: text.to_string(),
                    option: pair.to_string(),
                });
            };
            let name = decode(text, name, "an option name")?;
            if name.is_empty() {
                return Err(ReferenceError::BadOption {
                    text: text.to_string(),
                    option: pair.to_string(),
                });
            }
            if options.iter().any(|(seen, _)| *seen == name) {
                return Err(ReferenceError::RepeatedOption {
                    text: text.to_string(),
                    name,
                });
            }
            options.push((name, decode(text, value, "an option value")?));
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

fn decode(text: &str, part: &str, what: &'static str) -> Result<String, ReferenceError> {
    percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ReferenceError::BadEncoding {
            text: text.to_string(),
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
    fn rejects_missing_scheme_and_empty_rest() {
        assert!(matches!(
            Reference::parse("OPENAI_API_KEY"),
            Err(ReferenceError::NoScheme(_))
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
