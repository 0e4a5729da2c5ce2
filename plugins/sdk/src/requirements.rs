//! What a plugin needs on the inventory's hosts and databases, for `opsh doctor`: the programs
//! its steps run (where the inventory says they are) and the privileges its SQL needs. A plugin's
//! `requirements` read command returns them as one table; the host checks every row itself —
//! a plugin states what it needs, it never reports it met.
//!
//! ```ignore
//! let mut needs = Requirements::default();
//! needs.tool("otb1", "/opt/otb/bin/pg_ctl", "promote, fence, rebuild");
//! needs.privilege("dn01-a", Privilege::Superuser, "ALTER NODE, ALTER SYSTEM");
//! Ok(vec![needs.table()])
//! ```

use crate::build::{command, plain, table, text};
use crate::{CommandInfo, CommandKind, Table};

/// The read command's name: `doctor` calls it on every plugin that manages a topology.
pub const COMMAND: &str = "requirements";

/// The table's columns, in order (the host reads them by these names).
pub const COLUMNS: [&str; 4] = ["target", "kind", "need", "for"];

/// A database privilege the host can check for a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privilege {
    Superuser,
    /// Replication connections (a superuser has it too).
    Replication,
    /// Membership of a role (`pg_monitor`, …).
    Role(String),
}

impl Privilege {
    pub fn name(&self) -> String {
        match self {
            Self::Superuser => "superuser".into(),
            Self::Replication => "replication".into(),
            Self::Role(role) => format!("role:{role}"),
        }
    }
}

#[derive(Debug, Default)]
pub struct Requirements {
    rows: Vec<[String; 4]>,
}

impl Requirements {
    /// `program` (a path, or a name the remote non-interactive `PATH` must find) on `host`.
    pub fn tool(&mut self, host: &str, program: &str, used_for: &str) -> &mut Self {
        self.add(host, "tool", program, used_for)
    }

    /// `privilege` for the login of `database` (its inventory `user`).
    pub fn privilege(&mut self, database: &str, privilege: Privilege, used_for: &str) -> &mut Self {
        self.add(database, "privilege", &privilege.name(), used_for)
    }

    fn add(&mut self, target: &str, kind: &str, need: &str, used_for: &str) -> &mut Self {
        let row = [target.to_string(), kind.to_string(), need.to_string(), used_for.to_string()];
        if !self.rows.contains(&row) {
            self.rows.push(row);
        }
        self
    }

    pub fn table(self) -> Table {
        let mut out = table(text("Requirements", "要件"), &COLUMNS);
        for row in self.rows {
            out.push(row.into_iter().map(plain).collect());
        }
        out.build()
    }
}

/// The command's declaration, the same in every plugin.
pub fn declaration(plugin: &str) -> CommandInfo {
    command(
        COMMAND,
        CommandKind::Read,
        text(
            "The programs and database privileges this plugin needs, per host and database (`doctor` checks them)",
            "このプラグインが必要とするプログラムとデータベース権限 (`doctor` が確認)",
        ),
    )
    .example(&format!("{plugin} requirements"), text("List what the runbooks need", "ランブックに必要なものを表示"))
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cell;

    #[test]
    fn each_need_is_one_row_listed_once() {
        let mut needs = Requirements::default();
        needs.tool("h1", "/opt/bin/pg_ctl", "promote").tool("h1", "/opt/bin/pg_ctl", "promote").privilege(
            "db1",
            Privilege::Role("pg_monitor".into()),
            "status",
        );
        let table = needs.table();
        assert_eq!(table.columns, COLUMNS);
        let rows: Vec<Vec<String>> =
            table.rows.iter().map(|r| r.iter().map(|c| if let Cell::Plain(t) = c { t.clone() } else { String::new() }).collect()).collect();
        assert_eq!(rows, [vec!["h1", "tool", "/opt/bin/pg_ctl", "promote"], vec!["db1", "privilege", "role:pg_monitor", "status"]]);
    }
}
