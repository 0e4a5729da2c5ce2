//! `pg_hba.conf` edits a runbook needs: make sure a rule admitting a role exists, leaving every
//! other line as it is.

/// `content` with `rule` (e.g. `host edb pubuser 10.0.0.5/32 scram-sha-256`) appended, or `None`
/// when a rule for the same connection type, database, user and address is already there (or
/// one for `all` databases / users from that address).
pub fn ensure(content: &str, rule: &str, comment: &str) -> Option<String> {
    let want: Vec<&str> = rule.split_whitespace().collect();
    let covered = content.lines().map(|l| l.split('#').next().unwrap_or("").split_whitespace().collect::<Vec<&str>>()).any(|have| {
        have.len() >= 4
            && want.len() >= 4
            && have[0] == want[0]
            && (have[1] == want[1] || have[1] == "all")
            && (have[2] == want[2] || have[2] == "all")
            && have[3] == want[3]
    });
    if covered {
        return None;
    }
    let mut out = content.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("# {comment}\n{rule}\n"));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::ensure;

    #[test]
    fn adds_a_missing_rule_once_and_keeps_the_rest() {
        let base = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        let added = ensure(base, "host edb pubuser 10.0.0.5/32 scram-sha-256", "xdb").expect("added");
        assert_eq!(added, format!("{base}# xdb\nhost edb pubuser 10.0.0.5/32 scram-sha-256\n"));
        assert_eq!(ensure(&added, "host edb pubuser 10.0.0.5/32 scram-sha-256", "xdb"), None, "idempotent");
        assert_eq!(ensure(base, "host edb pubuser 127.0.0.1/32 scram-sha-256", "xdb"), None, "an `all` rule covers it");
    }
}
