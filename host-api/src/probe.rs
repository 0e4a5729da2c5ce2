//! Probes: the only commands a plugin may run on a host while nothing may change (reading,
//! planning, checking, verifying). A plugin's own `read-only` flag is a claim, not a guarantee;
//! what runs is what the operator approved — the probes a plugin declares in `describe()`
//! (granted with a topology that names the plugin), or the `probes` of its `[grants.PLUGIN]`.
//!
//! A pattern is the argv written as shell words, one glob per argument (`*` matches any run of
//! characters inside that one argument, never across arguments), optionally followed by
//! `<<< TEXT`, the standard input the command gets (one trailing newline ignored). Without
//! `<<<` the command must get no input.
//!
//! ```text
//! */pg_ctl status -D *
//! test -e */standby.signal
//! cctrl <<< ls
//! ```

use std::fmt;

use crate::grants::glob_match;

/// How a plugin declares a probe in `describe()` under WIT 0.1: a `capabilities` entry
/// `probe:PATTERN`.
pub const DECLARED_PREFIX: &str = "probe:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePattern {
    words: Vec<String>,
    stdin: Option<String>,
    source: String,
}

impl ProbePattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("probe pattern {text:?} {why}");
        let mut words = shell_words::split(text).map_err(|e| bad(&format!("is not valid shell words ({e})")))?;
        let mut stdin = None;
        if let Some(at) = words.iter().position(|w| w == "<<<") {
            let rest = words.split_off(at);
            match rest.as_slice() {
                [_, input] => stdin = Some(input.clone()),
                _ => return Err(bad("needs exactly one word after `<<<` (quote it if it has spaces)")),
            }
        }
        match words.first().map(String::as_str) {
            None => return Err(bad("names no program")),
            Some(program) if program.trim_matches('*').is_empty() => {
                return Err(bad("lets the plugin choose the program; name it (e.g. `*/pg_ctl status -D *`)"));
            }
            Some(_) => {}
        }
        if words.iter().chain(stdin.iter()).any(|w| w.chars().any(|c| c.is_control() && c != '\n' && c != '\t')) {
            return Err(bad("contains control characters"));
        }
        Ok(Self { words, stdin, source: text.trim().to_string() })
    }

    /// Does this command (argv as the host will run it, and its standard input) fit the pattern?
    pub fn matches(&self, argv: &[String], stdin: Option<&[u8]>) -> bool {
        if argv.len() != self.words.len() || !self.words.iter().zip(argv).all(|(p, a)| glob_match(p, a)) {
            return false;
        }
        let input = stdin.unwrap_or_default();
        match &self.stdin {
            None => input.is_empty(),
            Some(pattern) => match std::str::from_utf8(input) {
                Ok(text) => input_matches(pattern, text.strip_suffix('\n').unwrap_or(text)),
                Err(_) => false,
            },
        }
    }

    /// A probe a plugin declares may not leave a program open: its program's name is fixed
    /// (a directory may vary: `*/pg_ctl`), and an interpreter or a wrapper that runs another
    /// program (`sh`, `python3.11`, `env`, `sudo`, `xargs` …) gets no wildcard at all, in its
    /// arguments or its input — `sh -c *`, `bash -lc *`, `env sh <<< *` would let the plugin run
    /// anything while planning. (An operator may still approve such a pattern in a grant.)
    fn fit_to_declare(&self) -> Result<(), String> {
        const RUNS_PROGRAMS: &[&str] = &[
            "sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "fish", "busybox", "env", "python", "perl", "ruby", "node", "nodejs", "php", "lua", "tclsh",
            "psql", "awk", "gawk", "mawk", "sed", "xargs", "sudo", "su", "doas", "nice", "ionice", "nohup", "timeout", "setsid", "stdbuf", "chroot", "ssh",
            "find", "watch", "script", "expect",
        ];
        let program = self.words[0].rsplit('/').next().unwrap_or_default();
        if program.contains('*') {
            return Err(format!("probe pattern {:?} does not name its program: only its directory may vary (e.g. */pg_ctl)", self.source));
        }
        let bare = program.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
        let open = self.words.iter().skip(1).chain(self.stdin.iter()).any(|w| w.contains('*'));
        if RUNS_PROGRAMS.contains(&bare) && open {
            return Err(format!("probe pattern {:?} leaves {program}'s program open to the plugin; declare the exact command, without wildcards", self.source));
        }
        Ok(())
    }
}

/// A probe's input against its pattern: split at every line break, `;` and `\\` (psql's
/// backslash commands), the pieces must correspond one to one and each match its glob — so a
/// `*` never reaches past a statement, a line or a backslash.
fn input_matches(pattern: &str, text: &str) -> bool {
    let pieces = |s: &str| -> Vec<(String, Option<char>)> {
        let mut out = Vec::new();
        let mut current = String::new();
        for c in s.chars() {
            if matches!(c, '\n' | ';' | '\\') {
                out.push((std::mem::take(&mut current), Some(c)));
            } else {
                current.push(c);
            }
        }
        out.push((current, None));
        out
    };
    let (p, t) = (pieces(pattern), pieces(text));
    p.len() == t.len() && p.iter().zip(&t).all(|((pp, ps), (tp, ts))| ps == ts && glob_match(pp, tp))
}

impl fmt::Display for ProbePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// The probes a plugin declares among its `describe()` capabilities.
pub fn declared(capabilities: &[String]) -> Result<Vec<ProbePattern>, String> {
    capabilities
        .iter()
        .filter_map(|c| c.strip_prefix(DECLARED_PREFIX))
        .map(|text| ProbePattern::parse(text).and_then(|p| p.fit_to_declare().map(|()| p)))
        .collect()
}

/// How a probe reads in plans, the journal and error messages.
pub fn shown(argv: &[String], stdin: Option<&[u8]>) -> String {
    let line = shell_words::join(argv);
    match stdin.filter(|s| !s.is_empty()) {
        Some(input) => format!("{line} <<< {}", shell_words::quote(String::from_utf8_lossy(input).trim_end_matches('\n'))),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn one_glob_per_argument_never_across() {
        let p = ProbePattern::parse("*/pg_ctl status -D *").expect("pattern");
        assert!(p.matches(&argv(&["/usr/lib/postgresql/15/bin/pg_ctl", "status", "-D", "/srv/dn 01"]), None));
        assert!(!p.matches(&argv(&["/usr/bin/pg_ctl", "stop", "-D", "/srv/dn01"]), None));
        assert!(!p.matches(&argv(&["/usr/bin/pg_ctl", "status", "-D", "/srv/dn01", "-m", "fast"]), None), "an extra argument");
        assert!(!p.matches(&argv(&["/usr/bin/pg_ctl", "status", "-D"]), None), "a missing argument");
        assert!(!p.matches(&argv(&["/usr/bin/pg_ctl", "status", "-D", "/x"]), Some(b"y\n")), "input it does not allow");
    }

    #[test]
    fn standard_input_is_part_of_the_pattern() {
        let p = ProbePattern::parse("cctrl <<< ls").expect("pattern");
        assert!(p.matches(&argv(&["cctrl"]), Some(b"ls\n")));
        assert!(!p.matches(&argv(&["cctrl"]), Some(b"ls\nset policy maintenance\n")));
        assert!(!p.matches(&argv(&["cctrl"]), None));
        assert_eq!(shown(&argv(&["cctrl"]), Some(b"ls\n")), "cctrl <<< ls");
    }

    #[test]
    fn a_pattern_must_name_its_program() {
        for bad in ["", "* status", "** -c x", "cctrl <<<", "cctrl <<< a b", "'unterminated"] {
            assert!(ProbePattern::parse(bad).is_err(), "{bad:?} accepted");
        }
        let declared =
            declared(&["sql".into(), "probe:true".into(), "probe:test -e *".into(), "probe:sh -c 'pgrep -x slon || true'".into()]).expect("declared");
        assert_eq!(declared.iter().map(ToString::to_string).collect::<Vec<_>>(), ["true", "test -e *", "sh -c 'pgrep -x slon || true'"]);
        for open in [
            "probe:sh -c *",
            "probe:/bin/bash -c 'echo *'",
            "probe:env *",
            "probe:psql -X <<< *",
            "probe:python3 -c *",
            "probe:bash -lc *",
            "probe:sh * *",
            "probe:env sh <<< *",
            "probe:sudo -n bash <<< *",
            "probe:*sh -c x",
            "probe:/bin/b*sh -c x",
            "probe:python3.11 -c *",
            "probe:sh -c 'eval \"$0\"' *",
            "probe:timeout 5 *",
        ] {
            assert!(super::declared(&[open.into()]).is_err(), "{open} declared");
        }
    }

    #[test]
    fn a_wildcard_in_the_input_stays_in_one_statement() {
        let p = ProbePattern::parse("psql -XAt <<< 'select * from pg_stat_replication'").expect("pattern");
        assert!(p.matches(&argv(&["psql", "-XAt"]), Some(b"select client_addr from pg_stat_replication\n")));
        assert!(!p.matches(&argv(&["psql", "-XAt"]), Some(b"select 1; drop table t; select 1 from pg_stat_replication")));
        assert!(!p.matches(&argv(&["psql", "-XAt"]), Some(b"select 1\n\\! touch /tmp/x\nselect 1 from pg_stat_replication")));
        assert!(!p.matches(&argv(&["psql", "-XAt"]), Some(b"select 1 \\! touch /tmp/x # from pg_stat_replication")), "a backslash command");
    }

    #[test]
    fn matching_stays_linear_whatever_the_input() {
        let p = ProbePattern::parse("cat <<< '**********x'").expect("pattern");
        let input = "a".repeat(100_000);
        assert!(!p.matches(&argv(&["cat"]), Some(input.as_bytes())));
    }
}
