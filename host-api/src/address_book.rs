//! Plugins never see raw addresses. The address book replaces every name of an inventory host —
//! its address and each of its aliases — by a token in what flows into the sandbox (`conceal`):
//! `{{addr:HOST}}` for the address, `{{addr:HOST:KIND}}` for the alias of that kind (`dns`,
//! `fqdn`, …). It turns tokens back into those names in what flows out of it (`reveal`).
//! `reveal(conceal(x)) == x` for any text that does not already contain a token, so a plugin can
//! read a config file, edit a line and write it back without ever learning where the host is —
//! and still write "the new master's address, in the form this file uses" into SQL and files.
//!
//! Names match as whole words and exactly (case included): re-spelling a name would change
//! lines an edit never meant to touch.

use std::collections::BTreeMap;

use crate::inventory::Inventory;

#[derive(Debug, Clone, Default)]
pub struct AddressBook {
    /// (name, token, host), longest name first, so that `10.0.0.12` is replaced before
    /// `10.0.0.1` and `db1.example.com` before `db1`.
    by_name: Vec<(String, String, String)>,
    /// Token body (`HOST` or `HOST:KIND`) → the name it stands for.
    by_token: BTreeMap<String, String>,
}

const OPEN: &str = "{{addr:";
const CLOSE: &str = "}}";
/// What a plugin sees for a name of a host it was granted nothing on: that an inventory host
/// is named there, not which one (`?` is no valid inventory name).
pub const HIDDEN: &str = "{{addr:?}}";

impl AddressBook {
    pub fn new(inventory: &Inventory) -> Self {
        let mut by_name: Vec<(String, String, String)> = Vec::new();
        let mut by_token = BTreeMap::new();
        for (host_name, host) in &inventory.hosts {
            let names =
                std::iter::once((host_name.clone(), &host.address)).chain(host.aliases.iter().map(|(kind, value)| (format!("{host_name}:{kind}"), value)));
            for (body, name) in names {
                by_token.insert(body.clone(), name.clone());
                if !by_name.iter().any(|(known, ..)| known == name) {
                    by_name.push((name.clone(), format!("{OPEN}{body}{CLOSE}"), host_name.clone()));
                }
            }
        }
        by_name.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Self { by_name, by_token }
    }

    pub fn token(host: &str) -> String {
        format!("{OPEN}{host}{CLOSE}")
    }

    /// Replace every name of a host (as a whole word: not part of a longer name or number) by
    /// its token.
    pub fn conceal(&self, text: &str) -> String {
        self.conceal_for(text, &|_| true)
    }

    /// `conceal` for one plugin: the names of hosts it may not see become [`HIDDEN`].
    pub fn conceal_for(&self, text: &str, may_see: &dyn Fn(&str) -> bool) -> String {
        if self.by_name.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let bytes = text.as_bytes();
        let mut i = 0;
        'scan: while i < text.len() {
            for (name, token, host) in &self.by_name {
                if text[i..].starts_with(name.as_str()) && is_boundary_before(bytes, i) && is_boundary_after(bytes, i + name.len()) {
                    out.push_str(if may_see(host) { token } else { HIDDEN });
                    i += name.len();
                    continue 'scan;
                }
            }
            let c = text[i..].chars().next().unwrap_or('\0');
            out.push(c);
            i += c.len_utf8().max(1);
        }
        out
    }

    /// Replace every `{{addr:HOST}}` / `{{addr:HOST:KIND}}` token by the name it stands for. An
    /// unknown host or alias is an error: a plugin must not make the host send a token somewhere
    /// as if it were an address.
    pub fn reveal(&self, text: &str) -> Result<String, String> {
        self.reveal_for(text, &|_| true)
    }

    /// `reveal` for one plugin: a token of a host it may not see is refused exactly like a token
    /// of no host at all, so that the error tells nothing about what else the inventory holds.
    pub fn reveal_for(&self, text: &str, may_see: &dyn Fn(&str) -> bool) -> Result<String, String> {
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
            let body = &after[..end];
            let host = body.split_once(':').map_or(body, |(host, _)| host);
            let unknown = || format!("address token {OPEN}{body}{CLOSE} names no inventory host this plugin was granted anything on");
            if !may_see(host) {
                return Err(unknown());
            }
            match self.by_token.get(body) {
                Some(name) => out.push_str(name),
                None => {
                    return Err(match body.split_once(':') {
                        Some((host, kind)) if self.by_token.contains_key(host) => {
                            format!("address token {OPEN}{body}{CLOSE}: host {host} has no alias of kind {kind:?} in the inventory")
                        }
                        _ => unknown(),
                    });
                }
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
        // "10.0.0.1." ends a sentence; "10.0.0.1.5" is another address, "db1.example" a longer name.
        Some(b'.') => !bytes.get(end + 1).is_some_and(|b| is_word_byte(*b)),
        Some(b) => !is_word_byte(*b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> AddressBook {
        let inventory = Inventory::parse(
            "[hosts.a]\naddress = '10.0.0.1'\naliases = { dns = 'db-a', fqdn = 'db-a.corp.example', repl = '192.168.7.1' }\n[hosts.b]\naddress = '10.0.0.12'\n",
        )
        .expect("inventory");
        AddressBook::new(&inventory)
    }

    #[test]
    fn conceals_whole_addresses_only() {
        let book = book();
        let text = "host=10.0.0.1 port=5432, standby 10.0.0.12:5432, not 110.0.0.1 nor 10.0.0.123. end 10.0.0.1.";
        let concealed = book.conceal(text);
        assert_eq!(concealed, "host={{addr:a}} port=5432, standby {{addr:b}}:5432, not 110.0.0.1 nor 10.0.0.123. end {{addr:a}}.");
        assert_eq!(book.reveal(&concealed).expect("reveal"), text);
    }

    #[test]
    fn every_alias_of_a_host_gets_its_own_token_and_comes_back_as_written() {
        let book = book();
        let text = "fdb.hosts=db-a.corp.example,10.0.0.12\nrepl 192.168.7.1:5432 dns db-a; not db-a2, db-a.other or DB-A";
        let concealed = book.conceal(text);
        assert_eq!(concealed, "fdb.hosts={{addr:a:fqdn}},{{addr:b}}\nrepl {{addr:a:repl}}:5432 dns {{addr:a:dns}}; not db-a2, db-a.other or DB-A");
        assert_eq!(book.reveal(&concealed).expect("reveal"), text);
        assert_eq!(book.reveal("{{addr:a:fqdn}}").expect("alias"), "db-a.corp.example");
    }

    #[test]
    fn unknown_token_is_refused() {
        assert!(book().reveal("x {{addr:zz}}").is_err());
        let err = book().reveal("{{addr:b:fqdn}}").unwrap_err();
        assert!(err.contains("host b has no alias of kind \"fqdn\""), "{err}");
    }

    #[test]
    fn a_plugin_sees_and_sends_only_the_hosts_it_may_see() {
        let book = book();
        let only_a = |host: &str| host == "a";
        assert_eq!(book.conceal_for("a 10.0.0.1 b 10.0.0.12", &only_a), "a {{addr:a}} b {{addr:?}}");
        let hidden = book.reveal_for("{{addr:b}}", &only_a).expect_err("hidden");
        let absent = book.reveal_for("{{addr:zz}}", &only_a).expect_err("absent");
        assert_eq!(hidden.replace("{{addr:b}}", "T"), absent.replace("{{addr:zz}}", "T"), "the same words for a hidden and an absent host");
        assert!(book.reveal_for(HIDDEN, &only_a).is_err());
        assert_eq!(book.reveal_for("{{addr:a:dns}}", &only_a).expect("own alias"), "db-a");
    }

    #[test]
    fn a_name_given_to_two_hosts_is_refused() {
        let err = Inventory::parse("[hosts.a]\naddress='10.0.0.1'\naliases={dns='x'}\n[hosts.b]\naddress='10.0.0.2'\naliases={dns='x'}\n").unwrap_err();
        assert!(err.to_string().contains("\"x\" is given twice"), "{err}");
        let err = Inventory::parse("[hosts.a]\naddress='10.0.0.1'\naliases={'Bad Kind'='x'}\n").unwrap_err();
        assert!(err.to_string().contains("alias kind"), "{err}");
    }
}
