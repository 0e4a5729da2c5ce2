//! One xDB single-master replication system as the inventory describes it (its two nodes, the
//! host running the publication and subscription servers, file locations) and as it is now:
//! which node holds the publication role is read from where the control schema lives, never
//! from names.

use opsh_plugin_sdk::{CommandError, RowsExt, host, inventory, sql, text};

const DOCS: &str = "plugins/edb-xdb/README.md";

/// The three control schemas of a publication database, and the one of a subscription database.
pub const PUB_SCHEMAS: [&str; 3] = ["_edb_replicator_pub", "_edb_replicator_sub", "_edb_scheduler"];
pub const SUB_SCHEMA: &str = "_edb_replicator_sub";

#[derive(Debug, Clone)]
pub struct Node {
    /// Inventory database name.
    pub db: String,
    pub host: String,
    pub port: String,
    pub dbname: String,
    pub user: String,
}

pub struct System {
    pub topology: String,
    pub nodes: Vec<Node>,
    pub server_host: String,
    pub config_file: String,
    pub repcli: String,
    pub repsvrfile: String,
    pub subscription: String,
    pub backup_dir: String,
    pub services: Vec<String>,
}

/// What a node holds now.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub schemas: Vec<String>,
    pub triggers: Vec<(String, String)>,
    pub wal_level: String,
    pub free_slots: i64,
    pub slots: Vec<(String, String)>,
}

impl System {
    pub fn load(named: Option<&str>) -> Result<Self, CommandError> {
        let topology = inventory::chosen_topology("xdb", named)?;
        let mut nodes = Vec::new();
        for db in inventory::members(&topology, "node") {
            let info = host::lookup(&db)?;
            nodes.push(Node {
                host: inventory::need(&info, "host", DOCS)?.to_string(),
                port: inventory::need(&info, "port", DOCS)?.to_string(),
                dbname: inventory::need(&info, "dbname", DOCS)?.to_string(),
                user: inventory::need(&info, "user", DOCS)?.to_string(),
                db,
            });
        }
        if nodes.len() != 2 {
            return Err(CommandError::Failed(format!("topology {}: `node` must list the two databases of the replication system (see {DOCS})", topology.name)));
        }
        let get = |key: &str, default: &str| inventory::attr_or(&topology, key, default);
        Ok(Self {
            server_host: inventory::need(&topology, "server-host", DOCS)?.to_string(),
            config_file: get("config-file", "/etc/edb-repl.conf"),
            repcli: get("repcli", "/usr/edb/xdb/bin/edb-repcli"),
            repsvrfile: get("repsvrfile", "/usr/edb/xdb/etc/xdb_subsvrfile.conf"),
            subscription: inventory::need(&topology, "subscription", DOCS)?.to_string(),
            backup_dir: get("backup-dir", "/var/lib/edb/xdb-switchover"),
            services: get("services", "edb-xdbpubserver,edb-xdbsubserver").split(',').map(str::to_string).collect(),
            topology: topology.name,
            nodes,
        })
    }

    /// (publication, subscription): the node whose database holds `_edb_replicator_pub`.
    pub fn roles(&self) -> Result<(Node, Node, Live, Live), CommandError> {
        let a = live(&self.nodes[0])?;
        let b = live(&self.nodes[1])?;
        let has_pub = |l: &Live| l.schemas.iter().any(|s| s == "_edb_replicator_pub");
        match (has_pub(&a), has_pub(&b)) {
            (true, false) => Ok((self.nodes[0].clone(), self.nodes[1].clone(), a, b)),
            (false, true) => Ok((self.nodes[1].clone(), self.nodes[0].clone(), b, a)),
            (both, _) => Err(CommandError::Refused(text(
                &format!(
                    "{} the publication control schema (_edb_replicator_pub): {} — an interrupted switchover? Resume its run (`opsh journal`), or restore from the backups in {} on the nodes",
                    if both { "both nodes hold" } else { "neither node holds" },
                    self.nodes
                        .iter()
                        .zip([&a, &b])
                        .map(|(n, l)| format!("{}: {}", n.db, if l.schemas.is_empty() { "none".into() } else { l.schemas.join(", ") }))
                        .collect::<Vec<_>>()
                        .join("; "),
                    self.backup_dir
                ),
                "公開側の制御スキーマ (_edb_replicator_pub) が一方のノードだけにありません。中断した切り替えを再開してください",
            ))),
        }
    }

    pub fn backup(&self, from: &Node, what: &str) -> String {
        format!("{}/xdb-{}-{}-{what}", self.backup_dir.trim_end_matches('/'), from.dbname, from.host)
    }
}

/// (Each read is asked before any failure is looked at: in `ahead` rounds they are gathered
/// together.)
pub fn live(node: &Node) -> Result<Live, CommandError> {
    let schemas = sql::query(
        &node.db,
        "SELECT coalesce(string_agg(nspname, ',' ORDER BY nspname), '') AS s FROM pg_namespace WHERE nspname IN ('_edb_replicator_pub', '_edb_replicator_sub', '_edb_scheduler')",
        &[],
    );
    let triggers = triggers(&node.db);
    let facts = sql::query(
        &node.db,
        "SELECT current_setting('wal_level') AS wal_level, \
         (current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots))::bigint AS free_slots, \
         (SELECT coalesce(string_agg(slot_name || '=' || coalesce(plugin, ''), ',' ORDER BY slot_name), '') FROM pg_replication_slots WHERE slot_type = 'logical') AS slots",
        &[],
    );
    let (schemas, triggers, facts) = (schemas?, triggers?, facts?);
    Ok(Live {
        schemas: schemas.first_text("s").unwrap_or_default().split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        triggers,
        wal_level: facts.first_text("wal_level").unwrap_or_default(),
        free_slots: facts.first_int("free_slots").unwrap_or(0),
        slots: facts
            .first_text("slots")
            .unwrap_or_default()
            .split(',')
            .filter_map(|s| s.split_once('='))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    })
}

/// xDB's capture triggers on the node's tables: (table, trigger).
pub fn triggers(db: &str) -> Result<Vec<(String, String)>, CommandError> {
    let rows = sql::query(
        db,
        "SELECT format('%I.%I', n.nspname, c.relname) AS tbl, t.tgname::text AS trigger FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND t.tgname ~ '^rrp[iudt]_' ORDER BY 2",
        &[],
    )?;
    Ok(rows
        .rows
        .iter()
        .map(|r| (r.first().map(opsh_plugin_sdk::display).unwrap_or_default(), r.get(1).map(opsh_plugin_sdk::display).unwrap_or_default()))
        .collect())
}

/// The tables xDB publishes, as their capture triggers say (`rrp[iud]_` trigger-based, `rrpt_`
/// log-based): documented names, unlike the control tables' columns.
pub fn published_tables(live: &Live) -> Vec<String> {
    let mut tables: Vec<String> = live.triggers.iter().map(|(t, _)| t.clone()).collect();
    tables.sort();
    tables.dedup();
    tables
}

/// The replication method of the publication database, from its capture triggers: `T`
/// trigger-based (row triggers `rrpi_/rrpu_/rrpd_`), `W` log-based (only the TRUNCATE triggers
/// `rrpt_`). Neither: refused — opsh does not guess.
pub fn method(node: &Node, live: &Live) -> Result<String, CommandError> {
    let rows = live.triggers.iter().any(|(_, g)| g.starts_with("rrpi_") || g.starts_with("rrpu_") || g.starts_with("rrpd_"));
    let truncates = live.triggers.iter().any(|(_, g)| g.starts_with("rrpt_"));
    match (rows, truncates) {
        (true, _) => Ok("T".into()),
        (false, true) => Ok("W".into()),
        (false, false) => Err(CommandError::Refused(text(
            &format!(
                "{} holds the publication control schema but no capture trigger (rrpi_/rrpu_/rrpd_ or rrpt_): opsh cannot tell whether it is trigger- or log-based",
                node.db
            ),
            "キャプチャ トリガーがなく、レプリケーション方式を判断できません",
        ))),
    }
}

/// Rows in the publication's shadow tables: applied ones stay there as history until xDB's
/// cleanup job runs, so this says nothing about what is still pending.
pub fn shadow_rows(db: &str) -> Result<i64, CommandError> {
    let tables = sql::query(
        db,
        "SELECT format('%I.%I', n.nspname, c.relname) AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '_edb_replicator_pub' AND c.relname LIKE 'rrst\\_%' AND c.relkind = 'r' ORDER BY 1",
        &[],
    )?;
    let counts: Vec<(String, _)> = tables
        .rows
        .iter()
        .map(|row| {
            let table = row.first().map(opsh_plugin_sdk::display).unwrap_or_default();
            let count = sql::query(db, &format!("SELECT count(*)::bigint AS n FROM {table}"), &[]);
            (table, count)
        })
        .collect();
    let mut total = 0;
    for (table, count) in counts {
        total += count?.first_int("n").ok_or_else(|| CommandError::Failed(format!("{db}: the rows of {table} cannot be counted")))?;
    }
    Ok(total)
}

/// One line per table that changes whenever any of its rows does (an md5 of the rows in order).
fn digests(db: &str, tables: &[String]) -> Result<Vec<(String, String)>, opsh_plugin_sdk::CapabilityError> {
    let asked: Vec<_> = tables
        .iter()
        .map(|table| {
            sql::query(db, &format!("SELECT coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '-') || ' ' || count(*) AS d FROM {table} t"), &[])
        })
        .collect();
    tables.iter().zip(asked).map(|(table, rows)| Ok((table.clone(), rows?.first_text("d").unwrap_or_default()))).collect()
}

/// The published tables whose rows differ between the publication and the subscription
/// database (what xDB's switchover procedure asks to confirm before the first snapshot).
pub fn differing_tables(publication: &str, subscription: &str, tables: &[String]) -> Result<Vec<String>, opsh_plugin_sdk::CapabilityError> {
    let (a, b) = (digests(publication, tables), digests(subscription, tables));
    let (a, b) = (a?, b?);
    Ok(a.iter().zip(&b).filter(|(x, y)| x.1 != y.1).map(|(x, _)| x.0.clone()).collect())
}

/// Is `user` a superuser on `db`'s server (xDB requires it of both databases' users)?
pub fn superuser(db: &str, user: &str) -> Result<Option<bool>, CommandError> {
    let rows = sql::query(db, "SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[sql::Value::Text(user.into())])?;
    Ok(rows.first_bool("rolsuper"))
}

/// What xDB records of a database: its host as written there, port, database name and user.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub host: String,
    pub port: String,
    pub dbname: String,
    pub user: String,
}

/// What xDB records of the publication and of the subscription database.
pub fn recorded(db: &str) -> Result<(Recorded, Recorded), CommandError> {
    let one = |table: &str, id: &str| -> Result<Recorded, CommandError> {
        let rows = sql::query(
            db,
            &format!("SELECT db_host AS host, db_port::text AS port, db_name AS dbname, db_user AS usr FROM {table} ORDER BY {id} LIMIT 1"),
            &[],
        )?;
        let get = |c: &str| rows.first_text(c).filter(|v| v != "NULL").ok_or_else(|| CommandError::Failed(format!("{db}: {table} records no {c}")));
        Ok(Recorded { host: get("host")?, port: get("port")?, dbname: get("dbname")?, user: get("usr")? })
    };
    Ok((one("_edb_replicator_pub.xdb_pub_database", "pub_db_id")?, one("_edb_replicator_sub.xdb_sub_database", "sub_db_id")?))
}

/// The definitions of a publication database's capture triggers and their functions, read
/// while planning: what the backup file holds and what restores them, statement by statement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaptureDdl {
    /// `CREATE OR REPLACE FUNCTION …` of the trigger functions and `capturetruncateevent`.
    pub functions: Vec<String>,
    /// `schema.name` of the trigger functions (`rrp[iud]_…_tgfunc`), dropped with the triggers.
    pub trigger_functions: Vec<String>,
    /// Each trigger's name and statements: its `CREATE TRIGGER`, and (pg_get_triggerdef leaves
    /// it out) the `ALTER TABLE … ENABLE ALWAYS / REPLICA` or `DISABLE` its `tgenabled` says.
    pub triggers: Vec<(String, Vec<String>)>,
}

pub fn capture_ddl(db: &str) -> Result<CaptureDdl, CommandError> {
    let functions = sql::query(
        db,
        "SELECT pg_get_functiondef(p.oid) AS ddl, format('%I.%I', n.nspname, p.proname) AS name, p.proname ~ '^rrp[iud]_.*_tgfunc$' AS trigger_function \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE p.proname ~ '^rrp[iud]_.*_tgfunc$' OR (p.proname = 'capturetruncateevent' AND n.nspname = '_edb_replicator_pub') ORDER BY p.proname",
        &[],
    )?;
    let triggers = sql::query(
        db,
        "SELECT t.tgname::text AS name, pg_get_triggerdef(t.oid) AS ddl, CASE t.tgenabled \
         WHEN 'A' THEN format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', t.tgrelid::regclass, t.tgname) \
         WHEN 'R' THEN format('ALTER TABLE %s ENABLE REPLICA TRIGGER %I', t.tgrelid::regclass, t.tgname) \
         WHEN 'D' THEN format('ALTER TABLE %s DISABLE TRIGGER %I', t.tgrelid::regclass, t.tgname) ELSE '' END AS mode \
         FROM pg_trigger t WHERE NOT t.tgisinternal AND t.tgname ~ '^rrp[iudt]_' ORDER BY t.tgname",
        &[],
    )?;
    let is_trigger_function = opsh_plugin_sdk::rows::texts(&functions, "trigger_function");
    let names = opsh_plugin_sdk::rows::texts(&functions, "name");
    let modes = opsh_plugin_sdk::rows::texts(&triggers, "mode");
    Ok(CaptureDdl {
        functions: opsh_plugin_sdk::rows::texts(&functions, "ddl").into_iter().map(|d| d.trim_end().to_string()).collect(),
        trigger_functions: names.into_iter().zip(is_trigger_function).filter(|(_, t)| t == "t").map(|(n, _)| n).collect(),
        triggers: opsh_plugin_sdk::rows::texts(&triggers, "name")
            .into_iter()
            .zip(opsh_plugin_sdk::rows::texts(&triggers, "ddl"))
            .zip(modes)
            .map(|((name, ddl), mode)| (name, std::iter::once(ddl).chain((!mode.is_empty()).then_some(mode)).collect()))
            .collect(),
    })
}

impl CaptureDdl {
    /// The backup file: a SQL script that recreates them.
    pub fn backup(&self, db: &str) -> String {
        let mut out = format!("-- xDB capture triggers and functions of {db}, saved by opsh xdb before they were dropped\n");
        for statement in self.functions.iter().chain(self.triggers.iter().flat_map(|(_, s)| s)) {
            out.push_str(statement);
            out.push_str(";\n");
        }
        out
    }

    /// The statements that restore them where `existing` (table, trigger) are already in place:
    /// every function (they replace), and each trigger not there yet — created only if it is
    /// still missing when the statement runs (one put back by hand since does not fail the step).
    pub fn restore(&self, existing: &[(String, String)]) -> Vec<String> {
        let present = |name: &str| existing.iter().any(|(_, g)| g == name);
        let unless_there = |name: &str, statement: &str| -> String {
            if statement.starts_with("CREATE TRIGGER ") {
                format!(
                    "DO $opsh$ BEGIN IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgname = {}) THEN EXECUTE {}; END IF; END $opsh$",
                    opsh_plugin_sdk::quote::literal(name),
                    opsh_plugin_sdk::quote::literal(statement)
                )
            } else {
                statement.to_string()
            }
        };
        self.functions
            .iter()
            .cloned()
            .chain(self.triggers.iter().filter(|(name, _)| !present(name)).flat_map(|(name, s)| s.iter().map(|st| unless_there(name, st))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::CaptureDdl;

    fn ddl() -> CaptureDdl {
        CaptureDdl {
            functions: vec!["CREATE OR REPLACE FUNCTION _edb_replicator_pub.rrpi_public_orders_tgfunc() RETURNS trigger AS $$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql".into()],
            trigger_functions: vec!["_edb_replicator_pub.rrpi_public_orders_tgfunc".into()],
            triggers: vec![
                ("rrpi_public_orders".into(), vec!["CREATE TRIGGER rrpi_public_orders AFTER INSERT ON public.orders FOR EACH ROW EXECUTE FUNCTION _edb_replicator_pub.rrpi_public_orders_tgfunc()".into(), "ALTER TABLE orders ENABLE ALWAYS TRIGGER rrpi_public_orders".into()]),
                ("rrpu_public_orders".into(), vec!["CREATE TRIGGER rrpu_public_orders AFTER UPDATE ON public.orders FOR EACH ROW EXECUTE FUNCTION _edb_replicator_pub.rrpi_public_orders_tgfunc()".into()]),
            ],
        }
    }

    #[test]
    fn the_backup_holds_every_statement_and_the_trigger_modes() {
        let backup = ddl().backup("node1-edb");
        assert!(backup.starts_with("-- xDB capture triggers and functions of node1-edb"));
        assert_eq!(backup.matches(";\n").count(), 4, "{backup}");
        assert!(backup.contains("ALTER TABLE orders ENABLE ALWAYS TRIGGER rrpi_public_orders;\n"), "{backup}");
    }

    #[test]
    fn a_restore_skips_triggers_already_in_place_but_replaces_every_function() {
        let existing = [("public.orders".to_string(), "rrpi_public_orders".to_string())];
        let restore = ddl().restore(&existing);
        assert_eq!(restore.len(), 2, "{restore:#?}");
        assert!(restore[0].starts_with("CREATE OR REPLACE FUNCTION"));
        assert!(
            restore[1].starts_with(
                "DO $opsh$ BEGIN IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgname = 'rrpu_public_orders') THEN EXECUTE 'CREATE TRIGGER rrpu_public_orders "
            ),
            "{}",
            restore[1]
        );
        assert_eq!(ddl().restore(&[]).len(), 4);
    }
}
