//! PostgreSQL facts a runbook reasons with, whatever the product built on it: WAL positions,
//! libpq connection strings, and how a standby is configured in each server major (a
//! `recovery.conf` up to 11 — OpenTenBase is built on 10 — and `standby.signal` plus settings from
//! 12 on).

use std::cmp::Ordering;
use std::fmt;

/// A WAL position (`pg_lsn`, written `X/Y`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub fn parse(text: &str) -> Option<Lsn> {
        let (high, low) = text.trim().split_once('/')?;
        let high = u64::from_str_radix(high, 16).ok()?;
        let low = u64::from_str_radix(low, 16).ok()?;
        (high <= u32::MAX as u64 && low <= u32::MAX as u64).then_some(Lsn((high << 32) | low))
    }

    /// Bytes from `self` forward to `later` (0 when `later` is not ahead).
    pub fn bytes_to(self, later: Lsn) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The server major of a `server_version_num` (100000 → 10, 150004 → 15; 9.6's 90624 → 9).
pub fn major(version_num: u32) -> u32 {
    version_num / 10_000
}

/// A libpq keyword/value connection string, in order (`host=a port=5432 user='x y'`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conninfo(pub Vec<(String, String)>);

impl Conninfo {
    /// Parse keyword/value pairs (single-quoted values with `\'` and `\\`, as libpq reads them).
    pub fn parse(text: &str) -> Result<Conninfo, String> {
        let mut pairs = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek().is_none() {
                break;
            }
            let mut key = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' || c.is_whitespace() {
                    break;
                }
                key.push(c);
                chars.next();
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.next() != Some('=') {
                return Err(format!("missing \"=\" after {key:?} in the connection string"));
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let mut value = String::new();
            if chars.peek() == Some(&'\'') {
                chars.next();
                loop {
                    match chars.next() {
                        Some('\\') => value.extend(chars.next()),
                        Some('\'') => break,
                        Some(c) => value.push(c),
                        None => return Err(format!("unterminated quoted value for {key:?}")),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    if c == '\\' {
                        chars.next();
                        value.extend(chars.next());
                        continue;
                    }
                    value.push(c);
                    chars.next();
                }
            }
            if key.is_empty() {
                return Err("empty keyword in the connection string".into());
            }
            pairs.push((key, value));
        }
        Ok(Conninfo(pairs))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Set `key` (replacing every earlier setting of it).
    pub fn set(&mut self, key: &str, value: &str) {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_string(), value.to_string()));
    }

    pub fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    /// The same connection to another server: host and port replaced, the settings a standby's
    /// `primary_conninfo` is written with kept (a WAL receiver shows every libpq default too), and
    /// nothing secret (a password, or the `********` a server shows in its place, never goes into
    /// a config file: the standby's login uses its server user's ~/.pgpass).
    pub fn pointed_at(&self, host: &str, port: u16) -> Conninfo {
        const KEPT: &[&str] = &[
            "user",
            "passfile",
            "application_name",
            "sslmode",
            "sslrootcert",
            "sslcert",
            "sslkey",
            "sslcrl",
            "connect_timeout",
            "keepalives",
            "keepalives_idle",
            "keepalives_interval",
            "keepalives_count",
            "options",
        ];
        let mut next = Conninfo(vec![("host".into(), host.to_string()), ("port".into(), port.to_string())]);
        next.0.extend(self.0.iter().filter(|(k, v)| KEPT.contains(&k.as_str()) && !(v.len() > 1 && v.chars().all(|c| c == '*'))).cloned());
        next
    }
}

impl fmt::Display for Conninfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (key, value) in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let plain = !value.is_empty() && value.chars().all(|c| !c.is_whitespace() && c != '\'' && c != '\\');
            if plain {
                write!(f, "{key}={value}")?;
            } else {
                write!(f, "{key}='{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))?;
            }
        }
        Ok(())
    }
}

/// How a standby of a given server major is told where its master is: the files to write in its
/// data directory, and the settings appended to `postgresql.auto.conf` (empty up to 11, where
/// they are not settings at all and the server refuses to start if they are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyConfig {
    /// (file name in the data directory, its whole content).
    pub files: Vec<(String, String)>,
    /// Lines for `postgresql.auto.conf`, which replace any earlier setting of the same names.
    pub auto_conf: Vec<String>,
}

/// A standby following `conninfo` (optionally through replication slot `slot`), following the
/// newest timeline (the master it follows may have been promoted).
pub fn standby_config(major: u32, conninfo: &Conninfo, slot: Option<&str>) -> StandbyConfig {
    let quoted = |v: &str| format!("'{}'", v.replace('\'', "''"));
    let mut settings = vec![format!("primary_conninfo = {}", quoted(&conninfo.to_string()))];
    if let Some(slot) = slot {
        settings.push(format!("primary_slot_name = {}", quoted(slot)));
    }
    settings.push("recovery_target_timeline = 'latest'".into());
    match major.cmp(&12) {
        Ordering::Less => {
            let mut content = String::from("# written by opsh: a streaming standby\nstandby_mode = 'on'\n");
            for line in &settings {
                content.push_str(line);
                content.push('\n');
            }
            StandbyConfig { files: vec![("recovery.conf".into(), content)], auto_conf: Vec::new() }
        }
        _ => StandbyConfig { files: vec![("standby.signal".into(), String::new())], auto_conf: settings },
    }
}

/// The file whose presence makes a stopped server of this major start read-only (in recovery):
/// what fences an old master so that a restart cannot make it a second one.
pub fn fence_file(major: u32) -> (&'static str, &'static str) {
    if major < 12 {
        ("recovery.conf", "# written by opsh: fenced after a failover; rebuild it with `otb rebuild`\nstandby_mode = 'on'\n")
    } else {
        ("standby.signal", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_compare_and_print_as_postgresql_does() {
        let a = Lsn::parse("0/3000060").expect("lsn");
        let b = Lsn::parse("1/A").expect("lsn");
        assert!(a < b);
        assert_eq!(a.bytes_to(b), 0x1_0000_000A - 0x300_0060);
        assert_eq!(b.bytes_to(a), 0);
        assert_eq!(b.to_string(), "1/A");
        assert_eq!(Lsn::parse("nonsense"), None);
        assert_eq!(major(100000), 10);
        assert_eq!(major(150004), 15);
    }

    #[test]
    fn conninfo_round_trips_and_is_repointed_without_secrets() {
        let info = Conninfo::parse("user=opsh passfile=/home/x/.pgpass password=******** channel_binding=prefer dbname=replication host={{addr:a}} port=23001 application_name='dn01 b' sslmode=prefer").expect("parse");
        assert_eq!(info.get("application_name"), Some("dn01 b"));
        let next = info.pointed_at("{{addr:b}}", 23002);
        assert_eq!(next.to_string(), "host={{addr:b}} port=23002 user=opsh passfile=/home/x/.pgpass application_name='dn01 b' sslmode=prefer");
        assert_eq!(Conninfo::parse(&next.to_string()).expect("again"), next);
        assert!(Conninfo::parse("host").is_err());
        assert!(Conninfo::parse("host='x").is_err());
    }

    #[test]
    fn a_standby_before_12_is_a_recovery_conf_and_from_12_a_signal_file_and_settings() {
        let conninfo = Conninfo::parse("host=h port=1 user=u").expect("parse");
        let old = standby_config(10, &conninfo, Some("s1"));
        assert_eq!(old.auto_conf, Vec::<String>::new());
        assert_eq!(old.files[0].0, "recovery.conf");
        assert!(
            old.files[0]
                .1
                .contains("standby_mode = 'on'\nprimary_conninfo = 'host=h port=1 user=u'\nprimary_slot_name = 's1'\nrecovery_target_timeline = 'latest'\n")
        );
        let new = standby_config(15, &conninfo, None);
        assert_eq!(new.files, vec![("standby.signal".to_string(), String::new())]);
        assert_eq!(new.auto_conf, vec!["primary_conninfo = 'host=h port=1 user=u'".to_string(), "recovery_target_timeline = 'latest'".to_string()]);
        assert_eq!(fence_file(10).0, "recovery.conf");
        assert_eq!(fence_file(12).0, "standby.signal");
    }
}
