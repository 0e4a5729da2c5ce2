//! Plugins never see raw addresses. The address book replaces every inventory host's address by
//! the token `{{addr:HOST}}` in what flows into the sandbox (`conceal`) and turns tokens back into
//! addresses in what flows out of it (`reveal`). `reveal(conceal(x)) == x` for any text that does
//! not already contain a token, so a plugin can read a config file, edit a line and write it back
//! without ever learning where the host is — and still write "the new master's address" into SQL.

use std::collections::BTreeMap;

use crate::inventory::Inventory;

#[derive(Debug, Clone, Default)]
pub struct AddressBook {
    /// Longest address first, so that `10.0.0.12` is replaced before `10.0.0.1`.
    by_address: Vec<(String, String)>,
    by_host: BTreeMap<String, String>,
}

const OPEN: &str = "{{addr:";
const CLOSE: &str = "}}";

impl AddressBook {
    pub fn new(inventory: &Inventory) -> Self {
        let mut by_address: Vec<(String, String)> = Vec::new();
        let mut by_host = BTreeMap::new();
        for (name, host) in &inventory.hosts {
            by_host.insert(name.clone(), host.address.clone());
            if !by_address.iter().any(|(address, _)| address == &host.address) {
                by_address.push((host.address.clone(), name.clone()));
            }
        }
        by_address.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Self { by_address, by_host }
    }

    pub fn token(host: &str) -> String {
        format!("{OPEN}{host}{CLOSE}")
    }

    /// Replace every address (as a whole word: not part of a longer name or number) by its token.
    pub fn conceal(&self, text: &str) -> String {
        if self.by_address.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let bytes = text.as_bytes();
        let mut i = 0;
        'scan: while i < text.len() {
            for (address, host) in &self.by_address {
                if text[i..].starts_with(address.as_str()) && is_boundary_before(bytes, i) && is_boundary_after(bytes, i + address.len()) {
                    out.push_str(&Self::token(host));
                    i += address.len();
                    continue 'scan;
                }
            }
            let c = text[i..].chars().next().unwrap_or('\0');
            out.push(c);
            i += c.len_utf8().max(1);
        }
        out
    }

    /// Replace every `{{addr:HOST}}` token by the host's address. An unknown host is an error: a
    /// plugin must not make the host send a token somewhere as if it were an address.
    pub fn reveal(&self, text: &str) -> Result<String, String> {
        if !text.contains(OPEN) {
            return Ok(text.to_string());
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(OPEN) {
            out.push_str(&rest[..start]);
            let after = &rest[start + OPEN.len()..];
            let Some(end) = after.find(CLOSE) else {
                out.push_str(&rest[start..]);
                return Ok(out);
            };
            let host = &after[..end];
            match self.by_host.get(host) {
                Some(address) => out.push_str(address),
                None => return Err(format!("address token {OPEN}{host}{CLOSE} names no inventory host")),
            }
            rest = &after[end + CLOSE.len()..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `reveal` for display: an unknown token is left as it is.
    pub fn reveal_lossy(&self, text: &str) -> String {
        self.reveal(text).unwrap_or_else(|_| text.to_string())
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn is_boundary_before(bytes: &[u8], i: usize) -> bool {
    i == 0 || !(is_word_byte(bytes[i - 1]) || bytes[i - 1] == b'.')
}

fn is_boundary_after(bytes: &[u8], end: usize) -> bool {
    match bytes.get(end) {
        None => true,
        // "10.0.0.1." ends a sentence; "10.0.0.1.5" is another address.
        Some(b'.') => !bytes.get(end + 1).is_some_and(|b| is_word_byte(*b)),
        Some(b) => !is_word_byte(*b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> AddressBook {
        let inventory = Inventory::parse(
            "[hosts.a]\naddress = '10.0.0.1'\n[hosts.b]\naddress = '10.0.0.12'\n",
        )
        .expect("inventory");
        AddressBook::new(&inventory)
    }

    #[test]
    fn conceals_whole_addresses_only() {
        let book = book();
        let text = "host=10.0.0.1 port=5432, standby 10.0.0.12:5432, not 110.0.0.1 nor 10.0.0.123. end 10.0.0.1.";
        let concealed = book.conceal(text);
        assert_eq!(
            concealed,
            "host={{addr:a}} port=5432, standby {{addr:b}}:5432, not 110.0.0.1 nor 10.0.0.123. end {{addr:a}}."
        );
        assert_eq!(book.reveal(&concealed).expect("reveal"), text);
    }

    #[test]
    fn unknown_token_is_refused() {
        assert!(book().reveal("x {{addr:zz}}").is_err());
    }
}
