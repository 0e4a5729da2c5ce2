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
    pub superuser: bool,
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

pub fn live(node: &Node) -> Result<Live, CommandError> {
    let schemas = sql::query(
        &node.db,
        "SELECT coalesce(string_agg(nspname, ',' ORDER BY nspname), '') AS s FROM pg_namespace WHERE nspname IN ('_edb_replicator_pub', '_edb_replicator_sub', '_edb_scheduler')",
        &[],
    )?;
    let triggers = triggers(&node.db)?;
    let facts = sql::query(
        &node.db,
        "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser, current_setting('wal_level') AS wal_level, \
         (current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots))::bigint AS free_slots, \
         (SELECT coalesce(string_agg(slot_name || '=' || coalesce(plugin, ''), ',' ORDER BY slot_name), '') FROM pg_replication_slots WHERE slot_type = 'logical') AS slots",
        &[],
    )?;
    Ok(Live {
        schemas: schemas.first_text("s").unwrap_or_default().split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        triggers,
        superuser: facts.first_bool("superuser") == Some(true),
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

/// Rows waiting in the shadow tables of the publication database.
pub fn pending(db: &str) -> Result<i64, CommandError> {
    let tables = sql::query(
        db,
        "SELECT format('_edb_replicator_pub.%I', shadow_table_name) AS t FROM _edb_replicator_pub.rrep_tables WHERE shadow_table_name IS NOT NULL",
        &[],
    )?;
    let mut total = 0;
    for row in &tables.rows {
        let table = row.first().map(opsh_plugin_sdk::display).unwrap_or_default();
        let count = sql::query(db, &format!("SELECT count(*)::bigint AS n FROM {table}"), &[])?;
        total += count.first_int("n").unwrap_or(0);
    }
    Ok(total)
}

/// The replication method recorded for the publication database: `T` trigger-based, `W` log-based.
pub fn method(db: &str) -> Result<String, CommandError> {
    let rows = sql::query(db, "SELECT repl_method::text AS m FROM _edb_replicator_pub.xdb_pub_database ORDER BY pub_db_id LIMIT 1", &[])?;
    Ok(rows.first_text("m").unwrap_or_else(|| "T".into()))
}
