//! Quoting for SQL text built by runbooks (identifiers and literals, as `quote_ident` and
//! `quote_literal` do in PostgreSQL). Prefer parameters where the statement allows them.

pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
