//! Quoting for SQL text built by runbooks (identifiers and literals, as `quote_ident` and
//! `quote_literal` do in PostgreSQL), and for a word of a POSIX shell script whose text the
//! plan shows. Prefer parameters (SQL) and positional arguments (`sh -c SCRIPT NAME ARGS…`)
//! where the reader does not need the value inside the text.

pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// One word for a POSIX shell: as it is when it holds nothing the shell would interpret, else
/// in single quotes (a `'` inside becomes `'\''`).
pub fn shell(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if plain { word.to_string() } else { format!("'{}'", word.replace('\'', "'\\''")) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_shell_word_is_quoted_only_when_the_shell_would_read_it_otherwise() {
        assert_eq!(super::shell("/usr/local/opentenbase/data/dn01"), "/usr/local/opentenbase/data/dn01");
        assert_eq!(super::shell("/srv/dn 01"), "'/srv/dn 01'");
        assert_eq!(super::shell("a'b;$(x)"), "'a'\\''b;$(x)'");
        assert_eq!(super::shell(""), "''");
    }
}
