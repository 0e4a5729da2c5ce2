//! Editing Java-style `.properties` text (`key=value` lines, `#` comments) the way an operator
//! does in vi: only the lines that must change, everything else byte for byte.

/// The value of `key`, if a line sets it.
pub fn get<'a>(content: &'a str, key: &str) -> Option<&'a str> {
    content.lines().filter_map(entry).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// Set `key` to `value` on the line that sets it; an error if no line does (a config file
/// without the key is not the file the runbook was written for).
pub fn set(content: &str, key: &str, value: &str) -> Result<String, String> {
    // A line break would add lines the edit never meant (`x\nother.key=y`); a key that is not
    // one would match lines that are not its own.
    if key.is_empty() || key.trim() != key || key.contains(['=', '\n', '\r']) || key.starts_with(['#', '!']) {
        return Err(format!("{key:?} is not a property name"));
    }
    if value.contains(['\n', '\r']) {
        return Err(format!("the value for {key} holds a line break: it would add lines to the file"));
    }
    let mut found = false;
    let lines: Vec<String> = content
        .split_inclusive('\n')
        .map(|line| match entry(line) {
            Some((k, _)) if k == key => {
                found = true;
                let ending = if line.ends_with('\n') { "\n" } else { "" };
                format!("{key}={value}{ending}")
            }
            _ => line.to_string(),
        })
        .collect();
    if found { Ok(lines.concat()) } else { Err(format!("no line sets {key}")) }
}

/// Remove `address` from every comma-separated host list in the values (`a,b` → `b`,
/// `//a:5432,b:5432/db` → `//b:5432/db`). A value in which `address` is the only host is an
/// error: removing it would leave the service with no database at all.
pub fn remove_address(content: &str, address: &str) -> Result<String, String> {
    // A host name, an IP address (v6 in brackets) or an address token; nothing that could
    // reach past its list item (`,`, `=`, a line break).
    if address.is_empty() || !address.chars().all(|c| c.is_alphanumeric() || ".-_:[]%{}".contains(c)) {
        return Err(format!("{address:?} is not a host name or address"));
    }
    let mut out = String::with_capacity(content.len());
    for (number, line) in content.split_inclusive('\n').enumerate() {
        if entry(line).is_none() || !line.contains(address) {
            out.push_str(line);
            continue;
        }
        let mut line = line.to_string();
        while let Some(start) = line.find(address) {
            // The list item: the address and an optional `:port`.
            let mut end = start + address.len();
            let rest = &line[end..];
            if let Some(port) = rest.strip_prefix(':') {
                end += 1 + port.chars().take_while(char::is_ascii_digit).count();
            }
            if line[..start].ends_with(',') {
                line.replace_range(start - 1..end, "");
            } else if line[end..].starts_with(',') {
                line.replace_range(start..end + 1, "");
            } else {
                return Err(format!("line {} names {address} as its only host: `{}`", number + 1, line.trim_end()));
            }
        }
        out.push_str(&line);
    }
    Ok(out)
}

/// Every host a value lists — a `*.hosts` list (`a,b`) or the host part of a JDBC URL
/// (`jdbc:postgresql://a:5432,b:5432/db`) — as written, without its `:port`: (line number, key,
/// host). A runbook checks that each names an inventory host before it trusts "the file does not
/// name X".
pub fn listed_hosts(content: &str) -> Vec<(usize, String, String)> {
    let mut found = Vec::new();
    for (number, line) in content.lines().enumerate() {
        let Some((key, value)) = entry(line) else { continue };
        let hosts = if key.ends_with(".hosts") {
            Some(value)
        } else {
            value.strip_prefix("jdbc:postgresql://").map(|rest| rest.split(['/', '?']).next().unwrap_or(""))
        };
        for item in hosts.unwrap_or("").split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let host = strip_port(item);
            found.push((number + 1, key.to_string(), host.to_string()));
        }
    }
    found
}

/// `host:5432` → `host`, `[::1]:5432` → `[::1]`; a bare IPv6 address is left as it is.
fn strip_port(item: &str) -> &str {
    match item.rsplit_once(':') {
        // (a host token `{{addr:a:fqdn}}` has colons of its own)
        Some((host, port))
            if port.chars().all(|c| c.is_ascii_digit()) && !port.is_empty() && (!host.contains(':') || host.ends_with(']') || host.ends_with("}}")) =>
        {
            host
        }
        _ => item,
    }
}

/// A JDBC PostgreSQL URL pointed at one host and port, everything else (database, parameters)
/// kept: `jdbc:postgresql://a:5432/avdb?ssl=true` → `jdbc:postgresql://HOST:PORT/avdb?ssl=true`.
pub fn jdbc_url_at(url: &str, host: &str, port: &str) -> Result<String, String> {
    let rest = url.strip_prefix("jdbc:postgresql://").ok_or_else(|| format!("{url:?} is not a jdbc:postgresql:// URL"))?;
    let tail = rest.find(['/', '?']).map(|i| &rest[i..]).unwrap_or("");
    Ok(format!("jdbc:postgresql://{host}:{port}{tail}"))
}

/// The port a JDBC URL gives its (first) host, if any.
pub fn jdbc_port(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("jdbc:postgresql://")?;
    let first = rest.split(['/', '?', ',']).next()?;
    first.rsplit_once(':').map(|(_, p)| p).filter(|p| p.chars().all(|c| c.is_ascii_digit()))
}

fn entry(line: &str) -> Option<(&str, &str)> {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') || trimmed.starts_with('!') {
        return None;
    }
    let (key, value) = trimmed.split_once('=')?;
    Some((key.trim(), value.trim_end_matches(['\n', '\r'])))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `scripts/fuzz` (target properties): a value with a line break added a line.
    #[test]
    fn set_refuses_what_would_add_or_match_other_lines() {
        let content = "db.host=a\n= orphan\n";
        assert!(set(content, "db.host", "b\nadmin.password=x").is_err());
        assert!(set(content, "", "x").is_err(), "the empty key of `= orphan` is no property name");
        assert!(set(content, " db.host", "b").is_err());
        assert_eq!(set(content, "db.host", "b").as_deref(), Ok("db.host=b\n= orphan\n"));
        // An "address" with a line break removed it and joined two lines.
        assert!(remove_address("a.hosts=x,y\nb=1\n", "y\n").is_err());
        assert!(remove_address("k=v,\n", "k=v").is_err(), "an `address` with `=` emptied the line");
        assert_eq!(remove_address("a.hosts={{addr:x}},{{addr:y}}\n", "{{addr:y}}").as_deref(), Ok("a.hosts={{addr:x}}\n"));
    }

    const FDB: &str = "# fabric\nfdb.hosts=A,B\nfdb.url=jdbc:postgresql://A:5432,B:5432/fdb?ssl=true\nfdb.port=5432\n";

    #[test]
    fn removes_the_address_from_every_list_and_keeps_the_rest() {
        assert_eq!(remove_address(FDB, "A").as_deref(), Ok("# fabric\nfdb.hosts=B\nfdb.url=jdbc:postgresql://B:5432/fdb?ssl=true\nfdb.port=5432\n"));
        assert_eq!(remove_address(FDB, "B").as_deref(), Ok("# fabric\nfdb.hosts=A\nfdb.url=jdbc:postgresql://A:5432/fdb?ssl=true\nfdb.port=5432\n"));
        assert_eq!(remove_address(FDB, "C").as_deref(), Ok(FDB));
        assert_eq!(remove_address("# A,B\n", "A").as_deref(), Ok("# A,B\n"), "comments are left alone");
    }

    #[test]
    fn refuses_to_leave_a_value_without_a_host() {
        let err = remove_address("x=1\nfdb.hosts=A\n", "A").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn lists_every_host_of_host_lists_and_jdbc_urls() {
        let text = "# x=1\nfdb.hosts=A, b.corp:5433\nfdb.url=jdbc:postgresql://A:5432,[::1]:5432,{{addr:c:fqdn}}:6432/fdb?ssl=true\nfdb.port=5432\n";
        let hosts: Vec<(usize, String)> = listed_hosts(text).into_iter().map(|(n, _, h)| (n, h)).collect();
        assert_eq!(hosts, vec![(2, "A".into()), (2, "b.corp".into()), (3, "A".into()), (3, "[::1]".into()), (3, "{{addr:c:fqdn}}".into())]);
        assert_eq!(jdbc_url_at("jdbc:postgresql://A:5432/avdb?ssl=true", "B", "6432").as_deref(), Ok("jdbc:postgresql://B:6432/avdb?ssl=true"));
        assert_eq!(jdbc_port("jdbc:postgresql://A:5433/avdb"), Some("5433"));
        assert!(jdbc_url_at("postgres://x", "B", "1").is_err());
    }

    #[test]
    fn sets_only_the_named_key() {
        let text = "db.jdbc.url=jdbc:postgresql://A:5432/avdb\ndb.fdb.jdbc.url=jdbc:postgresql://A:5432/fdb\n";
        assert_eq!(set(text, "db.jdbc.url", "X").as_deref(), Ok("db.jdbc.url=X\ndb.fdb.jdbc.url=jdbc:postgresql://A:5432/fdb\n"));
        assert_eq!(get(text, "db.fdb.jdbc.url"), Some("jdbc:postgresql://A:5432/fdb"));
        assert!(set(text, "missing", "X").is_err());
    }
}
