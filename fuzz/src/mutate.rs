//! Mutations of seed inputs: what a fuzz target receives instead of a raw byte string.
//!
//! A [`Fuzzed`] input picks one seed (a real payload from `events/`, or a regression seed) and
//! a list of [`Mutation`]s to apply to it in order. [`arbitrary`] builds the choice and the
//! list from a byte string: random bytes under `cargo test` (arbtest), or a coverage-guided
//! engine's bytes (`cargo fuzz`'s libFuzzer takes the same `Arbitrary` types). Mutations are byte-level (bit flips,
//! truncation, insertion, splicing in part of another seed, purely random bytes) and
//! JSON-aware (replace the n-th value of the document with a huge string, a deep nesting,
//! another type, unusual Unicode, a number JSON allows but Rust types may not, or remove it).

use arbitrary::Arbitrary;
use serde_json::Value;

/// The largest string a [`Mutation::Json`] puts in a document, in KiB: just over the 1 MiB cap
/// on webhook bodies, so both sides of the cap are tried.
pub const MAX_HUGE_KIB: usize = 1100;

/// The deepest nesting a [`JsonChange::Nested`] builds (serde_json stops at 128).
pub const MAX_DEPTH: usize = 100_000;

/// One fuzz input: a seed and what to do to it.
#[derive(Debug, Clone, Arbitrary)]
pub struct Fuzzed {
    /// Which seed, modulo the number of seeds.
    pub seed: u16,
    /// Applied in order to the seed's bytes.
    #[arbitrary(with = some_mutations)]
    pub mutations: Vec<Mutation>,
    /// For targets whose body wraps a JSON document (Slack's `payload=` form field): `true`
    /// mutates the JSON and then wraps it, `false` wraps it and then mutates the wrapped bytes.
    pub mutate_inside: bool,
}

/// One to twelve mutations. (A derived `Vec` stops after each element with even odds, so
/// half the inputs would be the seed unchanged, which every target replays anyway.)
pub fn some_mutations(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Vec<Mutation>> {
    let count = u.int_in_range(1..=12)?;
    (0..count).map(|_| u.arbitrary()).collect()
}

/// One change to an input. Positions and lengths are taken modulo the input's size.
#[derive(Debug, Clone, Arbitrary)]
pub enum Mutation {
    FlipBit {
        at: u32,
        bit: u8,
    },
    SetByte {
        at: u32,
        byte: u8,
    },
    Truncate {
        at: u32,
    },
    Remove {
        at: u32,
        len: u16,
    },
    Insert {
        at: u32,
        bytes: Vec<u8>,
    },
    /// Repeats `len` bytes from `at` `times` times, in place.
    Repeat {
        at: u32,
        len: u8,
        times: u8,
    },
    /// Copies part of another seed into this one.
    Splice {
        other: u16,
        from: u32,
        len: u16,
        at: u32,
    },
    /// Replaces the whole input with random bytes.
    Random(Vec<u8>),
    /// Changes the `index`-th value (in document order) of the input, if it is JSON.
    Json {
        index: u16,
        change: JsonChange,
    },
}

/// A JSON-aware change to one value of a document.
#[derive(Debug, Clone, Arbitrary)]
pub enum JsonChange {
    /// A string of `kib` KiB (modulo [`MAX_HUGE_KIB`] + 1) of one repeated character.
    Huge {
        kib: u16,
        fill: char,
    },
    /// `depth` (modulo [`MAX_DEPTH`] + 1) nested arrays or objects.
    Nested {
        depth: u32,
        objects: bool,
    },
    Text(String),
    /// Text with what breaks naive handling: control characters, bidi overrides, NUL,
    /// lone surrogates as JSON escapes, markup and script links.
    Nasty(NastyText),
    Number(NumberText),
    Integer(i64),
    Bool(bool),
    Null,
    EmptyObject,
    EmptyArray,
    /// Removes the value (its key in an object, its element in an array).
    Remove,
    /// Puts the same value back under a duplicated key, or twice in its array.
    Duplicate,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum NastyText {
    Empty,
    Controls,
    Bidi,
    Nul,
    LoneSurrogate,
    Script,
    Markup,
    Newlines,
    Emoji,
    NotNormalised,
}

/// Number literals valid as JSON that do not fit the obvious Rust types.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum NumberText {
    Overflow,
    NegativeZero,
    HugeExponent,
    TinyExponent,
    ManyDigits,
    Negative,
    Fraction,
}

impl NastyText {
    /// The value as JSON text (it may hold escapes serde_json would never write).
    fn json(self) -> String {
        match self {
            NastyText::Empty => "\"\"".into(),
            NastyText::Controls => "\"a\\u0001\\u001b[31mb\\r\\n\\t\"".into(),
            NastyText::Bidi => "\"\u{202e}lmth.exe\u{202c}\u{2066}x\u{2069}\"".into(),
            NastyText::Nul => "\"\\u0000main\\u0000\"".into(),
            NastyText::LoneSurrogate => "\"\\ud800x\\udfff\"".into(),
            NastyText::Script => "\"javascript:alert(1)\"".into(),
            NastyText::Markup => "\"<script>alert(1)</script><a href=x>&amp;\\\"'\"".into(),
            NastyText::Newlines => "\"line\\nsecond\\u2028third\\u2029\"".into(),
            NastyText::Emoji => "\"\u{1f680}\u{200d}\u{1f469}\u{fe0f}\"".into(),
            NastyText::NotNormalised => "\"e\u{301}\u{fb01}\u{212b}\"".into(),
        }
    }
}

impl NumberText {
    fn json(self) -> &'static str {
        match self {
            NumberText::Overflow => "18446744073709551616",
            NumberText::NegativeZero => "-0",
            NumberText::HugeExponent => "1e999",
            NumberText::TinyExponent => "1e-999",
            NumberText::ManyDigits => "123456789012345678901234567890.123456789012345678901234567890",
            NumberText::Negative => "-9223372036854775809",
            NumberText::Fraction => "0.5",
        }
    }
}

impl Fuzzed {
    /// The mutated input, from `seeds` (which must not be empty). `wrap` is the target's
    /// wrapping of a JSON document into its body (the identity for plain JSON bodies).
    pub fn apply(&self, seeds: &[Vec<u8>], wrap: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
        let seed = &seeds[usize::from(self.seed) % seeds.len()];
        if self.mutate_inside {
            wrap(&mutate(seed.clone(), &self.mutations, seeds))
        } else {
            mutate(wrap(seed), &self.mutations, seeds)
        }
    }
}

/// No mutated input grows past this: twice the cap on webhook bodies, so inputs over the cap
/// are tried without one input's mutations adding up to gigabytes.
pub const MAX_INPUT: usize = 2 * 1024 * 1024;

/// Applies `mutations` to `input` in order. `seeds` are what [`Mutation::Splice`] copies
/// from (none: it does nothing).
pub fn mutate(mut input: Vec<u8>, mutations: &[Mutation], seeds: &[Vec<u8>]) -> Vec<u8> {
    for m in mutations {
        apply_one(&mut input, m, seeds);
        input.truncate(MAX_INPUT);
    }
    input
}

fn pos(at: u32, len: usize) -> usize {
    at as usize % (len + 1)
}

fn apply_one(input: &mut Vec<u8>, m: &Mutation, seeds: &[Vec<u8>]) {
    match m {
        Mutation::FlipBit { at, bit } => {
            if !input.is_empty() {
                let i = *at as usize % input.len();
                input[i] ^= 1 << (bit % 8);
            }
        }
        Mutation::SetByte { at, byte } => {
            if !input.is_empty() {
                let i = *at as usize % input.len();
                input[i] = *byte;
            }
        }
        Mutation::Truncate { at } => input.truncate(pos(*at, input.len())),
        Mutation::Remove { at, len } => {
            let start = pos(*at, input.len());
            let end = (start + usize::from(*len)).min(input.len());
            input.drain(start..end);
        }
        Mutation::Insert { at, bytes } => {
            let at = pos(*at, input.len());
            input.splice(at..at, bytes.iter().copied());
        }
        Mutation::Repeat { at, len, times } => {
            let start = pos(*at, input.len());
            let end = (start + usize::from(*len)).min(input.len());
            let part = input[start..end].to_vec();
            let copies: Vec<u8> = part
                .iter()
                .copied()
                .cycle()
                .take(part.len() * usize::from(*times))
                .collect();
            input.splice(end..end, copies);
        }
        Mutation::Splice { other, from, len, at } => {
            if seeds.is_empty() {
                return;
            }
            let other = &seeds[usize::from(*other) % seeds.len()];
            let from = pos(*from, other.len());
            let end = (from + usize::from(*len)).min(other.len());
            let at = pos(*at, input.len());
            input.splice(at..at, other[from..end].iter().copied());
        }
        Mutation::Random(bytes) => *input = bytes.clone(),
        Mutation::Json { index, change } => {
            if let Some(changed) = change_json(input, usize::from(*index), change) {
                *input = changed;
            }
        }
    }
}

/// A marker no real payload contains, put where the raw replacement text goes.
const MARKER: &str = "\u{1}slipway-fuzz-marker\u{1}";

/// Changes the `index`-th value (modulo the number of values) of `input` if it parses as JSON.
fn change_json(input: &[u8], index: usize, change: &JsonChange) -> Option<Vec<u8>> {
    let mut doc: Value = serde_json::from_slice(input).ok()?;
    let count = count_values(&doc);
    let target = index % count;
    let raw = replacement(change);
    let mut seen = 0;
    edit_nth(&mut doc, target, &mut seen, change, raw.is_some());
    let text = serde_json::to_string(&doc).ok()?;
    Some(match raw {
        Some(raw) => {
            let quoted = serde_json::to_string(MARKER).ok()?;
            text.replacen(&quoted, &raw, 1).into_bytes()
        }
        None => text.into_bytes(),
    })
}

fn count_values(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(count_values).sum(),
        Value::Object(map) => map.values().map(count_values).sum(),
        _ => 0,
    }
}

/// The raw JSON text the change puts in place of the marker, or `None` for changes made on
/// the document itself.
fn replacement(change: &JsonChange) -> Option<String> {
    Some(match change {
        JsonChange::Huge { kib, fill } => {
            let bytes = usize::from(*kib) % (MAX_HUGE_KIB + 1) * 1024;
            let fill = if fill.is_control() || *fill == '"' || *fill == '\\' {
                'x'
            } else {
                *fill
            };
            let count = bytes / fill.len_utf8();
            let mut s = String::with_capacity(bytes + 2);
            s.push('"');
            s.extend(std::iter::repeat_n(fill, count));
            s.push('"');
            s
        }
        JsonChange::Nested { depth, objects } => {
            let depth = *depth as usize % (MAX_DEPTH + 1);
            if *objects {
                format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
            } else {
                format!("{}{}", "[".repeat(depth), "]".repeat(depth))
            }
        }
        JsonChange::Nasty(text) => text.json(),
        JsonChange::Number(n) => n.json().to_owned(),
        _ => return None,
    })
}

/// Walks `v` in document order and changes the `target`-th value.
fn edit_nth(v: &mut Value, target: usize, seen: &mut usize, change: &JsonChange, raw: bool) -> bool {
    if *seen == target {
        if raw {
            *v = Value::String(MARKER.into());
        } else {
            replace_value(v, change);
        }
        return true;
    }
    *seen += 1;
    match v {
        Value::Array(items) => {
            for i in 0..items.len() {
                let child_index = *seen;
                if child_index == target && matches!(change, JsonChange::Remove | JsonChange::Duplicate) {
                    match change {
                        JsonChange::Remove => {
                            items.remove(i);
                        }
                        _ => {
                            let copy = items[i].clone();
                            items.insert(i, copy);
                        }
                    }
                    return true;
                }
                if edit_nth(&mut items[i], target, seen, change, raw) {
                    return true;
                }
            }
            false
        }
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_index = *seen;
                if child_index == target && matches!(change, JsonChange::Remove | JsonChange::Duplicate) {
                    match change {
                        JsonChange::Remove => {
                            map.remove(&key);
                        }
                        _ => {
                            // serde_json keeps one value per key: the duplicate goes under a
                            // key differing only in case, which a case-insensitive reader
                            // might take for the same.
                            if let Some(value) = map.get(&key).cloned() {
                                map.insert(key.to_uppercase(), value);
                            }
                        }
                    }
                    return true;
                }
                if let Some(child) = map.get_mut(&key)
                    && edit_nth(child, target, seen, change, raw)
                {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

fn replace_value(v: &mut Value, change: &JsonChange) {
    *v = match change {
        JsonChange::Text(s) => Value::String(s.clone()),
        JsonChange::Integer(i) => Value::from(*i),
        JsonChange::Bool(b) => Value::Bool(*b),
        JsonChange::Null => Value::Null,
        JsonChange::EmptyObject => Value::Object(Default::default()),
        JsonChange::EmptyArray => Value::Array(Vec::new()),
        // The root itself cannot be removed or duplicated: make it empty instead.
        JsonChange::Remove | JsonChange::Duplicate => Value::Null,
        // Raw changes are made through the marker.
        JsonChange::Huge { .. } | JsonChange::Nested { .. } | JsonChange::Nasty(_) | JsonChange::Number(_) => {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds() -> Vec<Vec<u8>> {
        vec![br#"{"a":{"b":[1,2]},"c":"x"}"#.to_vec(), b"other".to_vec()]
    }

    fn one(m: Mutation) -> String {
        String::from_utf8(mutate(seeds()[0].clone(), &[m], &seeds())).unwrap()
    }

    #[test]
    fn json_changes_reach_the_nth_value_in_document_order() {
        // 0: root, 1: a, 2: b, 3: 1, 4: 2, 5: c
        let set = |index, change| one(Mutation::Json { index, change });
        assert_eq!(set(3, JsonChange::Null), r#"{"a":{"b":[null,2]},"c":"x"}"#);
        assert_eq!(set(5, JsonChange::Bool(true)), r#"{"a":{"b":[1,2]},"c":true}"#);
        assert_eq!(set(4, JsonChange::Remove), r#"{"a":{"b":[1]},"c":"x"}"#);
        assert_eq!(set(1, JsonChange::Remove), r#"{"c":"x"}"#);
        assert_eq!(set(3, JsonChange::Duplicate), r#"{"a":{"b":[1,1,2]},"c":"x"}"#);
        assert_eq!(
            set(
                2,
                JsonChange::Nested {
                    depth: 3,
                    objects: false
                }
            ),
            r#"{"a":{"b":[[[]]]},"c":"x"}"#
        );
        assert_eq!(
            set(5, JsonChange::Number(NumberText::HugeExponent)),
            r#"{"a":{"b":[1,2]},"c":1e999}"#
        );
        let huge = set(5, JsonChange::Huge { kib: 2, fill: 'é' });
        assert_eq!(huge.len(), r#"{"a":{"b":[1,2]},"c":""}"#.len() + 2048);
        // Past the last value, the index wraps round to the root.
        assert_eq!(set(6, JsonChange::Null), "null");
    }

    #[test]
    fn byte_changes_stay_within_the_input() {
        assert_eq!(one(Mutation::Truncate { at: 4 }), r#"{"a""#);
        assert_eq!(one(Mutation::Remove { at: 0, len: 1000 }), "");
        assert_eq!(
            one(Mutation::Splice {
                other: 1,
                from: 0,
                len: 2,
                at: 0
            }),
            r#"ot{"a":{"b":[1,2]},"c":"x"}"#
        );
        assert_eq!(
            one(Mutation::Repeat {
                at: 0,
                len: 1,
                times: 2
            }),
            r#"{{{"a":{"b":[1,2]},"c":"x"}"#
        );
        assert_eq!(one(Mutation::FlipBit { at: 1, bit: 8 }), r#"{#a":{"b":[1,2]},"c":"x"}"#);
        // Not JSON: a JSON change leaves it alone.
        let text = mutate(
            b"not json".to_vec(),
            &[Mutation::Json {
                index: 0,
                change: JsonChange::Null,
            }],
            &seeds(),
        );
        assert_eq!(text, b"not json");
    }
}
