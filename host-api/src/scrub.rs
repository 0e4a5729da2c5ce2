//! Known secrets out of everything that crosses into a plugin or reaches the operator: the
//! passwords the inventory resolves, written as they are and in the encodings a command would
//! turn them into — hex (either case), URL-encoding, base64 (standard and URL-safe) at each of
//! the three alignments it can take inside a longer base64 text. Each form is replaced by
//! [`MARKER`].
//!
//! This is a net under the real rule (plugins are never handed a secret; a command gets one
//! only while applying): it does not catch a secret that a command the plugin runs transforms
//! some other way (reversed, spaced out, enciphered). README's security model says so.

use std::borrow::Cow;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

use crate::inventory::Secret;

/// What a secret is replaced by.
pub const MARKER: &str = "********";

/// A secret shorter than this is not replaced as it is (it would match ordinary text)...
const SHORTEST: usize = 4;
/// ... nor encoded below this (a 2-byte secret's hex would match inside any hash).
const SHORTEST_ENCODED: usize = 6;

#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    /// Every form of every secret, longest first (a longer form contains shorter ones).
    forms: Vec<Vec<u8>>,
    /// The base64 forms, also looked for across line breaks (`base64` and PostgreSQL's
    /// `encode(…, 'base64')` wrap at 76 characters).
    wrapped: Vec<Vec<u8>>,
}

impl Scrubber {
    pub fn new(secrets: &[Secret]) -> Self {
        let mut forms = Vec::new();
        let mut wrapped = Vec::new();
        for secret in secrets.iter().map(|s| s.expose().as_bytes()).filter(|s| s.len() >= SHORTEST) {
            forms.push(secret.to_vec());
            if secret.len() >= SHORTEST_ENCODED {
                forms.extend(encoded_forms(secret));
                for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
                    wrapped.extend(base64_cores(secret, &engine));
                }
            }
        }
        for list in [&mut forms, &mut wrapped] {
            list.retain(|f| f.len() >= SHORTEST);
            list.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
            list.dedup();
        }
        Self { forms, wrapped }
    }

    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.holds_secret(text) {
            return Cow::Borrowed(text);
        }
        // Replacing whole UTF-8 sequences by ASCII keeps the text valid UTF-8.
        Cow::Owned(String::from_utf8_lossy(&self.scrub_bytes(text.as_bytes().to_vec())).into_owned())
    }

    pub fn scrub_bytes(&self, mut bytes: Vec<u8>) -> Vec<u8> {
        for form in &self.forms {
            if contains(&bytes, form) {
                bytes = replace(&bytes, form, MARKER.as_bytes());
            }
        }
        if bytes.contains(&b'\n') {
            bytes = self.unwrap_scrub(bytes);
        }
        bytes
    }

    /// Base64 forms split by line breaks: looked for in the text without its line breaks, and
    /// the span they cover in the text replaced.
    fn unwrap_scrub(&self, bytes: Vec<u8>) -> Vec<u8> {
        if self.wrapped.is_empty() {
            return bytes;
        }
        let (joined, at): (Vec<u8>, Vec<usize>) = bytes.iter().enumerate().filter(|(_, b)| **b != b'\n' && **b != b'\r').map(|(i, b)| (*b, i)).unzip();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for form in &self.wrapped {
            for start in memchr::memmem::find_iter(&joined, form) {
                spans.push((at[start], at[start + form.len() - 1] + 1));
            }
        }
        if spans.is_empty() {
            return bytes;
        }
        spans.sort_unstable();
        let mut out = Vec::with_capacity(bytes.len());
        let mut last = 0;
        for (start, end) in spans {
            if start < last {
                last = last.max(end);
                continue;
            }
            out.extend_from_slice(&bytes[last..start]);
            out.extend_from_slice(MARKER.as_bytes());
            last = end;
        }
        out.extend_from_slice(&bytes[last..]);
        out
    }

    /// Does the text hold a secret, as it is or encoded?
    pub fn holds_secret(&self, text: &str) -> bool {
        self.forms.iter().any(|f| contains(text.as_bytes(), f)) || (text.contains('\n') && self.unwrap_scrub(text.as_bytes().to_vec()) != text.as_bytes())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut last = 0;
    for at in memchr::memmem::find_iter(haystack, needle) {
        if at < last {
            continue;
        }
        out.extend_from_slice(&haystack[last..at]);
        out.extend_from_slice(with);
        last = at + needle.len();
    }
    out.extend_from_slice(&haystack[last..]);
    out
}

/// The secret's encodings: hex, URL-encoding, JSON string escaping, base64.
fn encoded_forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![hex::encode(secret).into_bytes(), hex::encode_upper(secret).into_bytes()];
    if let Ok(text) = std::str::from_utf8(secret)
        && let Ok(json) = serde_json::to_string(text)
    {
        forms.push(json.trim_matches('"').as_bytes().to_vec());
    }
    for upper in [true, false] {
        for plus in [true, false] {
            forms.push(url_encoded(secret, upper, plus, false).into_bytes());
            // As Python's quote() and others write it: '/' kept.
            forms.push(url_encoded(secret, upper, plus, true).into_bytes());
        }
        // Every byte as %XX, as some encoders (and `od | sed`) write it.
        forms.push(secret.iter().map(|b| if upper { format!("%{b:02X}") } else { format!("%{b:02x}") }).collect::<String>().into_bytes());
    }
    for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        forms.extend(base64_cores(secret, &engine));
    }
    forms
}

/// `%XX` for every byte but unreserved ones (and `/` if `slash`); a space as `+` or `%20`.
fn url_encoded(secret: &[u8], upper: bool, plus: bool, slash: bool) -> String {
    let mut out = String::new();
    for &b in secret {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            b'/' if slash => out.push('/'),
            b' ' if plus => out.push('+'),
            _ if upper => out.push_str(&format!("%{b:02X}")),
            _ => out.push_str(&format!("%{b:02x}")),
        }
    }
    out
}

/// The base64 characters that depend on the secret's bytes alone, for the secret starting at
/// byte offset 0, 1 and 2 of a 3-byte group: whatever surrounds it, these appear.
fn base64_cores(secret: &[u8], engine: &impl base64::Engine) -> Vec<Vec<u8>> {
    (0..3usize)
        .filter_map(|offset| {
            let mut padded = vec![0u8; offset];
            padded.extend_from_slice(secret);
            let encoded = engine.encode(&padded).into_bytes();
            // Character j covers bits 6j..6j+6; keep those inside the secret's bits.
            let (first_bit, end_bit) = (offset * 8, (offset + secret.len()) * 8);
            let first = first_bit.div_ceil(6);
            let end = end_bit / 6;
            (end > first && end <= encoded.len()).then(|| encoded[first..end].to_vec())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::tests_support::secret;
    use base64::Engine as _;

    #[test]
    fn a_secret_is_caught_as_it_is_and_in_its_common_encodings_wherever_it_sits() {
        let scrubber = Scrubber::new(&[secret("s3cr3t pa/ss+w")]);
        let raw = "s3cr3t pa/ss+w";
        let mut leaks = vec![raw.to_string(), hex::encode(raw), hex::encode_upper(raw), "s3cr3t+pa%2Fss%2Bw".into(), "s3cr3t%20pa%2fss%2bw".into()];
        leaks.push(raw.bytes().map(|b| format!("%{b:02x}")).collect());
        for prefix in ["", "x", "xy", "xyz"] {
            let text = format!("{prefix}{raw}\n");
            leaks.push(base64::engine::general_purpose::STANDARD.encode(&text));
            leaks.push(base64::engine::general_purpose::URL_SAFE.encode(&text));
        }
        for leak in leaks {
            let text = format!("before {leak} after");
            let scrubbed = scrubber.scrub(&text);
            assert!(scrubbed.contains(MARKER), "{leak} not caught: {scrubbed}");
            for form in encoded_forms(raw.as_bytes()).iter().chain(std::iter::once(&raw.as_bytes().to_vec())).filter(|f| f.len() >= 6) {
                assert!(!contains(scrubbed.as_bytes(), form), "{scrubbed} still holds {}", String::from_utf8_lossy(form));
            }
        }
        assert_eq!(scrubber.scrub("nothing here"), "nothing here");
        assert!(scrubber.holds_secret("x s3cr3t pa/ss+w y"));
    }

    #[test]
    fn wrapped_base64_json_escapes_and_short_secrets() {
        let scrubber = Scrubber::new(&[secret("a\"quoted\\secret"), secret("xy")]);
        let long = format!("{}a\"quoted\\secret{}", "p".repeat(70), "q".repeat(40));
        let encoded = base64::engine::general_purpose::STANDARD.encode(&long);
        let wrapped: String = encoded.as_bytes().chunks(76).map(|c| format!("{}\n", String::from_utf8_lossy(c))).collect();
        let scrubbed = scrubber.scrub(&wrapped);
        assert!(scrubbed.contains(MARKER), "wrapped base64 caught: {scrubbed}");
        let json = serde_json::to_string("a\"quoted\\secret").expect("json");
        assert!(scrubber.scrub(&format!("{{\"v\":{json}}}")).contains(MARKER), "JSON-escaped caught");
        // A 2-byte secret is replaced nowhere: its hex would match inside any hash.
        assert_eq!(scrubber.scrub("7879 sha 78797879"), "7879 sha 78797879");
    }

    #[test]
    fn bytes_that_are_not_text_are_scrubbed_too() {
        let scrubber = Scrubber::new(&[secret("hunter22")]);
        let scrubbed = scrubber.scrub_bytes(b"\xff\xfehunter22\x00".to_vec());
        assert_eq!(scrubbed, b"\xff\xfe********\x00");
    }
}
