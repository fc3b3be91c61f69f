//! Feeds the masker arbitrary values, output and write boundaries, and
//! checks the result against a naive search: every occurrence of a value
//! replaced, overlapping and touching occurrences as one replacement.
//! Run with `cargo +nightly fuzz run mask` from this folder.

#![no_main]

#[allow(dead_code)]
#[path = "../../src/mask.rs"]
mod mask;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Layout: [value count][value length, value bytes]... [cut bytes] the rest.
    let Some((&count, mut rest)) = data.split_first() else {
        return;
    };
    let mut values: Vec<&[u8]> = Vec::new();
    for _ in 0..(count % 4) {
        let Some((&len, tail)) = rest.split_first() else {
            return;
        };
        let len = usize::from(len % 24);
        if tail.len() < len {
            return;
        }
        let (value, tail) = tail.split_at(len);
        // Values never contain line breaks, except `raw` ones, which are
        // masked line by line.
        if !value.contains(&b'\n') {
            values.push(value);
        }
        rest = tail;
    }
    let Some((&cut_seed, input)) = rest.split_first() else {
        return;
    };

    let mut builder = mask::MaskerBuilder::new(b"#");
    let mut masked_forms: Vec<&[u8]> = Vec::new();
    for value in &values {
        if builder.add_form(value) {
            masked_forms.push(value);
        }
    }
    let Some(masker) = builder.build() else {
        return;
    };

    let mut output = Vec::new();
    let mut sink = |bytes: &[u8]| -> Result<(), ()> {
        output.extend_from_slice(bytes);
        Ok(())
    };
    let mut stream = mask::MaskStream::new(&masker);
    let step = usize::from(cut_seed % 16) + 1;
    for chunk in input.chunks(step) {
        stream.push(chunk, &mut sink).unwrap();
    }
    stream.flush(&mut sink).unwrap();

    let mut spans = Vec::new();
    for form in &masked_forms {
        for start in 0..input.len() {
            if input[start..].starts_with(form) {
                spans.push((start, start + form.len()));
            }
        }
    }
    spans.sort_unstable();
    let mut expected = Vec::new();
    let mut position = 0;
    let mut current: Option<(usize, usize)> = None;
    for (start, end) in spans {
        match &mut current {
            Some(span) if start <= span.1 => span.1 = span.1.max(end),
            _ => {
                if let Some((s, e)) = current.take() {
                    expected.extend_from_slice(&input[position..s]);
                    expected.push(b'#');
                    position = e;
                }
                current = Some((start, end));
            }
        }
    }
    if let Some((s, e)) = current {
        expected.extend_from_slice(&input[position..s]);
        expected.push(b'#');
        position = e;
    }
    expected.extend_from_slice(&input[position..]);
    assert_eq!(output, expected);
});
