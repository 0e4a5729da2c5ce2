//! The invariants a replicated system must keep whatever its shape, checked the same way by every
//! plugin — in `status` (a table, violations in red, so `status --check` fails) and in `verify`
//! (a violation fails the run): at most one writable master per node / pair / dataservice, every
//! route at the live master, no set with two origins, every replicator online after a change.
//!
//! A plugin states what it saw; this module judges it. Something that could not be read is never
//! taken as fine: it is shown as "cannot tell" and named.

use crate::{CommandError, CommandResult, Table, Text, bad, good, plain, table, text, warn};

/// What a plugin saw of one member for one invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Yes,
    No,
    /// Could not be read (the member does not answer, its output could not be parsed …).
    Unknown(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Holds,
    /// Holds, but worth a look (e.g. no member takes writes at all).
    HoldsBut,
    Violated,
    CannotTell,
}

#[derive(Debug, Clone)]
struct Check {
    what: Text,
    scope: String,
    verdict: Verdict,
    detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct Invariants {
    checks: Vec<Check>,
}

impl Invariants {
    pub fn new() -> Self {
        Self::default()
    }

    /// At most one of `members` is what `what` names ("a writable master", "a Slony origin").
    pub fn at_most_one(&mut self, what: Text, scope: &str, members: &[(String, Seen)]) {
        let yes: Vec<&str> = members.iter().filter(|(_, s)| *s == Seen::Yes).map(|(m, _)| m.as_str()).collect();
        let unknown: Vec<String> = members.iter().filter_map(|(m, s)| if let Seen::Unknown(why) = s { Some(format!("{m} ({why})")) } else { None }).collect();
        let (verdict, detail) = match (yes.len(), unknown.is_empty()) {
            (n, _) if n > 1 => (Verdict::Violated, format!("{} at once: {}", n, yes.join(", "))),
            (0, true) => (Verdict::HoldsBut, "none".to_string()),
            (_, true) => (Verdict::Holds, yes.join(", ")),
            (_, false) => (
                Verdict::CannotTell,
                format!("{}; cannot ask {}", if yes.is_empty() { "none of the others".to_string() } else { yes.join(", ") }, unknown.join(", ")),
            ),
        };
        self.checks.push(Check { what, scope: scope.to_string(), verdict, detail });
    }

    /// Every one of `items` holds ("every route to dn01 points at its master", "every replicator
    /// is ONLINE"); the names of those that do not are the detail.
    pub fn all(&mut self, what: Text, scope: &str, items: &[(String, Seen)]) {
        let no: Vec<&str> = items.iter().filter(|(_, s)| *s == Seen::No).map(|(m, _)| m.as_str()).collect();
        let unknown: Vec<String> = items.iter().filter_map(|(m, s)| if let Seen::Unknown(why) = s { Some(format!("{m} ({why})")) } else { None }).collect();
        let (verdict, detail) = if !no.is_empty() {
            (Verdict::Violated, format!("not: {}", no.join(", ")))
        } else if !unknown.is_empty() {
            (Verdict::CannotTell, format!("cannot ask {}", unknown.join(", ")))
        } else if items.is_empty() {
            (Verdict::HoldsBut, "nothing to check".to_string())
        } else {
            (Verdict::Holds, format!("{} of {}", items.len(), items.len()))
        };
        self.checks.push(Check { what, scope: scope.to_string(), verdict, detail });
    }

    /// A fact that holds or not, with what was seen.
    pub fn holds(&mut self, what: Text, scope: &str, seen: Seen, detail: &str) {
        let verdict = match &seen {
            Seen::Yes => Verdict::Holds,
            Seen::No => Verdict::Violated,
            Seen::Unknown(_) => Verdict::CannotTell,
        };
        let detail = match seen {
            Seen::Unknown(why) => format!("{detail} (cannot tell: {why})"),
            _ => detail.to_string(),
        };
        self.checks.push(Check { what, scope: scope.to_string(), verdict, detail });
    }

    /// The violated invariants, one line each.
    pub fn violations(&self) -> Vec<String> {
        self.checks.iter().filter(|c| c.verdict == Verdict::Violated).map(|c| format!("{} ({}): {}", c.what.en, c.scope, c.detail)).collect()
    }

    /// Every invariant, violations in red (they make `status --check` fail).
    pub fn table(&self) -> Table {
        let mut t = table(text("Invariants", "不変条件"), &["invariant", "scope", "state", "detail"]);
        for check in &self.checks {
            let state = match check.verdict {
                Verdict::Holds => good("holds"),
                Verdict::HoldsBut => warn("holds"),
                Verdict::Violated => bad("VIOLATED"),
                Verdict::CannotTell => warn("cannot tell"),
            };
            t.push(vec![plain(crate::localized(&check.what)), plain(check.scope.as_str()), state, plain(check.detail.as_str())]);
        }
        t.build()
    }

    /// For `verify`: the table when every invariant holds (or cannot be told, which the table
    /// shows), an error naming each violation otherwise.
    pub fn verified(&self) -> CommandResult<Table> {
        let violations = self.violations();
        if violations.is_empty() { Ok(self.table()) } else { Err(CommandError::Failed(format!("invariant violated: {}", violations.join("; ")))) }
    }
}

/// "at most one writable master", in both languages.
pub fn one_writable_master() -> Text {
    text("at most one writable master", "書き込み可能なマスターは最大 1 つ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(seen: &[(&str, Seen)]) -> Vec<(String, Seen)> {
        seen.iter().map(|(m, s)| (m.to_string(), s.clone())).collect()
    }

    #[test]
    fn two_masters_are_a_violation_and_an_unreadable_member_is_never_fine() {
        let mut report = Invariants::new();
        report.at_most_one(text("at most one writable master", ""), "dn01", &members(&[("a", Seen::No), ("b", Seen::Yes), ("c", Seen::Yes)]));
        assert_eq!(report.violations(), vec!["at most one writable master (dn01): 2 at once: b, c".to_string()]);
        assert!(report.verified().is_err());

        let mut report = Invariants::new();
        report.at_most_one(text("at most one writable master", ""), "dn01", &members(&[("a", Seen::Unknown("timeout".into())), ("b", Seen::Yes)]));
        assert!(report.violations().is_empty());
        let table = report.table();
        assert_eq!(table.rows[0][2], warn("cannot tell"));
        assert_eq!(table.rows[0][3], plain("b; cannot ask a (timeout)"));
    }

    #[test]
    fn every_item_must_hold() {
        let mut report = Invariants::new();
        report.all(text("every route points at the live master", ""), "dn01", &members(&[("cn01", Seen::Yes), ("cn02", Seen::No)]));
        report.all(text("every replicator is ONLINE", ""), "east", &members(&[("east1", Seen::Yes)]));
        assert_eq!(report.violations(), vec!["every route points at the live master (dn01): not: cn02".to_string()]);
        assert_eq!(report.table().rows[1][2], good("holds"));
    }
}
