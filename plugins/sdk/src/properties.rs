//! Editing Java-style `.properties` text (`key=value` lines, `#` comments) the way an operator
//! does in vi: only the lines that must change, everything else byte for byte.

/// The value of `key`, if a line sets it.
pub fn get<'a>(content: &'a str, key: &str) -> Option<&'a str> {
    content.lines().filter_map(entry).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// Set `key` to `value` on the line that sets it; an error if no line does (a config file
/// without the key is not the file the runbook was written for).
pub fn set(content: &str, key: &str, value: &str) -> Result<String, String> {
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
    fn sets_only_the_named_key() {
        let text = "db.jdbc.url=jdbc:postgresql://A:5432/avdb\ndb.fdb.jdbc.url=jdbc:postgresql://A:5432/fdb\n";
        assert_eq!(set(text, "db.jdbc.url", "X").as_deref(), Ok("db.jdbc.url=X\ndb.fdb.jdbc.url=jdbc:postgresql://A:5432/fdb\n"));
        assert_eq!(get(text, "db.fdb.jdbc.url"), Some("jdbc:postgresql://A:5432/fdb"));
        assert!(set(text, "missing", "X").is_err());
    }
}
