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

/// The method (`scram-sha-256`, `md5`, …) of the first TCP rule (`host`, `hostssl`, `hostnossl`)
/// that would match `database` and `user` from some address: how this server authenticates that
/// user over the network, for a new rule of the same kind.
pub fn method_for(content: &str, database: &str, user: &str) -> Option<String> {
    content.lines().map(|l| l.split('#').next().unwrap_or("").split_whitespace().collect::<Vec<&str>>()).find_map(|f| {
        let tcp = matches!(f.first(), Some(&"host" | &"hostssl" | &"hostnossl"));
        let names = |field: &str, want: &str| field.split(',').any(|n| n == want || n == "all" || (n == "sameuser" && want == user));
        if tcp && f.len() >= 5 && names(f[1], database) && names(f[2], user) {
            // With an address and a mask in two fields, the method comes one later.
            let method = if f[3].contains('/') || !f.get(4).is_some_and(|m| m.contains('.') || m.contains(':')) { f[4] } else { *f.get(5)? };
            Some(method.to_string())
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{ensure, method_for};

    #[test]
    fn a_new_rule_takes_the_method_the_file_already_uses_for_that_user() {
        let hba = "local all all trust\nhost replication all 10.0.0.0/8 scram-sha-256\nhost edb,app xdbpub {{addr:srv}}/32 md5\nhost all all 0.0.0.0 0.0.0.0 scram-sha-256\n";
        assert_eq!(method_for(hba, "edb", "xdbpub").as_deref(), Some("md5"));
        assert_eq!(method_for(hba, "edb", "someone").as_deref(), Some("scram-sha-256"), "the `all` rule with an address and a mask");
        assert_eq!(method_for("local all all trust\n", "edb", "x"), None);
    }

    #[test]
    fn adds_a_missing_rule_once_and_keeps_the_rest() {
        let base = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        let added = ensure(base, "host edb pubuser 10.0.0.5/32 scram-sha-256", "xdb").expect("added");
        assert_eq!(added, format!("{base}# xdb\nhost edb pubuser 10.0.0.5/32 scram-sha-256\n"));
        assert_eq!(ensure(&added, "host edb pubuser 10.0.0.5/32 scram-sha-256", "xdb"), None, "idempotent");
        assert_eq!(ensure(base, "host edb pubuser 127.0.0.1/32 scram-sha-256", "xdb"), None, "an `all` rule covers it");
    }
}
