//! What reaches the operator's terminal is driven by opsh alone.
//!
//! Text that comes from a plugin — titles, cells, logs, progress, diffs, errors, crash output —
//! and from the systems it reads may carry control characters: ESC sequences that recolour,
//! hide, retitle, link or rewrite the screen, a carriage return that goes back to the start of
//! the line to overprint it, C1 controls some terminals obey like ESC, Unicode bidi overrides that
//! show characters in another order than they run. Every line opsh prints passes
//! [`Ink::line`], which makes all of them visible (`\x1b`, `\r`, `\u{202e}`); opsh's own colours
//! are written as a marker chosen at random when opsh starts (a plugin cannot know it) and become
//! ESC only after the line was made visible. JSON output keeps the exact strings instead, with
//! the characters JSON allows raw but terminals obey escaped as `\uXXXX` ([`Ink::json`]).

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};

use nu_ansi_term::Style;

/// opsh's own escape sequences, and the sink that puts them into already-visible text.
pub struct Ink {
    /// Stands for ESC in opsh's own styling until the line is written.
    marker: String,
}

impl Default for Ink {
    fn default() -> Self {
        Self::new()
    }
}

impl Ink {
    pub fn new() -> Self {
        // Four characters from Supplementary Private Use Area-B, 16 random bits each
        // (`RandomState` is keyed from the OS's randomness).
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let marker = (0..4).map(|i| char::from_u32(0x10_0000 + ((random >> (16 * i)) & 0xffff) as u32).unwrap_or('\u{10fffd}')).collect();
        Self { marker }
    }

    /// `text` in `style`, for a line that will go through [`Ink::line`].
    pub fn paint(&self, style: Style, text: &str) -> String {
        let trusted = |s: String| s.replace('\x1b', &self.marker);
        format!("{}{}{}", trusted(style.prefix().to_string()), visible(text, true), trusted(style.suffix().to_string()))
    }

    /// A line as the terminal gets it: every control character visible, then opsh's colours.
    pub fn line(&self, text: &str) -> String {
        let shown = visible(text, true);
        if shown.contains(self.marker.as_str()) { shown.replace(self.marker.as_str(), "\x1b") } else { shown }
    }

    /// A JSON document as printed: serde escapes C0 controls already; C1 controls, DEL, bidi
    /// controls and the Unicode line separators are escaped too (the strings stay exact).
    pub fn json(&self, document: &str) -> String {
        let mut out = String::with_capacity(document.len());
        for c in document.chars() {
            if dangerous(c) || c == '\u{7f}' {
                let _ = write!(out, "\\u{:04x}", c as u32);
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Characters a terminal acts on, other than newline and tab.
fn dangerous(c: char) -> bool {
    matches!(c as u32,
        0x00..=0x08 | 0x0b..=0x1f | 0x7f..=0x9f
        | 0x061c | 0x200e | 0x200f | 0x2028 | 0x2029 | 0x202a..=0x202e | 0x2066..=0x2069)
}

/// `text` with every control character shown as an escape: `\x1b`, `\r`, `\u{202e}`. Newlines
/// are kept when `keep_newlines`, else shown as `\n` (for one-line fields such as a title or a
/// table cell, where a newline could fake another step or row). Tabs are kept.
pub fn visible(text: &str, keep_newlines: bool) -> String {
    if !text.chars().any(|c| dangerous(c) || (c == '\n' && !keep_newlines)) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x100 && dangerous(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if dangerous(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// One line of plugin text: newlines shown as `\n` too.
pub fn one_line(text: &str) -> String {
    visible(text, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nu_ansi_term::Color;

    #[test]
    fn plugin_escapes_become_visible_and_opsh_colours_stay() {
        let ink = Ink::new();
        let hostile = "ANALYZE\r\x1b[2KDROP TABLE t; \x1b]0;pwned\x07 \u{9b}31m \u{202e}gnp.exe";
        let line = ink.line(&format!("{} {}", ink.paint(Color::Red.bold(), "FAILED"), ink.paint(Style::new().bold(), hostile)));
        assert_eq!(line.matches('\x1b').count(), 4, "only opsh's own two styles (prefix + reset each): {line:?}");
        assert!(line.contains("ANALYZE\\r\\x1b[2KDROP TABLE t; \\x1b]0;pwned\\x07 \\x9b31m \\u{202e}gnp.exe"), "{line:?}");
        assert!(!line.contains('\r') && !line.contains('\u{202e}') && !line.contains('\u{9b}'), "{line:?}");
    }

    #[test]
    fn a_plugin_cannot_forge_the_colour_marker() {
        let ink = Ink::new();
        // Whatever private-use text a plugin sends, it is not this process's marker.
        let forged = "\u{100000}\u{100000}\u{100000}\u{100000}[8m hidden";
        assert!(!ink.line(forged).contains('\x1b'));
    }

    #[test]
    fn one_line_fields_show_newlines_and_json_stays_exact() {
        assert_eq!(one_line("a\nb\tc"), "a\\nb\tc");
        let ink = Ink::new();
        let doc = serde_json::json!({ "title": "x\u{202e}y\u{9b}\r" }).to_string();
        let printed = ink.json(&doc);
        assert!(printed.is_ascii(), "{printed}");
        let back: serde_json::Value = serde_json::from_str(&printed).expect("still JSON");
        assert_eq!(back["title"], "x\u{202e}y\u{9b}\r");
    }
}
