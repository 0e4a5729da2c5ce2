//! Hosts by every name they have. Inside the sandbox a host's address is `{{addr:HOST}}` and each
//! of its inventory aliases `{{addr:HOST:KIND}}` (`dns`, `fqdn`, …): a file, catalog or tool
//! output that names a host by its DNS name or another interface arrives with the host's token
//! all the same. These helpers answer "does this text name host X" for every form, find which
//! host a value names, and write a host in the form a file already uses.

use crate::{CommandError, host, inventory};

const OPEN: &str = "{{addr:";
const CLOSE: &str = "}}";

/// One host named in a text: the inventory host and which of its names (`None`: its address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    pub host: String,
    pub form: Option<String>,
}

impl Mention {
    /// The token as it stands in the text.
    pub fn token(&self) -> String {
        token(&self.host, self.form.as_deref())
    }
}

/// The token of `host` in `form` (`None`: the address).
pub fn token(host: &str, form: Option<&str>) -> String {
    match form {
        Some(kind) => format!("{OPEN}{host}:{kind}{CLOSE}"),
        None => format!("{OPEN}{host}{CLOSE}"),
    }
}

/// Every host token in `text`, in order.
pub fn mentions(text: &str) -> Vec<Mention> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find(CLOSE) else { break };
        let body = &after[..end];
        let (host, form) = match body.split_once(':') {
            Some((h, k)) => (h.to_string(), Some(k.to_string())),
            None => (body.to_string(), None),
        };
        found.push(Mention { host, form });
        rest = &after[end + CLOSE.len()..];
    }
    found
}

/// The host `value` names when it is exactly one token (e.g. a `node_host` or `db_host` column).
pub fn host_of(value: &str) -> Option<Mention> {
    let value = value.trim();
    let found = mentions(value);
    match found.as_slice() {
        [one] if value == one.token() => Some(one.clone()),
        _ => None,
    }
}

/// Does `text` name `host` by any of its names?
pub fn names_host(text: &str, host: &str) -> bool {
    mentions(text).iter().any(|m| m.host == host)
}

/// Every token of `host` that occurs in `text` (address and aliases), for edits that remove it.
pub fn tokens_of(text: &str, host: &str) -> Vec<String> {
    let mut tokens: Vec<String> = mentions(text).into_iter().filter(|m| m.host == host).map(|m| m.token()).collect();
    tokens.dedup();
    tokens.sort();
    tokens.dedup();
    tokens
}

/// The form `text` names hosts in: the form of its first mention of one of `hosts` (so a file
/// listing `db-a.corp,db-b.corp` is written with FQDNs). `None` when it names none of them.
pub fn form_used(text: &str, hosts: &[&str]) -> Option<Option<String>> {
    mentions(text).into_iter().find(|m| hosts.contains(&m.host.as_str())).map(|m| m.form)
}

/// The alias kinds the inventory gives `host`.
pub fn alias_kinds(host_name: &str) -> Result<Vec<String>, CommandError> {
    let info = host::lookup(host_name)?;
    Ok(inventory::attr(&info, "aliases").unwrap_or("").split(',').filter(|k| !k.is_empty()).map(str::to_string).collect())
}

/// `host` written in `form`: its token in that form, or an error saying which alias the
/// inventory lacks (a value must not change the form a file or catalog uses).
pub fn in_form(host_name: &str, form: Option<&str>) -> Result<String, CommandError> {
    match form {
        None => Ok(token(host_name, None)),
        Some(kind) => {
            if alias_kinds(host_name)?.iter().any(|k| k == kind) {
                Ok(token(host_name, Some(kind)))
            } else {
                Err(CommandError::Refused(crate::text(
                    &format!(
                        "this file names hosts by their `{kind}` name, and host {host_name} has none in the inventory: add `aliases = {{ {kind} = \"…\" }}` to [hosts.{host_name}]"
                    ),
                    &format!(
                        "このファイルはホストを `{kind}` 名で指定していますが、ホスト {host_name} にはその別名がありません。[hosts.{host_name}] に aliases を追加してください"
                    ),
                )))
            }
        }
    }
}

/// One of `host`'s names that is an IP address, as a token, with the CIDR suffix of a single
/// address (`/32`, `/128`): its address if it is one, else an IP alias. `None` when the inventory
/// knows it only by name.
pub fn ip_address(host_name: &str) -> Result<Option<(String, &'static str)>, CommandError> {
    let info = host::lookup(host_name)?;
    let suffix = |kind: Option<&str>| match kind {
        Some("ipv4") => Some("/32"),
        Some("ipv6") => Some("/128"),
        _ => None,
    };
    if let Some(s) = suffix(inventory::attr(&info, "address-kind")) {
        return Ok(Some((token(host_name, None), s)));
    }
    for kind in inventory::attr(&info, "aliases").unwrap_or("").split(',').filter(|k| !k.is_empty()) {
        if let Some(s) = suffix(inventory::attr(&info, &format!("alias.{kind}.kind"))) {
            return Ok(Some((token(host_name, Some(kind)), s)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hosts_by_any_of_their_names() {
        let text = "fdb.hosts={{addr:ta1:fqdn}},{{addr:ta2:fqdn}}\nother={{addr:sp1}}";
        assert!(names_host(text, "ta1") && names_host(text, "sp1") && !names_host(text, "sp2"));
        assert_eq!(tokens_of(text, "ta1"), vec!["{{addr:ta1:fqdn}}".to_string()]);
        assert_eq!(form_used(text, &["ta2"]), Some(Some("fqdn".to_string())));
        assert_eq!(form_used(text, &["sp1"]), Some(None));
        assert_eq!(form_used(text, &["zz"]), None);
    }

    #[test]
    fn a_value_names_a_host_only_when_it_is_exactly_one_token() {
        assert_eq!(host_of(" {{addr:otb2:dns}} "), Some(Mention { host: "otb2".into(), form: Some("dns".into()) }));
        assert_eq!(host_of("{{addr:otb2}}").map(|m| m.host), Some("otb2".into()));
        assert_eq!(host_of("localhost"), None);
        assert_eq!(host_of("{{addr:a}},{{addr:b}}"), None);
    }
}
