//! The streaming matcher that hides injected values in the child's output.
//!
//! # What it matches
//!
//! Each injected value is masked together with the forms a program commonly
//! prints it in. These are its standard and URL-safe base64 encodings, in
//! each of the three alignments a value can take inside a longer base64
//! text, its percent-encoded forms (with `/` encoded or kept, in upper- or
//! lower-case hex) and its JSON-escaped forms (with `/` as is or as `\/`).
//! A value that is a JSON
//! object or array also has each of its string fields masked on its own. A
//! value with line breaks (a `raw` PEM key, say) is masked line by line,
//! because no masked form then contains a line break, and a line break ends
//! every possible match. Forms shorter than [`MIN_MASKED_LEN`] bytes are not
//! masked: they would shred ordinary output.
//!
//! Occurrences that overlap or touch become one replacement.
//!
//! # What it keeps in memory
//!
//! The matcher keeps no plaintext copy of a value or of any encoded form,
//! and no hash of any prefix of one. A hash of each prefix would let a
//! reader of keyrun's memory recover a value one byte at a time, by trying
//! 256 bytes per position. The forms are built in zeroizing buffers, turned
//! into two keyed digests each, and wiped before the child starts:
//!
//! - a 20-bit tag of a polynomial rolling hash over the full form, with a
//!   random odd base chosen per run. The tag is a prefilter: the matcher
//!   rolls a window of each form's length over the output and checks the
//!   tag in a few instructions per byte. Twenty bits of a linear hash say
//!   too little about a value to narrow a search.
//! - HMAC-SHA256 of the full form under a random 32-byte key chosen per
//!   run, which confirms a window whose tag matched.
//!
//! What this leaks: someone who reads keyrun's memory gets the key and the
//! digests, so they can test a guess of a whole form offline. For an API
//! key of 20 or more random characters that search is out of reach, but a
//! short, guessable value (a dictionary word) can be found this way, as
//! with any stored verifier. The lengths of the forms are kept in the
//! clear, and so is one bit per run: whether some form contains whitespace.
//!
//! # Speed
//!
//! Masked forms of ordinary values contain no whitespace or control bytes,
//! so a match lies inside one run of printable non-space bytes. The matcher
//! skips runs shorter than the shortest form, which in log text is most of
//! them, and rolls its hashes over the rest. When some form does contain
//! whitespace (a `raw` value), only a line break ends a run.
//!
//! # Streaming
//!
//! Output up to the last byte that cannot be part of a match (a line break,
//! a space) is written at once. Only a trailing partial run that could
//! still grow into a match, and at most one form's length of it, is held
//! until more output arrives, the caller flushes it after an idle delay, or
//! the stream ends. Buffers that held output are zeroed when they are
//! drained.

use rand::Rng as _;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Forms shorter than this are not masked.
pub const MIN_MASKED_LEN: usize = 8;

/// The replacement written in place of a match unless `mask_with` sets one.
pub const DEFAULT_REPLACEMENT: &str = "***";

/// Bits of the rolling hash kept as the prefilter tag.
const TAG_BITS: u32 = 20;

/// Turns the hex digits after each `%` of a percent-encoded text into
/// lower case.
fn lowercase_percent_hex(text: &mut [u8]) {
    let mut index = 0;
    while index < text.len() {
        if text[index] == b'%' && index + 2 < text.len() {
            text[index + 1].make_ascii_lowercase();
            text[index + 2].make_ascii_lowercase();
            index += 3;
        } else {
            index += 1;
        }
    }
}

/// Returns the class of a byte: 0 for a line break, which no match
/// contains, 1 for whitespace and control bytes, which a match contains only
/// when some form does, and 2 for all others.
fn byte_class(byte: u8) -> u8 {
    match byte {
        b'\n' => 0,
        b' ' | b'\t' | b'\r' | 0x0b | 0x0c | 0x00..=0x1f | 0x7f => 1,
        _ => 2,
    }
}

/// The forms of one length: their prefilter tags and HMAC digests.
struct LengthGroup {
    len: usize,
    /// The rolling hash base raised to `len`, to take a byte out of the
    /// window.
    drop_factor: u64,
    tags: Vec<u32>,
    digests: Vec<[u8; 32]>,
}

/// HMAC-SHA256 with a fixed key, its inner and outer states computed once.
struct Hmac {
    inner: Sha256,
    outer: Sha256,
}

impl Hmac {
    fn new(key: &[u8; 32]) -> Self {
        let mut ipad = Zeroizing::new([0x36u8; 64]);
        let mut opad = Zeroizing::new([0x5cu8; 64]);
        for (i, byte) in key.iter().enumerate() {
            ipad[i] ^= byte;
            opad[i] ^= byte;
        }
        let mut inner = Sha256::new();
        inner.update(&ipad[..]);
        let mut outer = Sha256::new();
        outer.update(&opad[..]);
        Hmac { inner, outer }
    }

    fn digest(&self, message: &[u8]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        inner.update(message);
        let mut inner_digest = inner.finalize();
        let mut outer = self.outer.clone();
        outer.update(inner_digest);
        inner_digest.zeroize();
        outer.finalize().into()
    }
}

/// The set of masked forms, as keyed digests only. Build it with
/// [`MaskerBuilder`], then mask each output stream with a [`MaskStream`].
pub struct Masker {
    groups: Vec<LengthGroup>,
    base: u64,
    hmac: Hmac,
    /// The lowest `byte_class` a match can contain: 2, or 1 when some form
    /// contains whitespace or control bytes.
    min_class: u8,
    /// For each byte value, whether a match can contain it: `min_class`
    /// applied to every byte, for the scan's inner loop.
    matchable: [bool; 256],
    min_len: usize,
    max_len: usize,
    replacement: Vec<u8>,
}

/// Collects values, derives their forms and keeps only their digests.
pub struct MaskerBuilder {
    masker: Masker,
}

impl MaskerBuilder {
    pub fn new(replacement: &[u8]) -> Self {
        let mut rng = rand::rng();
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill(&mut key[..]);
        let base = rng.random::<u64>() | 1;
        MaskerBuilder {
            masker: Masker {
                groups: Vec::new(),
                base,
                hmac: Hmac::new(&key),
                min_class: 2,
                matchable: [false; 256],
                min_len: usize::MAX,
                max_len: 0,
                replacement: replacement.to_vec(),
            },
        }
    }

    /// Adds a value with all its forms. Returns false, and adds nothing,
    /// when the value is shorter than [`MIN_MASKED_LEN`].
    pub fn add_value(&mut self, value: &[u8]) -> bool {
        if value.len() < MIN_MASKED_LEN {
            return false;
        }
        for line in value.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.add_form(line);
        }
        self.add_encoded_forms(value);
        self.add_json_fields(value);
        true
    }

    /// Adds the value's base64, percent-encoded and JSON-escaped forms.
    fn add_encoded_forms(&mut self, value: &[u8]) {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        use base64::Engine as _;

        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            // The value can start at any of the three byte positions of a
            // 3-byte group. Encoding it after that many zero bytes gives
            // the characters of that alignment. A character depends on the
            // value alone when its 6 bits all fall inside the value.
            for offset in 0..3 {
                let mut shifted = Zeroizing::new(vec![0u8; offset]);
                shifted.extend_from_slice(value);
                let mut encoded = Zeroizing::new(String::new());
                engine.encode_string(&shifted[..], &mut encoded);
                let first = (8 * offset).div_ceil(6);
                let end = 8 * (offset + value.len()) / 6;
                self.add_form(&encoded.as_bytes()[first..end]);
                // A value at the end of the encoded text (a password in a
                // Basic authorization header) also fixes the last
                // character, whose spare bits are zero.
                self.add_form(&encoded.as_bytes()[first..]);
            }
        }

        const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        // Python's `urllib.parse.quote` keeps `/` by default, and some
        // encoders write lower-case hex digits.
        const PATH_SAFE: &percent_encoding::AsciiSet = &UNRESERVED.remove(b'/');
        for set in [UNRESERVED, PATH_SAFE] {
            let mut percent = Zeroizing::new(String::new());
            for piece in percent_encoding::percent_encode(value, set) {
                percent.push_str(piece);
            }
            self.add_form(percent.as_bytes());
            let mut lower = Zeroizing::new(percent.as_bytes().to_vec());
            lowercase_percent_hex(&mut lower);
            self.add_form(&lower);
        }

        if let Ok(text) = std::str::from_utf8(value) {
            if let Ok(quoted) = serde_json::to_string(text) {
                let quoted = Zeroizing::new(quoted);
                let escaped = &quoted.as_bytes()[1..quoted.len() - 1];
                self.add_form(escaped);
                // PHP's json_encode and others also escape `/` as `\/`.
                if escaped.contains(&b'/') {
                    let mut slashes = Zeroizing::new(Vec::with_capacity(escaped.len() + 8));
                    for &byte in escaped {
                        if byte == b'/' {
                            slashes.push(b'\\');
                        }
                        slashes.push(byte);
                    }
                    self.add_form(&slashes);
                }
            }
        }
    }

    /// Adds each string field of a JSON object or array on its own.
    fn add_json_fields(&mut self, value: &[u8]) {
        let trimmed = value.trim_ascii_start();
        if !(trimmed.starts_with(b"{") || trimmed.starts_with(b"[")) {
            return;
        }
        let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(value) else {
            return;
        };
        let mut strings = Vec::new();
        collect_strings(parsed, &mut strings);
        for field in strings {
            let field = Zeroizing::new(field);
            if field.len() >= MIN_MASKED_LEN && field.as_bytes() != value {
                self.add_form(field.as_bytes());
                self.add_encoded_forms(field.as_bytes());
            }
        }
    }

    /// Adds the digests of one form as it is, without encoded forms, unless
    /// it is too short. Returns whether it was long enough.
    pub fn add_form(&mut self, form: &[u8]) -> bool {
        if form.len() < MIN_MASKED_LEN {
            return false;
        }
        let masker = &mut self.masker;
        let digest = masker.hmac.digest(form);
        let tag = masker.tag(masker.rolling_hash(form));
        let index = match masker.groups.iter().position(|g| g.len == form.len()) {
            Some(index) => index,
            None => {
                let drop_factor = masker.base.wrapping_pow(form.len() as u32);
                masker.groups.push(LengthGroup {
                    len: form.len(),
                    drop_factor,
                    tags: Vec::new(),
                    digests: Vec::new(),
                });
                masker.groups.len() - 1
            }
        };
        let group = &mut masker.groups[index];
        if group.digests.contains(&digest) {
            return true;
        }
        group.digests.push(digest);
        group.tags.push(tag);
        if form.iter().any(|&b| byte_class(b) < 2) {
            masker.min_class = 1;
        }
        masker.min_len = masker.min_len.min(form.len());
        masker.max_len = masker.max_len.max(form.len());
        true
    }

    /// Returns the matcher, or `None` when no value was long enough to mask.
    pub fn build(mut self) -> Option<Masker> {
        if self.masker.groups.is_empty() {
            return None;
        }
        self.masker.groups.sort_by_key(|g| g.len);
        let min_class = self.masker.min_class;
        for (byte, matchable) in self.masker.matchable.iter_mut().enumerate() {
            *matchable = byte_class(byte as u8) >= min_class;
        }
        Some(self.masker)
    }
}

fn collect_strings(value: serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(text) => out.push(text),
        serde_json::Value::Array(items) => {
            for item in items {
                collect_strings(item, out);
            }
        }
        serde_json::Value::Object(fields) => {
            for (_, item) in fields {
                collect_strings(item, out);
            }
        }
        _ => {}
    }
}

impl Masker {
    fn rolling_hash(&self, window: &[u8]) -> u64 {
        window.iter().fold(0u64, |hash, &byte| {
            hash.wrapping_mul(self.base).wrapping_add(u64::from(byte))
        })
    }

    fn tag(&self, hash: u64) -> u32 {
        // The multiply spreads every bit of the hash into the top bits.
        (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - TAG_BITS)) as u32
    }

    fn can_match(&self, byte: u8) -> bool {
        self.matchable[usize::from(byte)]
    }

    /// Appends to `spans` every match `[start, end)` inside `run` that ends
    /// after `scanned`, the part of `run` checked by an earlier call.
    /// Returns whether it hashed a candidate window with HMAC.
    fn find_in_run(
        &self,
        buffer: &[u8],
        run: std::ops::Range<usize>,
        scanned: usize,
        spans: &mut Vec<(usize, usize)>,
    ) -> bool {
        let mut hashed = false;
        for group in &self.groups {
            let len = group.len;
            if run.len() < len {
                break;
            }
            let mut start = run.start.max((scanned + 1).saturating_sub(len));
            if start + len > run.end {
                continue;
            }
            let mut hash = self.rolling_hash(&buffer[start..start + len]);
            loop {
                let end = start + len;
                if group.tags.contains(&self.tag(hash)) {
                    hashed = true;
                    let digest = self.hmac.digest(&buffer[start..end]);
                    if group.digests.contains(&digest) {
                        spans.push((start, end));
                    }
                }
                if end == run.end {
                    break;
                }
                hash = hash
                    .wrapping_mul(self.base)
                    .wrapping_add(u64::from(buffer[end]))
                    .wrapping_sub(u64::from(buffer[start]).wrapping_mul(group.drop_factor));
                start += 1;
            }
        }
        hashed
    }
}

/// Bytes of stack below the caller that [`scrub_stack`] overwrites: more
/// than the search and the SHA-256 it calls use.
const STACK_SCRUB_BYTES: usize = 16 * 1024;

/// Overwrites the stack below the caller, where SHA-256 left the last
/// partial block of a hashed window: bytes of the child's output that may
/// be a value.
#[inline(never)]
fn scrub_stack() {
    let mut area = [0u8; STACK_SCRUB_BYTES];
    // SAFETY: `area` is a local array of exactly this size.
    unsafe { std::ptr::write_bytes(area.as_mut_ptr(), 0, area.len()) };
    std::hint::black_box(&mut area);
}

/// One output stream through the masker: the bytes held back while a
/// match may still be forming, and the matches found in them.
pub struct MaskStream<'m> {
    masker: &'m Masker,
    /// Held bytes followed by the bytes of the current read. Zeroed as it
    /// is drained, since the child may have printed a value into it.
    buffer: Zeroizing<Vec<u8>>,
    /// Bytes at the front of `buffer` already searched.
    scanned: usize,
    /// Merged matches inside `buffer`, sorted, none touching another.
    spans: Vec<(usize, usize)>,
}

impl<'m> MaskStream<'m> {
    pub fn new(masker: &'m Masker) -> Self {
        MaskStream {
            masker,
            buffer: Zeroizing::new(Vec::new()),
            scanned: 0,
            spans: Vec::new(),
        }
    }

    /// Whether bytes are held back, waiting for more output or a flush.
    pub fn holds_bytes(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Returns a zeroed buffer of `size` bytes to read the next output into;
    /// pass the count read to [`MaskStream::commit`].
    pub fn read_buffer(&mut self, size: usize) -> &mut [u8] {
        let held = self.buffer.len();
        self.buffer.resize(held + size, 0);
        &mut self.buffer[held..]
    }

    /// Masks the `count` bytes read into the last [`MaskStream::read_buffer`]
    /// and writes what is final to `sink`.
    pub fn commit<E>(
        &mut self,
        count: usize,
        sink: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        // All held bytes were searched, so they end where the read began.
        // The unused part of the read buffer is still zero.
        self.buffer.truncate(self.scanned + count);
        self.search();
        let cut = self.final_cut();
        self.emit(cut, sink)
    }

    /// Masks the bytes in `chunk` and writes what is final to `sink`.
    // The tests and the fuzz target feed the matcher this way.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn push<E>(
        &mut self,
        chunk: &[u8],
        sink: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.read_buffer(chunk.len()).copy_from_slice(chunk);
        self.commit(chunk.len(), sink)
    }

    /// Writes every held byte, the matches found so far replaced. A value
    /// whose first part is flushed here and whose rest comes later is not
    /// masked.
    pub fn flush<E>(&mut self, sink: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let len = self.buffer.len();
        self.emit(len, sink)
    }

    /// Drops every held byte unwritten, zeroing it.
    pub fn discard(&mut self) {
        self.buffer.zeroize();
        self.buffer.clear();
        self.scanned = 0;
        self.spans.clear();
    }

    /// Finds the matches that end in the bytes after `scanned`, and merges
    /// them into `spans`.
    fn search(&mut self) {
        let masker = self.masker;
        let buffer = &self.buffer[..];
        let len = buffer.len();
        let scanned = self.scanned;
        let before = self.spans.len();
        let mut hashed = false;

        // A match that ends in the new bytes starts at most one form's
        // length before them.
        let mut position = scanned.saturating_sub(masker.max_len.saturating_sub(1));
        let window = masker.min_len;
        // Look for runs of at least `window` matchable bytes by testing the
        // last byte of a window first: in text where spaces come every few
        // bytes, most bytes are never looked at.
        while position + window <= len {
            let last = position + window - 1;
            if !masker.can_match(buffer[last]) {
                position = last + 1;
                continue;
            }
            if let Some(gap) = buffer[position..last]
                .iter()
                .rposition(|&b| !masker.can_match(b))
            {
                position += gap + 1;
                continue;
            }
            let run_start = position;
            position = last + 1;
            while position < len && masker.can_match(buffer[position]) {
                position += 1;
            }
            if position > scanned {
                hashed |= masker.find_in_run(buffer, run_start..position, scanned, &mut self.spans);
            }
        }
        self.scanned = len;
        if hashed {
            scrub_stack();
        }

        if self.spans.len() != before {
            merge_spans(&mut self.spans);
        }
    }

    /// Returns how many leading bytes no later output can change: none of
    /// them can start a match that is still incomplete, and none is in a
    /// match that a later one could overlap or touch.
    fn final_cut(&self) -> usize {
        let masker = self.masker;
        let len = self.buffer.len();
        let mut free_from = len.saturating_sub(masker.max_len.saturating_sub(1));
        if let Some(last) = self.buffer[free_from..]
            .iter()
            .rposition(|&b| !masker.can_match(b))
        {
            free_from += last + 1;
        }
        match self.spans.iter().find(|&&(_, end)| end >= free_from) {
            Some(&(start, _)) => start.min(free_from),
            None => free_from,
        }
    }

    /// Writes the first `cut` bytes with their matches replaced, then drops
    /// them from the buffer and zeroes what they left behind.
    fn emit<E>(
        &mut self,
        cut: usize,
        sink: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let result = self.write_prefix(cut, sink);

        let len = self.buffer.len();
        self.buffer.copy_within(cut..len, 0);
        wipe(&mut self.buffer[len - cut..]);
        self.buffer.truncate(len - cut);
        self.scanned = self.buffer.len();
        self.spans.retain(|&(start, _)| start >= cut);
        for span in &mut self.spans {
            span.0 -= cut;
            span.1 -= cut;
        }
        result
    }

    fn write_prefix<E>(
        &self,
        cut: usize,
        sink: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut position = 0;
        for &(start, end) in self.spans.iter().take_while(|&&(start, _)| start < cut) {
            if start > position {
                sink(&self.buffer[position..start])?;
            }
            sink(&self.masker.replacement)?;
            position = end;
        }
        if cut > position {
            sink(&self.buffer[position..cut])?;
        }
        Ok(())
    }
}

/// Zeroes `bytes`. `zeroize` writes one volatile byte at a time, which
/// costs more than the rest of the masking, so this uses one `memset`
/// that `black_box` keeps the optimiser from dropping.
fn wipe(bytes: &mut [u8]) {
    // SAFETY: the pointer and length come from a valid mutable slice.
    unsafe { std::ptr::write_bytes(bytes.as_mut_ptr(), 0, bytes.len()) };
    std::hint::black_box(bytes);
}

/// Sorts spans and merges those that overlap or touch.
fn merge_spans(spans: &mut Vec<(usize, usize)>) {
    spans.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for &(start, end) in spans.iter() {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    *spans = merged;
}

/// The CI runners whose logs keyrun can ask to mask a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiRunner {
    GitHubActions,
    AzurePipelines,
}

impl CiRunner {
    /// Returns the runner keyrun runs under, from the variables each runner
    /// sets for its steps.
    pub fn detect() -> Option<CiRunner> {
        if std::env::var_os("GITHUB_ACTIONS").is_some_and(|v| v == "true") {
            Some(CiRunner::GitHubActions)
        } else if std::env::var_os("TF_BUILD").is_some_and(|v| v == "True") {
            Some(CiRunner::AzurePipelines)
        } else {
            None
        }
    }

    /// Appends the workflow command that registers `fragment`, escaped the
    /// way the runner unescapes command data.
    fn append_command(self, fragment: &[u8], line: &mut Zeroizing<Vec<u8>>) {
        let (prefix, percent): (&[u8], &[u8]) = match self {
            CiRunner::GitHubActions => (b"::add-mask::", b"%25"),
            CiRunner::AzurePipelines => (b"##vso[task.setsecret]", b"%AZP25"),
        };
        line.extend_from_slice(prefix);
        for &byte in fragment {
            match byte {
                b'%' => line.extend_from_slice(percent),
                b'\r' => line.extend_from_slice(b"%0D"),
                _ => line.push(byte),
            }
        }
        line.push(b'\n');
    }
}

/// Writes, to keyrun's stdout, one command per value line and JSON field of
/// at least [`MIN_MASKED_LEN`] bytes that registers it with the CI runner's
/// log masking, so later steps of the job are masked too. The commands
/// carry the plaintext, so keyrun writes them only when its stdout is a
/// pipe (the runner reads a step's output through one), never to a file or
/// a terminal. Returns how many fragments were registered.
pub fn register_with_ci<'v>(
    runner: CiRunner,
    values: impl IntoIterator<Item = &'v [u8]>,
) -> std::io::Result<usize> {
    use std::os::fd::AsFd as _;

    let stdout = std::io::stdout();
    let stat = nix::sys::stat::fstat(stdout.as_fd())?;
    let kind = stat.st_mode & libc::S_IFMT;
    if kind != libc::S_IFIFO {
        tracing::debug!(
            ?runner,
            "stdout is not a pipe; values not registered with the CI runner"
        );
        return Ok(0);
    }

    let mut commands = Zeroizing::new(Vec::new());
    let mut count = 0;
    for value in values {
        let mut fragments: Vec<Zeroizing<Vec<u8>>> = value
            .split(|&b| b == b'\n')
            .map(|line| Zeroizing::new(line.strip_suffix(b"\r").unwrap_or(line).to_vec()))
            .collect();
        if let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(value) {
            let mut strings = Vec::new();
            collect_strings(parsed, &mut strings);
            fragments.extend(strings.into_iter().map(|s| Zeroizing::new(s.into_bytes())));
        }
        for fragment in fragments.iter().filter(|f| f.len() >= MIN_MASKED_LEN) {
            runner.append_command(fragment, &mut commands);
            count += 1;
        }
    }
    // Written straight to the descriptor: the standard library's stdout
    // buffer lives as long as the process and is never wiped.
    let mut rest: &[u8] = &commands;
    while !rest.is_empty() {
        match nix::unistd::write(stdout.as_fd(), rest) {
            Ok(written) => rest = &rest[written..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds a masker that masks exactly `forms`, without encoded forms.
    fn masker_of(forms: &[&[u8]]) -> Masker {
        let mut builder = MaskerBuilder::new(b"#");
        for form in forms {
            builder.add_form(form);
        }
        builder.build().expect("a form long enough")
    }

    fn mask_in_chunks(masker: &Masker, input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut sink = |bytes: &[u8]| -> Result<(), ()> {
            out.extend_from_slice(bytes);
            Ok(())
        };
        let mut stream = MaskStream::new(masker);
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, input.len());
            stream.push(&input[start..cut], &mut sink).unwrap();
            start = cut;
        }
        stream.push(&input[start..], &mut sink).unwrap();
        stream.flush(&mut sink).unwrap();
        out
    }

    /// The expected output: every occurrence of every form replaced, with
    /// overlapping and touching occurrences as one replacement.
    fn mask_naively(forms: &[&[u8]], input: &[u8], replacement: &[u8]) -> Vec<u8> {
        let mut spans = Vec::new();
        for form in forms.iter().filter(|f| f.len() >= MIN_MASKED_LEN) {
            for start in 0..input.len() {
                if input[start..].starts_with(form) {
                    spans.push((start, start + form.len()));
                }
            }
        }
        merge_spans(&mut spans);
        let mut out = Vec::new();
        let mut position = 0;
        for (start, end) in spans {
            out.extend_from_slice(&input[position..start]);
            out.extend_from_slice(replacement);
            position = end;
        }
        out.extend_from_slice(&input[position..]);
        out
    }

    #[test]
    fn masks_value_in_line() {
        let masker = masker_of(&[b"sk-abcdefgh"]);
        let out = mask_in_chunks(&masker, b"key=sk-abcdefgh done\n", &[]);
        assert_eq!(out, b"key=# done\n");
    }

    #[test]
    fn masks_value_split_across_writes() {
        let masker = masker_of(&[b"sk-abcdefgh"]);
        let out = mask_in_chunks(&masker, b"key=sk-abcdefgh\n", &[5, 6, 9, 14]);
        assert_eq!(out, b"key=#\n");
    }

    #[test]
    fn merges_overlapping_and_touching_matches() {
        let masker = masker_of(&[b"abcdefgh", b"efghijkl"]);
        assert_eq!(mask_in_chunks(&masker, b"xabcdefghijkly", &[]), b"x#y");
        assert_eq!(mask_in_chunks(&masker, b"abcdefghabcdefgh", &[]), b"#");
        assert_eq!(mask_in_chunks(&masker, b"abcdefgh abcdefgh", &[]), b"# #");
    }

    #[test]
    fn writes_complete_lines_at_once() {
        let masker = masker_of(&[b"sk-abcdefgh"]);
        let mut out = Vec::new();
        let mut stream = MaskStream::new(&masker);
        let mut sink = |bytes: &[u8]| -> Result<(), ()> {
            out.extend_from_slice(bytes);
            Ok(())
        };
        stream.push(b"hello world\nsk-abc", &mut sink).unwrap();
        assert!(stream.holds_bytes());
        assert_eq!(out, b"hello world\n");
    }

    #[test]
    fn holds_nothing_after_a_space() {
        let masker = masker_of(&[b"sk-abcdefgh"]);
        let mut stream = MaskStream::new(&masker);
        let mut sink = |_: &[u8]| -> Result<(), ()> { Ok(()) };
        stream.push(b"partial line ", &mut sink).unwrap();
        assert!(!stream.holds_bytes());
    }

    #[test]
    fn masks_encoded_forms() {
        use base64::Engine as _;
        let value = br#"sk-test-0123456789abcdef?+/"x"#;
        let mut builder = MaskerBuilder::new(b"#");
        assert!(builder.add_value(value));
        let masker = builder.build().unwrap();
        let standard = base64::engine::general_purpose::STANDARD.encode(value);
        let url = base64::engine::general_purpose::URL_SAFE.encode(value);
        let shifted =
            base64::engine::general_purpose::STANDARD.encode([b"x".as_slice(), value].concat());
        let cases: [(&str, Vec<u8>); 8] = [
            ("standard base64", standard.into_bytes()),
            ("URL-safe base64", url.into_bytes()),
            ("shifted base64", shifted.into_bytes()),
            (
                "percent-encoded",
                b"sk-test-0123456789abcdef%3F%2B%2F%22x".to_vec(),
            ),
            (
                "percent-encoded, lower-case hex",
                b"sk-test-0123456789abcdef%3f%2b%2f%22x".to_vec(),
            ),
            (
                "percent-encoded, / kept",
                b"sk-test-0123456789abcdef%3F%2B/%22x".to_vec(),
            ),
            (
                "JSON-escaped",
                br#"sk-test-0123456789abcdef?+/\"x"#.to_vec(),
            ),
            (
                "JSON-escaped, / escaped",
                br#"sk-test-0123456789abcdef?+\/\"x"#.to_vec(),
            ),
        ];
        for (name, form) in cases {
            let input = [b"<".as_slice(), &form, b">\n"].concat();
            let out = mask_in_chunks(&masker, &input, &[]);
            let kept = out
                .windows(MIN_MASKED_LEN)
                .filter(|w| form.windows(MIN_MASKED_LEN).any(|f| f == *w))
                .count();
            assert_eq!(kept, 0, "{name}: part of the form is left");
            assert!(out.contains(&b'#'), "{name}: no replacement");
        }
    }

    #[test]
    fn short_value_is_not_added() {
        let mut builder = MaskerBuilder::new(b"#");
        assert!(!builder.add_value(b"short"));
        assert!(builder.build().is_none());
    }

    #[test]
    fn masks_json_fields_and_raw_lines() {
        let mut builder = MaskerBuilder::new(b"#");
        assert!(builder.add_value(br#"{"user": "someone-x", "password": "pw-12345678"}"#));
        assert!(builder.add_value(b"line-one-abc\nline-two-xyz\n"));
        let masker = builder.build().unwrap();
        let out = mask_in_chunks(&masker, b"pw-12345678 line-two-xyz someone-x\n", &[3]);
        assert_eq!(out, b"# # #\n");
    }

    fn small_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        // A small alphabet makes occurrences, overlaps and near misses
        // common; a space, a line break and a high byte cover the classes.
        prop::collection::vec(
            prop::sample::select(vec![b'a', b'b', b' ', b'\n', 0xff, 0x00]),
            0..max,
        )
    }

    fn form() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop::sample::select(vec![b'a', b'b', b' ', 0xff, 0x00]),
            MIN_MASKED_LEN..12,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn streaming_equals_naive_masking(
            forms in prop::collection::vec(form(), 1..4),
            planted in prop::collection::vec((0usize..4, 0usize..200), 0..6),
            noise in small_bytes(200),
            cuts in prop::collection::vec(0usize..260, 0..8),
        ) {
            // Plant forms into the noise so matches, overlaps and matches at
            // either end of the stream occur often.
            let mut input = noise;
            for (which, at) in planted {
                let form = &forms[which % forms.len()];
                let at = at.min(input.len());
                input.splice(at..at, form.iter().copied());
            }
            let mut cuts = cuts;
            cuts.sort_unstable();
            let refs: Vec<&[u8]> = forms.iter().map(Vec::as_slice).collect();
            let masker = masker_of(&refs);
            let expected = mask_naively(&refs, &input, b"#");
            let actual = mask_in_chunks(&masker, &input, &cuts);
            prop_assert_eq!(actual, expected);
        }

        #[test]
        fn flush_never_loses_bytes(
            input in small_bytes(120),
            cuts in prop::collection::vec(0usize..120, 0..6),
        ) {
            // A form that never occurs: the output is the input exactly,
            // whatever the writes and flushes.
            let masker = masker_of(&[b"\xfe\xfe\xfe\xfe\xfe\xfe\xfe\xfe"]);
            let mut out = Vec::new();
            let mut sink = |bytes: &[u8]| -> Result<(), ()> {
                out.extend_from_slice(bytes);
                Ok(())
            };
            let mut stream = MaskStream::new(&masker);
            let mut start = 0;
            let mut cuts = cuts;
            cuts.sort_unstable();
            for cut in cuts {
                let cut = cut.clamp(start, input.len());
                stream.push(&input[start..cut], &mut sink).unwrap();
                stream.flush(&mut sink).unwrap();
                start = cut;
            }
            stream.push(&input[start..], &mut sink).unwrap();
            stream.flush(&mut sink).unwrap();
            prop_assert_eq!(out, input);
        }
    }
}
