//! The secret value type and the checks every value passes before injection.

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A secret value. Its bytes are zeroed on drop, and `Debug` prints a
/// placeholder, so a value cannot reach a log through `{:?}`.
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Returns a copy of the value in a new zeroizing buffer.
    pub fn duplicate(&self) -> Secret {
        let mut bytes = Vec::with_capacity(self.0.len());
        bytes.extend_from_slice(&self.0);
        Secret::new(bytes)
    }

    /// The first 12 hex digits of the value's SHA-256: enough to tell keys
    /// apart in an audit log, far too little to recover one.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.expose());
        let mut text = String::with_capacity(12);
        for byte in &digest[..6] {
            text.push_str(&format!("{byte:02x}"));
        }
        text
    }

    /// Removes one final line break (`\n` or `\r\n`), which files and
    /// command output end with by convention, so it draws no warning.
    pub fn strip_final_newline(&mut self) {
        if self.0.ends_with(b"\r\n") {
            self.strip(0, 2);
        } else if self.0.ends_with(b"\n") {
            self.strip(0, 1);
        }
    }

    /// Removes `count` bytes at the front and `tail` bytes at the end, in
    /// place.
    fn strip(&mut self, count: usize, tail: usize) {
        let len = self.0.len();
        self.0.truncate(len - tail);
        self.0.drain(..count);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// Why a value was rejected. None of the variants carries the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("the value is empty")]
    Empty,
    #[error("the value contains whitespace at byte {0}; API keys are one word (mark the variable `raw = true` if it really is a PEM key, JSON or a DSN)")]
    InnerWhitespace(usize),
    #[error("the value contains a control character at byte {0} (mark the variable `raw = true` if that is intended)")]
    ControlCharacter(usize),
    #[error("the value contains a NUL byte at byte {0}, which no environment variable can carry")]
    Nul(usize),
    #[error("the value is not valid UTF-8 at byte {0}; API keys are ASCII, so check the file's encoding (mark the variable `raw = true` if the bytes are intended)")]
    InvalidUtf8(usize),
    #[error("the value contains the invisible character U+{code:04X} at byte {at}, often pasted from a web page or chat; retype or re-copy the key")]
    Invisible { code: u32, at: usize },
}

/// What [`normalize`] changed, for the warning that names the fix.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub whitespace: bool,
    pub quotes: bool,
    /// A UTF-8 byte order mark at the start, which some Windows editors
    /// write.
    pub bom: bool,
}

impl Trimmed {
    pub fn any(&self) -> bool {
        self.whitespace || self.quotes || self.bom
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.bom {
            parts.push("a leading UTF-8 byte order mark");
        }
        if self.whitespace {
            parts.push("surrounding whitespace");
        }
        if self.quotes {
            parts.push("surrounding quotes");
        }
        match parts.len() {
            0 => "nothing".to_string(),
            1 => parts[0].to_string(),
            n => format!("{} and {}", parts[..n - 1].join(", "), parts[n - 1]),
        }
    }
}

const BOM: &[u8] = b"\xef\xbb\xbf";

/// Trims surrounding whitespace and one pair of surrounding quotes, then
/// rejects values no API key can have. A `raw` value is kept as it is and
/// only a NUL byte rejects it.
pub fn normalize(value: &mut Secret, raw: bool) -> Result<Trimmed, ValueError> {
    if raw {
        if let Some(at) = memchr::memchr(0, value.expose()) {
            return Err(ValueError::Nul(at));
        }
        return Ok(Trimmed::default());
    }

    let mut trimmed = Trimmed::default();
    if value.expose().starts_with(BOM) {
        value.strip(BOM.len(), 0);
        trimmed.bom = true;
    }
    trim_whitespace(value, &mut trimmed);
    let bytes = value.expose();
    if bytes.len() >= 2 {
        let (first, last) = (bytes[0], bytes[bytes.len() - 1]);
        if first == last && (first == b'"' || first == b'\'') {
            value.strip(1, 1);
            trimmed.quotes = true;
            trim_whitespace(value, &mut trimmed);
        }
    }

    let bytes = value.expose();
    if bytes.is_empty() {
        return Err(ValueError::Empty);
    }
    for (at, &byte) in bytes.iter().enumerate() {
        if byte == 0 {
            return Err(ValueError::Nul(at));
        }
        if byte.is_ascii_whitespace() {
            return Err(ValueError::InnerWhitespace(at));
        }
        if byte.is_ascii_control() || byte == 0x7f {
            return Err(ValueError::ControlCharacter(at));
        }
    }
    check_characters(bytes)?;
    Ok(trimmed)
}

/// Rejects bytes that are not UTF-8, and characters that look like nothing
/// or like a space: Unicode whitespace beyond ASCII (such as U+00A0) and
/// the zero-width and direction format characters.
fn check_characters(bytes: &[u8]) -> Result<(), ValueError> {
    let text =
        std::str::from_utf8(bytes).map_err(|err| ValueError::InvalidUtf8(err.valid_up_to()))?;
    for (at, c) in text.char_indices() {
        let invisible = matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        );
        if !c.is_ascii() && (c.is_whitespace() || invisible) {
            return Err(ValueError::Invisible {
                code: u32::from(c),
                at,
            });
        }
    }
    Ok(())
}

/// Tells whether a value starts like a dotenv line, `NAME=...` with an
/// upper-case name that has an underscore (or `export `), which means a
/// whole `.env` line was stored instead of the bare key. Base64 padding
/// (`...==` at the end) does not match.
pub fn looks_like_assignment(value: &Secret) -> bool {
    let bytes = value.expose();
    if bytes.starts_with(b"export ") {
        return true;
    }
    let Some(equals) = memchr::memchr(b'=', bytes) else {
        return false;
    };
    let name = &bytes[..equals];
    name.len() >= 2
        && name[0].is_ascii_uppercase()
        && name.contains(&b'_')
        && name
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
        && equals + 1 < bytes.len()
}

fn trim_whitespace(value: &mut Secret, trimmed: &mut Trimmed) {
    let bytes = value.expose();
    let head = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let tail = if head == bytes.len() {
        0
    } else {
        bytes
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_whitespace())
            .count()
    };
    if head + tail > 0 {
        trimmed.whitespace = true;
        value.strip(head, tail);
    }
}

/// The key prefixes OpenAI issues: project, service-account, admin and the
/// older user keys.
const OPENAI_PREFIXES: [&str; 4] = ["sk-proj-", "sk-svcacct-", "sk-admin-", "sk-"];

/// Tells whether a value has the shape of an OpenAI API key. This only
/// warns: Azure OpenAI and local gateways use other shapes.
pub fn looks_like_openai_key(value: &Secret) -> bool {
    let bytes = value.expose();
    OPENAI_PREFIXES
        .iter()
        .any(|prefix| bytes.starts_with(prefix.as_bytes()) && bytes.len() > prefix.len() + 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> Secret {
        Secret::new(text.as_bytes().to_vec())
    }

    #[test]
    fn normalize_trims_whitespace() {
        let mut value = secret("  sk-abc\n");
        let trimmed = normalize(&mut value, false).unwrap();
        assert_eq!(value.expose(), b"sk-abc");
        assert!(trimmed.whitespace);
        assert!(!trimmed.quotes);
    }

    #[test]
    fn normalize_trims_one_quote_pair() {
        let mut value = secret("\"'sk-abc'\"");
        let trimmed = normalize(&mut value, false).unwrap();
        assert_eq!(value.expose(), b"'sk-abc'");
        assert!(trimmed.quotes);
    }

    #[test]
    fn normalize_keeps_unmatched_quote() {
        let mut value = secret("\"sk-abc");
        normalize(&mut value, false).unwrap();
        assert_eq!(value.expose(), b"\"sk-abc");
    }

    #[test]
    fn normalize_rejects_empty_and_blank() {
        assert_eq!(normalize(&mut secret(""), false), Err(ValueError::Empty));
        assert_eq!(
            normalize(&mut secret(" \t\n"), false),
            Err(ValueError::Empty)
        );
        assert_eq!(
            normalize(&mut secret("\"\""), false),
            Err(ValueError::Empty)
        );
    }

    #[test]
    fn normalize_rejects_inner_whitespace() {
        let result = normalize(&mut secret("sk-a b"), false);
        assert_eq!(result, Err(ValueError::InnerWhitespace(4)));
    }

    #[test]
    fn normalize_rejects_control_character() {
        let result = normalize(&mut secret("sk-a\x1bb"), false);
        assert_eq!(result, Err(ValueError::ControlCharacter(4)));
    }

    #[test]
    fn raw_keeps_value_but_rejects_nul() {
        let mut value = secret(" -----BEGIN KEY-----\nabc\n");
        assert_eq!(normalize(&mut value, true), Ok(Trimmed::default()));
        assert_eq!(value.expose(), b" -----BEGIN KEY-----\nabc\n");
        assert_eq!(
            normalize(&mut secret("a\0b"), true),
            Err(ValueError::Nul(1))
        );
    }

    #[test]
    fn normalize_strips_bom() {
        let mut value = secret("\u{feff}sk-abc\n");
        let trimmed = normalize(&mut value, false).unwrap();
        assert_eq!(value.expose(), b"sk-abc");
        assert!(trimmed.bom);
    }

    #[test]
    fn normalize_rejects_invisible_characters() {
        assert_eq!(
            normalize(&mut secret("sk-abc\u{a0}"), false),
            Err(ValueError::Invisible { code: 0xa0, at: 6 })
        );
        assert_eq!(
            normalize(&mut secret("sk-\u{200b}abc"), false),
            Err(ValueError::Invisible {
                code: 0x200b,
                at: 3
            })
        );
        assert_eq!(
            normalize(&mut Secret::new(b"sk-abc\xff\xfe".to_vec()), false),
            Err(ValueError::InvalidUtf8(6))
        );
    }

    #[test]
    fn assignment_shape_is_recognised() {
        assert!(looks_like_assignment(&secret("OPENAI_API_KEY=sk-abc")));
        assert!(looks_like_assignment(&secret(
            "export OPENAI_API_KEY=sk-abc"
        )));
        assert!(!looks_like_assignment(&secret("QUJDRA==")));
        assert!(!looks_like_assignment(&secret("sk-abc")));
    }

    #[test]
    fn debug_redacts_value() {
        let text = format!("{:?}", secret("sk-very-secret"));
        assert!(!text.contains("very-secret"));
        assert!(text.contains("14 bytes"));
    }

    #[test]
    fn fingerprint_is_sha256_prefix() {
        // SHA-256 of "abc" begins ba7816bf8f01.
        assert_eq!(secret("abc").fingerprint(), "ba7816bf8f01");
    }

    #[test]
    fn openai_shapes_are_recognised() {
        assert!(looks_like_openai_key(&secret("sk-proj-abcdefghijklmnop")));
        assert!(looks_like_openai_key(&secret("sk-abcdefghijklmnop")));
        assert!(!looks_like_openai_key(&secret("azure-0123456789abcdef")));
        assert!(!looks_like_openai_key(&secret("sk-")));
    }
}
