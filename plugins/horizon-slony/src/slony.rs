//! Slony-I as Horizon uses it: cluster `slony` (schema `_slony`), one set per database ("All
//! tables and Sequences"), node 1 the origin. opsh re-initialises it with Slony's own tool,
//! slonik, where the seed presses the Service Center's button.

use opsh_plugin_sdk::{CapabilityError, CommandError, RowsExt, sql, text};

use crate::appliances::Database;

pub const CLUSTER: &str = "slony";

/// The seed's verification query, as printed there.
pub const VERIFY: &str = "SELECT a.set_id, a.set_comment, (SELECT last_value FROM _slony.sl_local_node_id) AS local_id, CASE WHEN a.set_origin = (SELECT last_value FROM _slony.sl_local_node_id) THEN TRUE ELSE FALSE END AS master_node from _slony.sl_set a";

const ROLE: &str = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '_slony') AS present";
const NODE: &str = "SELECT (SELECT last_value FROM _slony.sl_local_node_id) AS local_id, (SELECT set_origin FROM _slony.sl_set ORDER BY set_id LIMIT 1) AS origin, \
    (SELECT coalesce(bool_and(sub_active), false) FROM _slony.sl_subscribe WHERE sub_receiver = (SELECT last_value FROM _slony.sl_local_node_id)) AS active";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No `_slony` schema: a plain database that takes writes.
    Standalone,
    Origin,
    Subscriber,
    /// A `_slony` schema without a set (half-initialised).
    Partial,
}

impl Role {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Standalone => "no Slony (takes writes)",
            Self::Origin => "Slony origin",
            Self::Subscriber => "Slony subscriber (read-only)",
            Self::Partial => "Slony schema without a set",
        }
    }
}

pub fn role(db: &str) -> Result<Role, CapabilityError> {
    if sql::query(db, ROLE, &[])?.first_bool("present") != Some(true) {
        return Ok(Role::Standalone);
    }
    let rows = sql::query(db, NODE, &[])?;
    Ok(match (rows.first_int("local_id"), rows.first_int("origin")) {
        (Some(local), Some(origin)) if local == origin => Role::Origin,
        (Some(_), Some(_)) => Role::Subscriber,
        _ => Role::Partial,
    })
}

/// Is the database subscribed with its subscription active (the initial copy done)?
pub fn subscription_active(db: &str) -> Result<bool, CapabilityError> {
    if role(db)? != Role::Subscriber {
        return Ok(false);
    }
    Ok(sql::query(db, NODE, &[])?.first_bool("active") == Some(true))
}

/// Does this copy of the database take writes now? A database without Slony, or a Slony origin,
/// does; a subscriber's replicated tables refuse them.
pub fn takes_writes(role: Role) -> bool {
    matches!(role, Role::Standalone | Role::Origin)
}

/// Is the database fenced read-only for every new session (`ALTER DATABASE … SET
/// default_transaction_read_only = on`, what opsh does to an old primary it stops trusting)?
/// Read from the catalog, not from this session's settings.
pub fn fenced(db: &str) -> Result<bool, CapabilityError> {
    let rows = sql::query(
        db,
        "SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database() AND s.setrole = 0 AND 'default_transaction_read_only=on' = ANY (s.setconfig)) AS fenced",
        &[],
    )?;
    Ok(rows.first_bool("fenced") == Some(true))
}

/// This node's id in the Slony cluster.
pub fn local_node(db: &str) -> Result<Option<i64>, CapabilityError> {
    Ok(sql::query(db, "SELECT last_value::bigint AS id FROM _slony.sl_local_node_id", &[])?.first_int("id"))
}

/// The appliance the set's origin is on, as this node's catalog says (the conninfo of its path
/// to the origin names the origin's host): known even while the origin is down.
pub fn origin_appliance(db: &str) -> Result<Option<String>, CapabilityError> {
    let rows = sql::query(
        db,
        "SELECT pa_conninfo AS conninfo FROM _slony.sl_path WHERE pa_server = (SELECT set_origin FROM _slony.sl_set ORDER BY set_id LIMIT 1) ORDER BY pa_client LIMIT 1",
        &[],
    )?;
    Ok(rows
        .first_text("conninfo")
        .and_then(|c| opsh_plugin_sdk::pg::Conninfo::parse(&c).ok())
        .and_then(|c| c.get("host").and_then(opsh_plugin_sdk::names::host_of))
        .map(|m| m.host))
}

/// How far subscriber node `node` is behind, as the origin `db` sees it: (events, seconds).
pub fn subscriber_lag(db: &str, node: i64) -> Result<Option<(i64, f64)>, CapabilityError> {
    Ok(lag(db)?.into_iter().find(|(n, _, _)| *n == node).map(|(_, events, seconds)| (events, seconds)))
}

/// The seed's verification query on `db`: (local_id, master_node) of set 1.
pub fn verification(db: &str) -> Result<Option<(i64, bool)>, CapabilityError> {
    let rows = sql::query(db, VERIFY, &[])?;
    Ok(rows.first_int("local_id").zip(rows.first_bool("master_node")))
}

/// The origin's view of its subscribers: (receiver node, events behind, seconds behind).
pub fn lag(db: &str) -> Result<Vec<(i64, i64, f64)>, CapabilityError> {
    let rows = sql::query(
        db,
        "SELECT st_received::bigint AS node, st_lag_num_events::bigint AS events, extract(epoch FROM st_lag_time)::float8 AS seconds FROM _slony.sl_status ORDER BY 1",
        &[],
    )?;
    // An unreadable value is no "0 behind": the row is refused, never taken for caught up.
    rows.rows
        .iter()
        .map(|row| match (row.first(), row.get(1), row.get(2)) {
            (Some(sql::Value::Int(node)), Some(sql::Value::Int(events)), Some(sql::Value::Float(seconds))) => Ok((*node, *events, *seconds)),
            _ => {
                Err(CapabilityError::Failed(format!("database {db}: _slony.sl_status has a row whose lag cannot be read ({row:?}); Slony's state is unknown")))
            }
        })
        .collect()
}

/// What goes into the set: every table and sequence outside the system and Slony schemas.
/// Slony replicates a table only by its primary key: a table without one is refused here,
/// before anything is dropped.
pub fn replicated_objects(db: &str) -> Result<(Vec<String>, Vec<String>), CommandError> {
    const OBJECTS: &str = "SELECT format('%I.%I', n.nspname, c.relname) AS name, c.relkind::text AS kind, \
        (c.relkind = 'r' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)) AS no_key \
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
        WHERE c.relkind IN ('r', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_slony') AND n.nspname NOT LIKE 'pg\\_%' \
        ORDER BY c.relkind, 1";
    let rows = sql::query(db, OBJECTS, &[])?;
    let (mut tables, mut sequences, mut keyless) = (Vec::new(), Vec::new(), Vec::new());
    for row in &rows.rows {
        let cell = |i: usize| row.get(i).map(opsh_plugin_sdk::display).unwrap_or_default();
        match (cell(1).as_str(), cell(2).as_str()) {
            ("r", "t") => keyless.push(cell(0)),
            ("r", _) => tables.push(cell(0)),
            _ => sequences.push(cell(0)),
        }
    }
    if !keyless.is_empty() {
        return Err(CommandError::Refused(text(
            &format!("{db}: Slony replicates tables by primary key and these have none: {}; add keys first", keyless.join(", ")),
            &format!("{db}: 主キーのないテーブルは Slony で複製できません: {}", keyless.join(", ")),
        )));
    }
    if tables.is_empty() {
        return Err(CommandError::Refused(text(&format!("{db} has no tables to replicate"), &format!("{db} に複製するテーブルがありません"))));
    }
    Ok((tables, sequences))
}

/// The conninfo slon and slonik use for a node. The address is a token the host fills in; the
/// password comes from the appliance's own ~/.pgpass, as for Horizon's start_slon scripts.
pub fn conninfo(db: &Database) -> String {
    format!("dbname={} host={} port={} user={}", db.dbname, opsh_plugin_sdk::address_of(&db.appliance), db.port, db.user)
}

fn preamble(nodes: &[&Database]) -> String {
    let mut script = format!("cluster name = {CLUSTER};\n");
    for (i, node) in nodes.iter().enumerate() {
        script.push_str(&format!("node {} admin conninfo = '{}';\n", i + 1, conninfo(node)));
    }
    script
}

/// slonik: the cluster with `nodes[0]` as node 1 and origin, every other node stored with paths
/// both ways, and set 1 with the tables and sequences.
pub fn init_script(nodes: &[&Database], tables: &[String], sequences: &[String]) -> String {
    let mut script = preamble(nodes);
    script.push_str(&format!("init cluster (id = 1, comment = 'opsh: {} origin');\n", nodes[0].appliance));
    for (i, node) in nodes.iter().enumerate().skip(1) {
        script.push_str(&format!("store node (id = {}, comment = 'opsh: {}', event node = 1);\n", i + 1, node.appliance));
    }
    for (i, server) in nodes.iter().enumerate() {
        for j in 0..nodes.len() {
            if i != j {
                script.push_str(&format!("store path (server = {}, client = {}, conninfo = '{}');\n", i + 1, j + 1, conninfo(server)));
            }
        }
    }
    script.push_str("create set (id = 1, origin = 1, comment = 'All tables and Sequences');\n");
    for (id, table) in tables.iter().enumerate() {
        script.push_str(&format!("set add table (set id = 1, origin = 1, id = {}, fully qualified name = '{table}');\n", id + 1));
    }
    for (id, sequence) in sequences.iter().enumerate() {
        script.push_str(&format!("set add sequence (set id = 1, origin = 1, id = {}, fully qualified name = '{sequence}');\n", id + 1));
    }
    script
}

/// slonik on the origin: a SYNC event, then wait until every subscriber has confirmed it — after
/// writers stopped, everything the origin took is then on the subscribers.
pub fn sync_script(origin: &Database, origin_id: i64, subscribers: &[(&Database, i64)]) -> String {
    let mut script = format!("cluster name = {CLUSTER};\nnode {origin_id} admin conninfo = '{}';\n", conninfo(origin));
    for (db, id) in subscribers {
        script.push_str(&format!("node {id} admin conninfo = '{}';\n", conninfo(db)));
    }
    script.push_str(&format!("sync (id = {origin_id});\n"));
    for (_, id) in subscribers {
        script.push_str(&format!("wait for event (origin = {origin_id}, confirmed = {id}, wait on = {origin_id}, timeout = 120);\n"));
    }
    script
}

/// slonik: every node but the origin subscribes set 1 (the subscriber's copy is truncated and
/// refilled from the origin).
pub fn subscribe_script(nodes: &[&Database]) -> String {
    let mut script = preamble(nodes);
    for i in 1..nodes.len() {
        script.push_str(&format!("subscribe set (id = 1, provider = 1, receiver = {}, forward = no);\n", i + 1));
    }
    script
}
