//! `xdb`: EDB xDB Replication Server 6.2 controlled switchover (seed 002, 16 steps) and
//! switch-back, for a single-master replication system between two PostgreSQL databases.
//!
//! - `xdb status` — where the control schemas are, the connection information they record,
//!   the method, capture triggers, pending shadow rows, slots, the configured controller and
//!   whether the servers run.
//! - `xdb switchover` — all 16 steps; running it again switches the roles back.
//! - `xdb swap-control-schema` — steps 5–10 alone.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod system;

use opsh_plugin_sdk::ahead;
use opsh_plugin_sdk::invariants::{Invariants, Seen};
use opsh_plugin_sdk::requirements::{self, Privilege, Requirements};
use opsh_plugin_sdk::{
    Args, CapabilityError, ChangePlan, CheckResult, CheckState, CommandError, CommandKind, CommandResult, Completion, Guest, Invocation, PluginInfo, RowsExt,
    Step, Table, Text, address_of, bad, command, file_edit, files, good, names, pg_hba, plain, properties, quote, service, sql, ssh, step, table, text, warn,
};
use system::{Node, PUB_SCHEMAS, SUB_SCHEMA, System};

/// Written for opsh:plugin 0.2 (see `opsh_plugin_sdk::WIT_MINOR`): the host performs every
/// step as declared; the plugin applies none.
const _: () = assert!(opsh_plugin_sdk::WIT_MINOR == 2, "this plugin is written for opsh:plugin 0.2");

struct Xdb;

impl Guest for Xdb {
    fn describe() -> PluginInfo {
        let topology = |c: opsh_plugin_sdk::build::CommandBuilder| {
            c.option(
                "topology",
                false,
                text("the replication system (a topology with plugin = \"xdb\"), when there are several", "レプリケーション システム (複数ある場合)"),
                Completion::Topology,
            )
        };
        PluginInfo {
            name: "xdb".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: text(
                "EDB xDB Replication Server 6.2: controlled switchover of publication and subscription",
                "EDB xDB Replication Server 6.2: 公開・購読データベースの切り替え",
            ),
            capabilities: opsh_plugin_sdk::capabilities(&["sql", "ssh", "file-edit", "service"], &[LIST_BACKUP]),
            commands: vec![
                topology(command(
                    "status",
                    CommandKind::Read,
                    text(
                        "Roles, control schemas, connection info, triggers, pending rows, slots, controller, servers",
                        "ロール・制御スキーマ・接続情報・トリガー・未反映行・スロット・コントローラ・サーバー",
                    ),
                ))
                .example("xdb status --topology xdb-trigger", text("Show the trigger-based replication system", "トリガー方式のシステムを表示"))
                .build(),
                topology(command(
                    "switchover",
                    CommandKind::Change,
                    text("Controlled switchover (16 steps); run again to switch back", "制御された切り替え (16 手順)。再実行で元に戻す"),
                ))
                .option(
                    "quiesce",
                    false,
                    text(
                        "connection-limit (default: CONNECTION LIMIT 0 and end non-superuser sessions) or confirmed (done by hand)",
                        "connection-limit (既定) または confirmed",
                    ),
                    Completion::Choices(vec!["connection-limit".into(), "confirmed".into()]),
                )
                .option(
                    "server-host",
                    false,
                    text("move the publication/subscription server metadata to this host (step 11)", "サーバーのメタデータをこのホストへ移す (手順 11)"),
                    Completion::Host,
                )
                .flag(
                    "drop-old-slot",
                    text("log-based: drop the replication slot on the old publication host (step 14)", "ログ方式: 旧公開ホストのスロットを削除"),
                )
                .example(
                    "xdb switchover --topology xdb-trigger --dry-run",
                    text("Preview every schema move, control-schema update and file diff", "全手順と差分を確認"),
                )
                .build(),
                topology(command(
                    "swap-control-schema",
                    CommandKind::Change,
                    text(
                        "Steps 5-10 alone: move the control schemas and triggers, swap the connection information",
                        "手順 5〜10 のみ: 制御スキーマとトリガーの移動、接続情報の入れ替え",
                    ),
                ))
                .example("xdb swap-control-schema --topology xdb-trigger --dry-run", text("Preview the control-schema move", "制御スキーマの移動を確認"))
                .build(),
                requirements::declaration("xdb"),
            ],
        }
    }

    fn read(call: Invocation) -> CommandResult<Vec<Table>> {
        if call.command == requirements::COMMAND {
            return needs().map(|t| vec![t]);
        }
        let system = System::load(Args(&call).get("topology"))?;
        match call.command.as_str() {
            "status" => ahead::settled(|| status(&system)),
            other => Err(CommandError::Usage(format!("xdb has no read command {other}"))),
        }
    }

    fn plan(call: Invocation) -> CommandResult<ChangePlan> {
        let args = Args(&call);
        let system = System::load(args.get("topology"))?;
        match call.command.as_str() {
            "switchover" => {
                plan_switchover(&system, args.get("quiesce").unwrap_or("connection-limit"), args.get("server-host"), args.flag("drop-old-slot"), true)
            }
            "swap-control-schema" => plan_switchover(&system, "confirmed", None, false, false),
            other => Err(CommandError::Usage(format!("xdb has no command {other}"))),
        }
    }

    /// Every step is declared: the host performs it.
    fn apply(_call: Invocation, step: Step) -> CommandResult<Text> {
        Err(CommandError::Failed(format!("xdb applies no step itself; step {} is the host's", step.id)))
    }

    fn check(_call: Invocation, step: Step) -> CommandResult<CheckResult> {
        check_step(&step)
    }

    fn verify(call: Invocation) -> CommandResult<Vec<Table>> {
        let system = System::load(Args(&call).get("topology"))?;
        let (publication, subscription, pub_live, sub_live) = system.roles()?;
        if !sub_live.triggers.is_empty() {
            return Err(CommandError::Failed(format!("{} still has capture triggers: {:?}", subscription.db, sub_live.triggers)));
        }
        system::method(&publication, &pub_live)
            .map_err(|_| CommandError::Failed(format!("{} has no capture triggers: changes there would not replicate", publication.db)))?;
        let (pub_rec, sub_rec) = system::recorded(&publication.db)?;
        if names::host_of(&pub_rec.host).map(|m| m.host) != Some(publication.host.clone())
            || names::host_of(&sub_rec.host).map(|m| m.host) != Some(subscription.host.clone())
        {
            return Err(CommandError::Failed(format!(
                "the control schema on {} does not name {} as publication and {} as subscription",
                publication.db, publication.host, subscription.host
            )));
        }
        if call.command == "switchover" {
            let differ = system::differing_tables(&publication.db, &subscription.db, &system::published_tables(&pub_live))?;
            if !differ.is_empty() {
                return Err(CommandError::Failed(format!(
                    "after the switchover, {} differ between {} and {}",
                    differ.join(", "),
                    publication.db,
                    subscription.db
                )));
            }
        }
        let mut tables = status(&system)?;
        let report = invariants(&system);
        tables[0] = report.verified()?;
        Ok(tables)
    }
}

fn status(system: &System) -> CommandResult<Vec<Table>> {
    let mut nodes = table(
        text(&format!("Replication system {}", system.topology), &format!("レプリケーション システム {}", system.topology)),
        &["node", "host", "role", "method", "control schemas", "capture triggers", "shadow rows (history)", "tables equal", "slots"],
    );
    let roles = system.roles();
    let subscription_db = roles.as_ref().ok().map(|(_, sub, _, _)| sub.db.clone());
    for node in &system.nodes {
        let live = match system::live(node) {
            Ok(live) => live,
            Err(e) => {
                nodes.push(vec![
                    plain(node.db.as_str()),
                    plain(node.host.as_str()),
                    bad(error_text(&e)),
                    plain(""),
                    plain(""),
                    plain(""),
                    plain(""),
                    plain(""),
                    plain(""),
                ]);
                continue;
            }
        };
        let is_pub = live.schemas.iter().any(|s| s == "_edb_replicator_pub");
        let (method, shadow, equal) = if is_pub {
            let method = match system::method(node, &live) {
                Ok(m) if m == "W" => plain("log-based"),
                Ok(_) => plain("trigger-based"),
                Err(e) => bad(error_text(&e)),
            };
            let shadow = match system::shadow_rows(&node.db) {
                Ok(n) => plain(n.to_string()),
                Err(e) => bad(error_text(&e)),
            };
            let equal = match subscription_db.as_deref().map(|sub| system::differing_tables(&node.db, sub, &system::published_tables(&live))) {
                Some(Ok(differ)) if differ.is_empty() => good("yes"),
                Some(Ok(differ)) => warn(format!("no: {}", differ.join(", "))),
                Some(Err(e)) => bad(e.brief()),
                None => plain("?"),
            };
            (method, shadow, equal)
        } else {
            (plain(""), plain("-"), plain("-"))
        };
        nodes.push(vec![
            plain(node.db.as_str()),
            plain(node.host.as_str()),
            if is_pub { good("publication") } else { plain("subscription") },
            method,
            plain(live.schemas.join(", ")),
            plain(live.triggers.iter().map(|(t, g)| format!("{g} on {t}")).collect::<Vec<_>>().join(", ")),
            shadow,
            equal,
            plain(live.slots.iter().map(|(s, p)| format!("{s} ({p})")).collect::<Vec<_>>().join(", ")),
        ]);
    }
    let mut control = table(
        text("Connection information in the control schema (passwords not shown)", "制御スキーマの接続情報 (パスワードは非表示)"),
        &["definition", "host", "port", "database", "user"],
    );
    if let Ok((publication, _, _, _)) = &roles {
        for (label, query) in [
            (
                "publication database",
                "SELECT db_host AS h, db_port::text AS p, db_name AS d, db_user AS u FROM _edb_replicator_pub.xdb_pub_database ORDER BY pub_db_id",
            ),
            (
                "subscription database",
                "SELECT db_host AS h, db_port::text AS p, db_name AS d, db_user AS u FROM _edb_replicator_sub.xdb_sub_database ORDER BY sub_db_id",
            ),
            ("subscription server", "SELECT sub_server_ip AS h, sub_server_port::text AS p, '' AS d, '' AS u FROM _edb_replicator_pub.xdb_sub_servers"),
            ("publication server", "SELECT pub_server_ip AS h, pub_server_port::text AS p, sub_name AS d, '' AS u FROM _edb_replicator_sub.xdb_subscriptions"),
        ] {
            if let Ok(rows) = sql::query(&publication.db, query, &[]) {
                for row in &rows.rows {
                    let cell = |i: usize| plain(row.get(i).map(opsh_plugin_sdk::display).unwrap_or_default());
                    control.push(vec![plain(label), cell(0), cell(1), cell(2), cell(3)]);
                }
            }
        }
    }
    let mut servers = table(text("Servers and controller", "サーバーとコントローラ"), &["host", "what", "state"]);
    for name in &system.services {
        let state = match service::status(&system.server_host, name) {
            Ok(service::ServiceState::Running) => good("running"),
            Ok(service::ServiceState::Stopped) => warn("stopped"),
            Ok(service::ServiceState::Unknown) => warn("unknown"),
            Err(e) => bad(e.brief()),
        };
        servers.push(vec![plain(system.server_host.as_str()), plain(name.as_str()), state]);
    }
    match file_edit::read(&system.server_host, &system.config_file) {
        Ok(conf) => {
            let value = |k: &str| properties::get(&conf.content, k).unwrap_or("?").to_string();
            servers.push(vec![
                plain(system.server_host.as_str()),
                plain(format!("controller in {}", system.config_file)),
                plain(format!("{}:{} database {} user {}", value("host"), value("port"), value("database"), value("user"))),
            ]);
        }
        Err(e) => servers.push(vec![plain(system.server_host.as_str()), plain(system.config_file.as_str()), bad(e.brief())]),
    }
    roles?;
    Ok(vec![invariants(system).table(), nodes.build(), control.build(), servers.build()])
}

/// One publication database per system, and capture triggers only there.
fn invariants(system: &System) -> Invariants {
    let mut report = Invariants::new();
    let lives: Vec<(String, Result<system::Live, String>)> = system.nodes.iter().map(|n| (n.db.clone(), system::live(n).map_err(|e| error_text(&e)))).collect();
    let seen = |test: fn(&system::Live) -> bool| -> Vec<(String, Seen)> {
        lives
            .iter()
            .map(|(db, live)| {
                let s = match live {
                    Ok(l) if test(l) => Seen::Yes,
                    Ok(_) => Seen::No,
                    Err(e) => Seen::Unknown(e.clone()),
                };
                (db.clone(), s)
            })
            .collect()
    };
    report.at_most_one(
        text("at most one publication database", "公開データベースは最大 1 つ"),
        &system.topology,
        &seen(|l| l.schemas.iter().any(|s| s == "_edb_replicator_pub")),
    );
    report.at_most_one(
        text("capture triggers on one database only", "キャプチャ トリガーは 1 つのデータベースのみ"),
        &system.topology,
        &seen(|l| !l.triggers.is_empty()),
    );
    report
}

fn error_text(e: &CommandError) -> String {
    match e {
        CommandError::Usage(m) | CommandError::Failed(m) => m.clone(),
        CommandError::Refused(t) => t.en.clone(),
        CommandError::Capability(c) => c.brief(),
    }
}

/// Do the xDB servers run? A server that cannot be asked (not granted, host down) is never
/// taken for stopped: that refuses the command, saying why.
fn servers_running(system: &System) -> CommandResult<bool> {
    let mut all = true;
    for name in &system.services {
        match service::status(&system.server_host, name) {
            Ok(service::ServiceState::Running) => {}
            Ok(_) => all = false,
            Err(e @ CapabilityError::Denied(_)) => return Err(CommandError::Capability(e)),
            Err(e) => {
                return Err(refused(format!(
                    "the state of {name} on {} cannot be read ({}): opsh does not guess whether the xDB servers run",
                    system.server_host,
                    e.brief()
                )));
            }
        }
    }
    Ok(all)
}

/// Titles and refusals in English only (the Japanese falls back to it).
fn titled(seed: &str, en: &str) -> Text {
    opsh_plugin_sdk::titled(seed, en, "")
}

fn refused(en: String) -> CommandError {
    opsh_plugin_sdk::refused(en, "")
}

/// pg_dump of schemas, proven readable (`pg_restore --list` lists every schema) before it takes
/// its final name: a file under that name is always a verified backup.
const DUMP: &str = r#"set -eu
addr=$1 port=$2 user=$3 db=$4 file=$5; shift 5
mkdir -p "$(dirname "$file")"
schemas=""; for s in "$@"; do schemas="$schemas -n $s"; done
PGPASSWORD="$DB_PASSWORD" pg_dump -h "$addr" -p "$port" -U "$user" -d "$db" -Fc $schemas -f "$file.tmp"
for s in "$@"; do
  pg_restore --list "$file.tmp" | grep -q " SCHEMA - $s " || { echo "the backup $file.tmp does not hold schema $s" >&2; exit 1; }
done
mv "$file.tmp" "$file"
echo "backed up to $file"
"#;

/// The one command this plugin runs while nothing may change (declared in `describe()`): the
/// table of contents of a backup, which `backup_readable` reads for the schemas.
const LIST_BACKUP: &str = "pg_restore --list *";

const RESTORE: &str = r#"set -eu
addr=$1 port=$2 user=$3 db=$4 file=$5
PGPASSWORD="$DB_PASSWORD" pg_restore -h "$addr" -p "$port" -U "$user" -d "$db" --no-owner --clean --if-exists --exit-on-error "$file"
echo "restored $file"
"#;

fn node_args(node: &Node) -> Vec<String> {
    vec![address_of(&node.host), node.port.clone(), node.user.clone(), node.dbname.clone()]
}

fn plan_switchover(system: &System, quiesce: &str, server_host: Option<&str>, drop_old_slot: bool, whole: bool) -> CommandResult<ChangePlan> {
    if !["connection-limit", "confirmed"].contains(&quiesce) {
        return Err(CommandError::Usage(format!("--quiesce {quiesce}: use connection-limit or confirmed")));
    }
    let (a, b, a_live, b_live) = system.roles()?;
    let method = system::method(&a, &a_live)?;
    let log_based = method == "W";
    let mut warnings = Vec::new();
    // What xDB itself records of both databases; they must be the inventory's nodes.
    let (a_rec, b_rec) = system::recorded(&a.db)?;
    for (recorded, node, role) in [(&a_rec.host, &a, "publication"), (&b_rec.host, &b, "subscription")] {
        if names::host_of(recorded).map(|m| m.host) != Some(node.host.clone()) {
            return Err(refused(format!(
                "xDB records {recorded} as the {role} database's host, which is no name of {} ({}) in the inventory: add it to the host's aliases, or name the right databases in topology {}",
                node.host, node.db, system.topology
            )));
        }
    }
    // Step 4: can each node take its new role? xDB connects as the users it records: b's user
    // becomes the publication database user, a's the subscription database user.
    for (node, user, role) in [(&b, &b_rec.user, "publication"), (&a, &a_rec.user, "subscription")] {
        match system::superuser(&node.db, user)? {
            Some(true) => {}
            Some(false) => {
                return Err(refused(format!(
                    "the user xDB records for {}, {user}, is not a superuser: it cannot act as the {role} database user (seed step 4)",
                    node.db
                )));
            }
            None => {
                return Err(refused(format!(
                    "the user xDB records for {}, {user}, does not exist there: it cannot act as the {role} database user (seed step 4)",
                    node.db
                )));
            }
        }
    }
    if log_based && (b_live.wal_level != "logical" || b_live.free_slots < 1) {
        return Err(refused(format!(
            "{} does not meet the log-based criteria (wal_level = {}, {} free replication slots): set wal_level = logical and max_replication_slots, or switch to the trigger-based method first",
            b.db, b_live.wal_level, b_live.free_slots
        )));
    }
    let counts = sql::query(
        &a.db,
        "SELECT (SELECT count(*) FROM _edb_replicator_pub.xdb_pub_database)::bigint AS p, (SELECT count(*) FROM _edb_replicator_sub.xdb_sub_database)::bigint AS s, \
        (SELECT bool_and(p.db_password = s.db_password) FROM _edb_replicator_pub.xdb_pub_database p, _edb_replicator_sub.xdb_sub_database s) AS same_password",
        &[],
    )?;
    if counts.first_int("p") != Some(1) || counts.first_int("s") != Some(1) {
        return Err(refused(format!(
            "{}'s control schema defines {} publication and {} subscription databases: opsh switches a system of exactly one of each",
            a.db,
            counts.first_int("p").unwrap_or(0),
            counts.first_int("s").unwrap_or(0)
        )));
    }
    let servers_running = servers_running(system)?;
    // Applied shadow rows stay until xDB's cleanup job: only the tables themselves say whether
    // the subscription has everything (the check the switchover procedure asks for).
    let tables = system::published_tables(&a_live);
    let differ = system::differing_tables(&a.db, &b.db, &tables)?;
    if whole && !differ.is_empty() && !servers_running {
        return Err(refused(format!(
            "{} differ between {} and {} and the xDB servers on {} do not run: the changes cannot be synchronized, and a switchover would lose them; start the servers first",
            differ.join(", "),
            a.db,
            b.db,
            system.server_host
        )));
    }
    if !whole && (servers_running || !differ.is_empty()) {
        return Err(refused(format!(
            "swap-control-schema needs the servers stopped and both databases equal (servers {}, tables differing: {}): run seed steps 1-3 first, or `xdb switchover`",
            if servers_running { "running" } else { "stopped" },
            if differ.is_empty() { "none".to_string() } else { differ.join(", ") }
        )));
    }
    if !differ.is_empty() {
        warnings.push(text(
            &format!("{} differ between {} and {}: step 2 synchronizes and waits until every published table is equal", differ.join(", "), a.db, b.db),
            "",
        ));
    }

    let mut steps = Vec::new();
    // The limit given back at the end: never guessed (an unreadable one is not "unlimited").
    let limit = sql::query(&a.db, "SELECT datconnlimit::bigint AS l FROM pg_database WHERE datname = current_database()", &[])?
        .first_int("l")
        .ok_or_else(|| refused(format!("{}'s connection limit cannot be read: opsh would not know what to give back after the switchover", a.db)))?;
    if whole {
        if quiesce == "connection-limit" {
            // The reading session opsh checks through is kept by the quiesce; a new one is
            // refused to a non-superuser while the connection limit is 0.
            let reader = sql::query(&a.db, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user", &[])?.first_bool("rolsuper");
            if reader != Some(true) {
                warnings.push(text(
                    &format!(
                        "opsh reads {} as a user that is not a superuser: its open session is kept through CONNECTION LIMIT 0, but a new one would be refused — if a check then cannot read {}, the run stops with it closed (resume after `ALTER DATABASE … CONNECTION LIMIT -1`, or use --quiesce confirmed)",
                        a.db, a.db
                    ),
                    "",
                ));
            }
            steps.push(
                step("quiesce", titled("1", &format!("Stop transaction processing on {}: CONNECTION LIMIT 0, end non-superuser sessions", a.db)), &a.db)
                    // opsh's own sessions stay: its checks read this database through the
                    // switchover, and CONNECTION LIMIT 0 would refuse a non-superuser a new one.
                    .sql(&a.db, &[&format!("ALTER DATABASE {} CONNECTION LIMIT 0", quote::ident(&a.dbname)), "SELECT count(pg_terminate_backend(pid))::bigint AS ended FROM pg_stat_activity JOIN pg_roles ON rolname = usename WHERE datname = current_database() AND pid <> pg_backend_pid() AND NOT rolsuper AND application_name <> 'opsh'"])
                    .one_by_one()
                    .idempotent()
                    .kind(&Kind::Limit { db: a.db.clone(), limit: 0 })
                    .build(),
            );
        } else {
            warnings.push(text(&format!("step 1 (no more transactions on {}) was done by hand, as --quiesce confirmed says", a.db), ""));
        }
        if servers_running {
            // The subscription must then hold exactly the publication's data — xDB keeps
            // applied shadow rows, so only the tables can tell.
            steps.push(repcli_step(
                "2",
                "synchronize",
                "-dosynchronize",
                system,
                &Direction { publication: &a, subscription: &b, tables: &tables, until_equal: true },
                "Synchronize pending updates and wait until every published table is equal on both",
            ));
        } else {
            warnings.push(text(
                &format!("the xDB servers on {} do not run and both databases are equal: step 2 has nothing to synchronize", system.server_host),
                "",
            ));
        }
        steps.push(services_step("3", "stop-servers", system, "stop"));
    }
    // Steps 5 and 6. The triggers are saved and dropped before the schemas: a log-based rrpt_
    // trigger depends on _edb_replicator_pub.capturetruncateevent and would vanish with it.
    let pub_dump = system.backup(&a, "control-schemas.dump");
    let mut dump_argv: Vec<String> = vec!["sh".into(), "-c".into(), DUMP.into(), "dump".into()];
    dump_argv.extend(node_args(&a));
    dump_argv.push(pub_dump.clone());
    dump_argv.extend(PUB_SCHEMAS.iter().map(|s| s.to_string()));
    steps.push(exec_step(
        "5",
        "backup-publication-schemas",
        &format!("Back up {} from {} to {pub_dump} (verified readable)", PUB_SCHEMAS.join(", "), a.db),
        &a.host,
        dump_argv,
        &a.db,
        Kind::Dump { host: a.host.clone(), file: pub_dump.clone(), schemas: strings(&PUB_SCHEMAS) },
    ));
    // Step 6: the triggers' and functions' definitions are read now, so the backup written and
    // the statements that drop and later restore them are the ones shown.
    let trigger_file = system.backup(&a, "triggers.sql");
    let saved = system::capture_ddl(&a.db)?;
    if let Some((_, missing)) = a_live.triggers.iter().find(|(_, g)| !saved.triggers.iter().any(|(name, _)| name == g)) {
        return Err(refused(format!("{}: pg_get_triggerdef gave no definition of capture trigger {missing}; nothing can be backed up safely", a.db)));
    }
    let backup = file_edit::read(&a.host, &trigger_file)?;
    steps.push(
        step(
            "backup-triggers",
            titled("6", &format!("Back up {} capture triggers and their functions from {} to {trigger_file}", a_live.triggers.len(), a.db)),
            &a.host,
        )
        .file(&a.host, &trigger_file, &backup.sha256, &saved.backup(&a.db))
        .idempotent()
        .kind(&Kind::BackupTriggers { host: a.host.clone(), file: trigger_file.clone(), triggers: trigger_names(&a_live.triggers) })
        .build(),
    );
    let mut drops: Vec<String> = a_live.triggers.iter().map(|(t, g)| format!("DROP TRIGGER IF EXISTS {} ON {t}", quote::ident(g))).collect();
    drops.extend(saved.trigger_functions.iter().map(|f| format!("DROP FUNCTION IF EXISTS {f}()")));
    steps.push(
        step("drop-triggers", titled("6", &format!("Drop the capture triggers and functions on {} (saved in {trigger_file} first)", a.db)), &a.db)
            // Never drop a trigger the backup does not hold (also on retry or resume).
            .exec(
                &a.host,
                &["sh", "-c", TRIGGERS_SAVED, "triggers-saved", &trigger_file]
                    .into_iter()
                    .chain(a_live.triggers.iter().map(|(_, g)| g.as_str()))
                    .collect::<Vec<_>>(),
            )
            .timeout_ms(60_000)
            .sql(&a.db, &drops.iter().map(String::as_str).collect::<Vec<_>>())
            .idempotent()
            .kind(&Kind::DropTriggers { db: a.db.clone() })
            .build(),
    );
    steps.push(drop_schemas_step("5", "drop-publication-schemas", &a, &PUB_SCHEMAS, &pub_dump));
    // Step 7.
    let sub_dump = system.backup(&b, "subscription-schema.dump");
    let mut sub_argv: Vec<String> = vec!["sh".into(), "-c".into(), DUMP.into(), "dump".into()];
    sub_argv.extend(node_args(&b));
    sub_argv.push(sub_dump.clone());
    sub_argv.push(SUB_SCHEMA.into());
    steps.push(exec_step(
        "7",
        "backup-subscription-schema",
        &format!("Back up {SUB_SCHEMA} from {} to {sub_dump} (verified readable)", b.db),
        &b.host,
        sub_argv,
        &b.db,
        Kind::Dump { host: b.host.clone(), file: sub_dump.clone(), schemas: strings(&[SUB_SCHEMA]) },
    ));
    steps.push(drop_schemas_step("7", "drop-subscription-schema", &b, &[SUB_SCHEMA], &sub_dump));
    // Steps 8 and 9: each backup is restored from the host that holds it.
    steps.push(restore_step("8", "restore-publication-schemas", &pub_dump, &a, &b, &PUB_SCHEMAS));
    steps.push(
        step("restore-triggers", titled("8", &format!("Restore the capture triggers and functions from {trigger_file} on {}", b.db)), &b.db)
            .sql(&b.db, &saved.restore(&system::triggers(&b.db)?).iter().map(String::as_str).collect::<Vec<_>>())
            .idempotent()
            .kind(&Kind::RestoreTriggers { db: b.db.clone(), triggers: trigger_names(&a_live.triggers) })
            .build(),
    );
    steps.push(restore_step("9", "restore-subscription-schema", &sub_dump, &b, &a, &[SUB_SCHEMA]));
    // Step 10: connection information swapped inside SQL: no password crosses into opsh.
    steps.push(
        step(
            "swap-connection-info",
            titled(
                "10",
                &format!(
                    "In {}'s control schema: the publication database is now {} and the subscription database {} (host, port, user, password swapped)",
                    b.db, b.host, a.host
                ),
            ),
            &b.db,
        )
        .sql(&b.db, &[SWAP])
        .kind(&Kind::Swap { db: b.db.clone(), new_publication: b.host.clone() })
        .build(),
    );
    if whole {
        if let Some(server) = server_host {
            let current = sql::query(&b.db, "SELECT (SELECT pub_server_ip FROM _edb_replicator_sub.xdb_subscriptions LIMIT 1) AS ip", &[])?
                .first_text("ip")
                .unwrap_or_default();
            let address = names::in_form(server, names::host_of(&current).and_then(|m| m.form).as_deref())?;
            steps.push(
                step("move-server-metadata", titled("11", &format!("Publication and subscription server metadata → {server}")), &b.db)
                    .sql(
                        &b.db,
                        &[
                            &format!("UPDATE _edb_replicator_sub.xdb_subscriptions SET pub_server_ip = {}", quote::literal(&address)),
                            &format!("UPDATE _edb_replicator_pub.xdb_sub_servers SET sub_server_ip = {}", quote::literal(&address)),
                        ],
                    )
                    .idempotent()
                    .kind(&Kind::ServerIp { db: b.db.clone(), address: address.clone() })
                    .build(),
            );
            warnings.push(text(
                &format!("step 11: the servers' metadata moves to {server}; installing and starting xDB there, and its configuration file, remain yours"),
                "",
            ));
        }
        // Step 12.
        let conf = file_edit::read(&system.server_host, &system.config_file)?;
        if !conf.exists {
            return Err(refused(format!(
                "{} does not exist on {}: set config-file in the topology to the xDB Replication Configuration file",
                system.config_file, system.server_host
            )));
        }
        let controller = properties::get(&conf.content, "host").and_then(names::host_of);
        if controller.as_ref().map(|m| m.host.as_str()) == Some(a.host.as_str()) && properties::get(&conf.content, "database") == Some(a_rec.dbname.as_str()) {
            if counts.first_bool("same_password") != Some(true) {
                return Err(refused(format!(
                    "the new controller {}'s encrypted password differs from the old one's: opsh does not handle passwords; give both databases the same user password as the seed assumes, or edit password= in {} by hand and use `xdb swap-control-schema`",
                    b.db, system.config_file
                )));
            }
            let mut content = conf.content.clone();
            // The new controller as xDB records it (its host in the form the file uses).
            let host = names::in_form(&b.host, controller.and_then(|m| m.form).as_deref())?;
            for (key, value) in [("host", host), ("port", b_rec.port.clone()), ("database", b_rec.dbname.clone()), ("user", b_rec.user.clone())] {
                content = properties::set(&content, key, &value).map_err(|e| refused(format!("{}:{}: {e}", system.server_host, system.config_file)))?;
            }
            steps.push(file_step(
                "12",
                "edit-replication-config",
                &format!("Name {} as the controller database in {}", b.db, system.config_file),
                &system.server_host,
                &system.config_file,
                &conf,
                &content,
                None,
            ));
        } else {
            warnings.push(text(
                &format!(
                    "{} on {} does not name {} as the controller: left as it is (step 12 applies only to the controller)",
                    system.config_file, system.server_host, a.db
                ),
                "",
            ));
        }
        // Step 13: pg_hba.conf admits the xDB servers as the new roles' users, with the method
        // the node already uses for that user (and, log-based, for replication on the new
        // publication).
        for (node, dbname, user, role) in [(&b, &b_rec.dbname, &b_rec.user, "publication"), (&a, &a_rec.dbname, &a_rec.user, "subscription")] {
            let path = sql::query(&node.db, "SELECT setting AS f FROM pg_settings WHERE name = 'hba_file'", &[])?.first_text("f").unwrap_or_default();
            let hba = file_edit::read(&node.host, &path)?;
            let method = pg_hba::method_for(&hba.content, dbname, user).ok_or_else(|| {
                refused(format!("{}:{path} has no host rule for {user} on {dbname}: opsh cannot tell which authentication method to admit the xDB servers with; add the rule by hand", node.host))
            })?;
            // pg_hba wants an address and its mask: the server's IP (its address or an IP alias),
            // else its name (PostgreSQL then checks it by DNS).
            let server = match names::ip_address(&system.server_host)? {
                Some((token, suffix)) => format!("{token}{suffix}"),
                None => {
                    warnings.push(text(&format!("the inventory knows {} by name only: its pg_hba rules name it so (PostgreSQL then checks it by reverse DNS); add its IP as an alias to get address rules", system.server_host), ""));
                    address_of(&system.server_host)
                }
            };
            let mask = "";
            let mut content = hba.content.clone();
            let mut rules = vec![format!("host {dbname} {user} {server}{mask} {method}")];
            if log_based && role == "publication" {
                rules.push(format!("host replication {user} {server}{mask} {method}"));
            }
            let mut changed = false;
            for rule in rules {
                if let Some(next) =
                    pg_hba::ensure(&content, &rule, &format!("opsh xdb switchover: the xDB servers on {} reach the {role} database", system.server_host))
                {
                    content = next;
                    changed = true;
                }
            }
            if changed {
                steps.push(file_step(
                    "13",
                    &format!("pg-hba-{}", node.host),
                    &format!("Admit the xDB servers to {} as the {role} database in pg_hba.conf, then reload", node.db),
                    &node.host,
                    &path,
                    &hba,
                    &content,
                    Some(&node.db),
                ));
            }
        }
        // Step 14.
        if log_based {
            for (slot, plugin) in a_live.slots.iter().filter(|(_, p)| p == "test_decoding") {
                let slot_literal = quote::literal(slot);
                steps.push(
                    step(&format!("create-slot-{slot}"), titled("14", &format!("Create replication slot {slot} ({plugin}) on {}", b.db)), &b.db)
                        // Only if it is not there yet (a resumed run): one statement, no gap.
                        .sql(
                            &b.db,
                            &[&format!(
                                "SELECT count(pg_create_logical_replication_slot({slot_literal}, {}))::bigint AS created FROM (SELECT WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = {slot_literal})) AS absent",
                                quote::literal(plugin)
                            )],
                        )
                        .idempotent()
                        .kind(&Kind::Slot { db: b.db.clone(), slot: slot.clone(), exists: true })
                        .build(),
                );
                if drop_old_slot {
                    steps.push(
                        step(&format!("drop-slot-{slot}"), titled("14", &format!("Drop replication slot {slot} on {}", a.db)), &a.db)
                            .sql(
                                &a.db,
                                &[&format!(
                                    "SELECT count(pg_drop_replication_slot(slot_name)::text)::bigint AS dropped FROM pg_replication_slots WHERE slot_name = {slot_literal}"
                                )],
                            )
                            .idempotent()
                            .kind(&Kind::Slot { db: a.db.clone(), slot: slot.clone(), exists: false })
                            .build(),
                    );
                } else {
                    warnings.push(text(&format!("slot {slot} stays on {} (inactive until a switch-back); add --drop-old-slot to drop it", a.db), ""));
                }
            }
        }
        steps.push(services_step("15", "start-servers", system, "start"));
        steps.push(repcli_step(
            "16",
            "snapshot",
            "-dosnapshot",
            system,
            &Direction { publication: &b, subscription: &a, tables: &tables, until_equal: false },
            "The first replication is a snapshot",
        ));
        steps.push(repcli_step(
            "16",
            "synchronize-after",
            "-dosynchronize",
            system,
            &Direction { publication: &b, subscription: &a, tables: &tables, until_equal: false },
            "Then synchronization replication",
        ));
        if quiesce == "connection-limit" {
            steps.push(
                step("reopen", titled("16", &format!("Give {} its connection limit back ({limit}); applications now use {}", a.db, b.db)), &a.db)
                    .sql(&a.db, &[&format!("ALTER DATABASE {} CONNECTION LIMIT {limit}", quote::ident(&a.dbname))])
                    .idempotent()
                    .kind(&Kind::Limit { db: a.db.clone(), limit })
                    .build(),
            );
        }
    }
    Ok(ChangePlan {
        summary: text(
            &format!(
                "{}: {} ({}) becomes the publication and {} the subscription; running it again switches back",
                if whole { "Controlled switchover" } else { "Control schema swap" },
                b.db,
                if log_based { "log-based" } else { "trigger-based" },
                a.db
            ),
            "",
        ),
        steps,
        warnings,
        if_stopped: vec![text(
            &if whole {
                format!(
                    "{} stays closed to applications (connection limit 0) and the xDB servers may stay stopped until the run finishes; each dropped control schema and the triggers are in their backups under {} on their hosts",
                    a.db, system.backup_dir
                )
            } else {
                format!(
                    "the control schemas may be half moved until the run finishes; each dropped one is in its backup under {} on its host",
                    system.backup_dir
                )
            },
            "",
        )],
    })
}

/// Swap the publication and subscription database definitions in one statement (both sides read
/// the values from before the statement).
const SWAP: &str = "WITH p AS (SELECT db_host, db_port, db_name, db_user, db_password FROM _edb_replicator_pub.xdb_pub_database), \
    s AS (SELECT db_host, db_port, db_name, db_user, db_password FROM _edb_replicator_sub.xdb_sub_database), \
    up AS (UPDATE _edb_replicator_pub.xdb_pub_database d SET db_host = s.db_host, db_port = s.db_port, db_name = s.db_name, db_user = s.db_user, db_password = s.db_password FROM s RETURNING d.pub_db_id) \
    UPDATE _edb_replicator_sub.xdb_sub_database d SET db_host = p.db_host, db_port = p.db_port, db_name = p.db_name, db_user = p.db_user, db_password = p.db_password FROM p";

fn trigger_names(triggers: &[(String, String)]) -> Vec<String> {
    triggers.iter().map(|(_, g)| g.clone()).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A script on `host` that is handed the password of database `password_of`.
fn exec_step(seed: &str, id: &str, title: &str, host: &str, argv: Vec<String>, password_of: &str, kind: Kind) -> Step {
    let shown: Vec<&str> = argv.iter().map(String::as_str).collect();
    step(id, titled(seed, title), host)
        .exec(host, &shown)
        .env("DB_PASSWORD", ssh::EnvValue::DatabasePassword(password_of.into()))
        .timeout_ms(3_600_000)
        .idempotent()
        .kind(&kind)
        .build()
}

/// Before the capture triggers are dropped, their backup must hold each one.
const TRIGGERS_SAVED: &str = r#"file=$1; shift
for g in "$@"; do
  grep -qF "CREATE TRIGGER $g " "$file" || { echo "the trigger backup $file lacks $g: nothing is dropped" >&2; exit 1; }
done
echo "$file holds every capture trigger"
"#;

/// Before a schema is dropped, its backup must list it (also when a resumed run gets here).
const BACKUP_HOLDS: &str = r#"set -eu
file=$1; shift
for s in "$@"; do
  pg_restore --list "$file" | grep -q " SCHEMA - $s " || { echo "the backup $file does not hold schema $s: nothing is dropped" >&2; exit 1; }
done
echo "$file holds $*"
"#;

fn drop_schemas_step(seed: &str, id: &str, node: &Node, schemas: &[&str], backup: &str) -> Step {
    let statements: Vec<String> = schemas.iter().map(|s| format!("DROP SCHEMA IF EXISTS {s} CASCADE")).collect();
    let guard: Vec<&str> = ["sh", "-c", BACKUP_HOLDS, "backup-holds", backup].into_iter().chain(schemas.iter().copied()).collect();
    step(id, titled(seed, &format!("Drop {} on {} (its backup {backup} is checked readable first)", schemas.join(", "), node.db)), &node.db)
        .exec(&node.host, &guard)
        .timeout_ms(600_000)
        .sql(&node.db, &statements.iter().map(String::as_str).collect::<Vec<_>>())
        .idempotent()
        .kind(&Kind::DropSchemas { db: node.db.clone(), schemas: strings(schemas) })
        .build()
}

fn restore_step(seed: &str, id: &str, file: &str, from: &Node, to: &Node, schemas: &[&str]) -> Step {
    let mut argv: Vec<String> = vec!["sh".into(), "-c".into(), RESTORE.into(), "restore".into()];
    argv.extend(node_args(to));
    argv.push(file.to_string());
    let shown: Vec<&str> = argv.iter().map(String::as_str).collect();
    step(id, titled(seed, &format!("Restore {} into {} from {file} (on {})", schemas.join(", "), to.db, from.host)), &to.db)
        .exec(&from.host, &shown)
        .env("DB_PASSWORD", ssh::EnvValue::DatabasePassword(to.db.clone()))
        .timeout_ms(3_600_000)
        .idempotent()
        .kind(&Kind::Restore { db: to.db.clone(), schemas: strings(schemas) })
        .build()
}

fn services_step(seed: &str, id: &str, system: &System, action: &str) -> Step {
    let builder = step(
        id,
        titled(seed, &format!("{} the publication and subscription servers on {}", if action == "stop" { "Stop" } else { "Start" }, system.server_host)),
        &system.server_host,
    );
    builder
        .services(&system.server_host, &system.services, action != "stop")
        .idempotent()
        .kind(&Kind::Services { host: system.server_host.clone(), services: system.services.clone(), start: action != "stop" })
        .build()
}

/// Which way replication runs: the publication, the subscription, the published tables; and
/// whether the step waits until every one of them is equal on both.
struct Direction<'a> {
    publication: &'a Node,
    subscription: &'a Node,
    tables: &'a [String],
    until_equal: bool,
}

fn repcli_step(seed: &str, id: &str, op: &str, system: &System, direction: &Direction, what: &str) -> Step {
    let Direction { publication, subscription, tables, until_equal } = direction;
    let argv = [system.repcli.as_str(), op, system.subscription.as_str(), "-repsvrfile", system.repsvrfile.as_str()];
    let builder = step(id, titled(seed, &format!("{what} ({} {op} {})", system.repcli, system.subscription)), &system.server_host)
        .exec(&system.server_host, &argv)
        .timeout_ms(3_600_000);
    let builder = if *until_equal {
        builder.wait_until(text(&format!("every published table of {} is equal on {}", publication.db, subscription.db), ""), 500, 120_000)
    } else {
        builder
    };
    builder
        .idempotent()
        .kind(&Kind::Repcli { db: publication.db.clone(), sub_db: subscription.db.clone(), tables: tables.to_vec(), until_equal: *until_equal })
        .build()
}

/// A file replaced (and, for a server's pg_hba.conf, the server reloaded).
#[allow(clippy::too_many_arguments)]
fn file_step(seed: &str, id: &str, title: &str, host: &str, path: &str, snapshot: &file_edit::FileSnapshot, content: &str, reload: Option<&str>) -> Step {
    let builder = step(id, titled(seed, title), host).file(host, path, &snapshot.sha256, content);
    let builder = match reload {
        Some(db) => builder.sql(db, &["SELECT pg_reload_conf()"]),
        None => builder,
    };
    builder.idempotent().kind(&Kind::File).build()
}

/// Is the backup FILE readable, and does it hold every schema of the comma-separated SCHEMAS?
fn backup_readable(host: &str, file: &str, schemas: &[String]) -> Result<(), String> {
    let out = match opsh_plugin_sdk::probe(host, &["pg_restore", "--list", file], Some(60_000)) {
        Ok(out) if out.status == Some(0) => out,
        Ok(out) => return Err(format!("no readable backup at {file}: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => return Err(e.brief()),
    };
    let listing = String::from_utf8_lossy(&out.stdout);
    match schemas.iter().find(|s| !listing.lines().any(|line| line.contains(&format!(" SCHEMA - {s} ")))) {
        Some(missing) => Err(format!("{file} does not hold schema {missing}")),
        None => Ok(()),
    }
}

fn schemas_present(db: &str, schemas: &[String]) -> Result<usize, CommandError> {
    let live = system::live(&Node { db: db.into(), host: String::new(), port: String::new(), dbname: String::new(), user: String::new() })?;
    Ok(schemas.iter().filter(|s| live.schemas.contains(s)).count())
}

/// The kinds of step, as `plan` leaves them in a step's data for `check`. Databases are inventory
/// names.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Kind {
    Limit {
        db: String,
        limit: i64,
    },
    Repcli {
        db: String,
        sub_db: String,
        tables: Vec<String>,
        until_equal: bool,
    },
    Services {
        host: String,
        services: Vec<String>,
        start: bool,
    },
    Dump {
        host: String,
        file: String,
        schemas: Vec<String>,
    },
    DropSchemas {
        db: String,
        schemas: Vec<String>,
    },
    Restore {
        db: String,
        schemas: Vec<String>,
    },
    BackupTriggers {
        host: String,
        file: String,
        triggers: Vec<String>,
    },
    DropTriggers {
        db: String,
    },
    RestoreTriggers {
        db: String,
        triggers: Vec<String>,
    },
    Swap {
        db: String,
        new_publication: String,
    },
    ServerIp {
        db: String,
        address: String,
    },
    File,
    /// The replication slot exists (created) or not (dropped).
    Slot {
        db: String,
        slot: String,
        exists: bool,
    },
}

fn check_step(step: &Step) -> CommandResult<CheckResult> {
    let result = |yes: bool, detail: String| CheckResult { state: if yes { CheckState::Done } else { CheckState::NotDone }, detail: text(&detail, "") };
    let unknown = |detail: String| CheckResult { state: CheckState::Unknown, detail: text(&detail, "") };
    let outcome: Result<CheckResult, CommandError> = (|| {
        Ok(match opsh_plugin_sdk::data::kind_of::<Kind>(step)? {
            Kind::Limit { db, limit } => {
                let rows = sql::query(&db, "SELECT datconnlimit::bigint AS l FROM pg_database WHERE datname = current_database()", &[])?;
                let now = rows.first_int("l");
                result(now == Some(limit), format!("connection limit {}", now.map_or("unreadable".into(), |n| n.to_string())))
            }
            Kind::Repcli { db, sub_db, tables, until_equal: true } => {
                let differ = system::differing_tables(&db, &sub_db, &tables)?;
                result(differ.is_empty(), if differ.is_empty() { "every published table is equal".into() } else { format!("differing: {}", differ.join(", ")) })
            }
            Kind::Repcli { .. } => unknown("a replication run leaves nothing opsh can read back; running it again is harmless".into()),
            Kind::Services { host, services, start } => {
                let want = if start { service::ServiceState::Running } else { service::ServiceState::Stopped };
                result(opsh_plugin_sdk::services_are(&host, &services, want)?, "service status".into())
            }
            Kind::Dump { host, file, schemas } => result(backup_readable(&host, &file, &schemas).is_ok(), "pg_restore --list".into()),
            Kind::DropSchemas { db, schemas } => {
                let n = schemas_present(&db, &schemas)?;
                result(n == 0, format!("{n} of the schemas remain"))
            }
            Kind::Restore { db, schemas } => {
                let n = schemas_present(&db, &schemas)?;
                result(n == schemas.len(), format!("{n} of {} schemas present", schemas.len()))
            }
            Kind::BackupTriggers { host, file, triggers } => {
                let file = file_edit::read(&host, &file)?;
                let all = triggers.iter().all(|g| file.content.contains(&format!("CREATE TRIGGER {g} ")));
                result(file.exists && all, "the backup file names every trigger".into())
            }
            Kind::DropTriggers { db } => {
                let left = system::triggers(&db)?;
                result(left.is_empty(), format!("{} capture triggers left", left.len()))
            }
            Kind::RestoreTriggers { db, triggers } => {
                let have: Vec<String> = system::triggers(&db)?.into_iter().map(|(_, g)| g).collect();
                result(triggers.iter().all(|g| have.contains(g)), format!("{} capture triggers present", have.len()))
            }
            Kind::Swap { db, new_publication } => {
                let rows = sql::query(&db, "SELECT db_host AS h FROM _edb_replicator_pub.xdb_pub_database ORDER BY pub_db_id LIMIT 1", &[])?;
                let host = rows.first_text("h").unwrap_or_default();
                result(host == address_of(&new_publication), format!("the publication database definition names {host}"))
            }
            Kind::ServerIp { db, address } => {
                let rows =
                    sql::query(&db, "SELECT bool_and(pub_server_ip = $1) AS ok FROM _edb_replicator_sub.xdb_subscriptions", &[sql::Value::Text(address)])?;
                result(rows.first_bool("ok") == Some(true), "xdb_subscriptions.pub_server_ip".into())
            }
            Kind::File => files::check(step)?,
            Kind::Slot { db, slot, exists } => {
                let rows = sql::query(&db, "SELECT count(*)::bigint AS n FROM pg_replication_slots WHERE slot_name = $1", &[sql::Value::Text(slot)])?;
                let there = rows.first_int("n") == Some(1);
                result(there == exists, format!("slot {}", if there { "exists" } else { "absent" }))
            }
        })
    })();
    match outcome {
        Ok(r) => Ok(r),
        Err(CommandError::Capability(e)) => Ok(unknown(e.brief())),
        Err(e) => Err(e),
    }
}

#[cfg(target_arch = "wasm32")]
opsh_plugin_sdk::export!(Xdb);

/// Plans against a scripted replication system (see `opsh_plugin_sdk::fake`): n1-edb publishes
/// to n2-edb (trigger-based, table public.emp), the xDB servers on n1.
/// Of every replication system: pg_dump and pg_restore on the nodes' hosts, edb-repcli on the
/// server host, and superuser logins (xDB's own users must be superusers, too).
fn needs() -> CommandResult<Table> {
    let mut needs = Requirements::default();
    for topology in opsh_plugin_sdk::inventory::managed_topologies("xdb") {
        let system = System::load(Some(&topology.name))?;
        for node in &system.nodes {
            needs.tool(&node.host, "pg_dump", "swap-control-schema (backup)");
            needs.tool(&node.host, "pg_restore", "swap-control-schema (backup check, restore)");
            needs.privilege(&node.db, Privilege::Superuser, "xDB's control schema, triggers, replication slots, pg_reload_conf()");
        }
        needs.tool(&system.server_host, &system.repcli, "switchover (edb-repcli)");
    }
    Ok(needs.table())
}

#[cfg(test)]
mod plan_tests {
    use opsh_plugin_sdk::fake::{World, ids, invocation, rows, text};
    use opsh_plugin_sdk::service::ServiceState;
    use opsh_plugin_sdk::sql::Value;
    use opsh_plugin_sdk::{CommandError, Effect, Guest, Invocation, Step};

    fn world(servers: ServiceState) -> World {
        let one = |column: &str, value: Value| rows(&[column], vec![vec![value]]);
        let recorded = |host: &str| rows(&["host", "port", "dbname", "usr"], vec![vec![text(host), text("5432"), text("edb"), text("opsh")]]);
        let facts = rows(&["wal_level", "free_slots", "slots"], vec![vec![text("replica"), Value::Int(10), text("")]]);
        let mut world = World::new()
            .target(
                "topology",
                "xdb-trigger",
                &[("plugin", "xdb"), ("member.node", "n1-edb,n2-edb"), ("server-host", "n1"), ("subscription", "emp_sub"), ("backup-dir", "/var/backups")],
            )
            .target("database", "n1-edb", &[("host", "n1"), ("port", "5432"), ("dbname", "edb"), ("user", "opsh")])
            .target("database", "n2-edb", &[("host", "n2"), ("port", "5432"), ("dbname", "edb"), ("user", "opsh")])
            .sql("n1-edb", "FROM pg_namespace WHERE nspname IN", one("s", text("_edb_replicator_pub,_edb_replicator_sub,_edb_scheduler")))
            .sql("n2-edb", "FROM pg_namespace WHERE nspname IN", one("s", text("_edb_replicator_sub")))
            .sql(
                "n1-edb",
                "JOIN pg_class c ON c.oid = t.tgrelid",
                rows(&["tbl", "trigger"], vec![vec![text("public.emp"), text("rrpi_public_emp")], vec![text("public.emp"), text("rrpu_public_emp")]]),
            )
            .sql("n2-edb", "JOIN pg_class c ON c.oid = t.tgrelid", rows(&["tbl", "trigger"], vec![]))
            .sql("n1-edb", "AS same_password", rows(&["p", "s", "same_password"], vec![vec![Value::Int(1), Value::Int(1), Value::Boolean(true)]]))
            .sql("n1-edb", "ORDER BY pub_db_id", recorded("{{addr:n1}}"))
            .sql("n1-edb", "ORDER BY sub_db_id", recorded("{{addr:n2}}"))
            .sql(
                "n1-edb",
                "pg_get_functiondef",
                rows(
                    &["ddl", "name", "trigger_function"],
                    vec![vec![
                        text("CREATE OR REPLACE FUNCTION public.rrpi_public_emp_tgfunc()\n RETURNS trigger\nAS $f$ BEGIN RETURN NEW; END $f$\n"),
                        text("public.rrpi_public_emp_tgfunc"),
                        Value::Boolean(true),
                    ]],
                ),
            )
            .sql(
                "n1-edb",
                "pg_get_triggerdef",
                rows(
                    &["name", "ddl", "mode"],
                    vec![
                        vec![
                            text("rrpi_public_emp"),
                            text("CREATE TRIGGER rrpi_public_emp AFTER INSERT ON public.emp FOR EACH ROW EXECUTE FUNCTION rrpi_public_emp_tgfunc()"),
                            text(""),
                        ],
                        vec![
                            text("rrpu_public_emp"),
                            text("CREATE TRIGGER rrpu_public_emp AFTER UPDATE ON public.emp FOR EACH ROW EXECUTE FUNCTION rrpi_public_emp_tgfunc()"),
                            text("ALTER TABLE emp ENABLE ALWAYS TRIGGER rrpu_public_emp"),
                        ],
                    ],
                ),
            )
            .service("n1", "edb-xdbpubserver", servers)
            .service("n1", "edb-xdbsubserver", servers);
        for db in ["n1-edb", "n2-edb"] {
            world = world
                .sql(db, "current_setting('wal_level')", facts.clone())
                .sql(db, "FROM pg_roles WHERE rolname = $1", one("rolsuper", Value::Boolean(true)))
                .sql(db, "md5(string_agg(t::text", one("d", text("0cc175b9 3")))
                .sql(db, "SELECT datconnlimit", one("l", Value::Int(-1)));
        }
        world
    }

    fn swap() -> Invocation {
        invocation("swap-control-schema", &[])
    }

    fn sql_of(step: &Step) -> Vec<String> {
        step.effects
            .iter()
            .filter_map(|e| if let Effect::Sql(s) = e { Some(s) } else { None })
            .flat_map(|s| s.statements.iter().map(|st| st.sql.clone()))
            .collect()
    }

    #[test]
    fn swap_control_schema_backs_up_before_every_drop_and_restores_the_triggers_it_read() {
        let (plan, _) = world(ServiceState::Stopped).run(|| super::Xdb::plan(swap()));
        let plan = plan.expect("a plan");
        assert_eq!(
            ids(&plan),
            [
                "backup-publication-schemas",
                "backup-triggers",
                "drop-triggers",
                "drop-publication-schemas",
                "backup-subscription-schema",
                "drop-subscription-schema",
                "restore-publication-schemas",
                "restore-triggers",
                "restore-subscription-schema",
                "swap-connection-info",
            ]
        );
        let Effect::Exec(dump) = &plan.steps[0].effects[0] else { panic!("{:?}", plan.steps[0]) };
        assert_eq!(dump.env, [("DB_PASSWORD".to_string(), opsh_plugin_sdk::ssh::EnvValue::DatabasePassword("n1-edb".into()))]);
        let Effect::File(backup) = &plan.steps[1].effects[0] else { panic!("{:?}", plan.steps[1]) };
        assert_eq!(backup.path, "/var/backups/xdb-edb-n1-triggers.sql");
        assert!(backup.new_content.contains("ALTER TABLE emp ENABLE ALWAYS TRIGGER rrpu_public_emp;\n"), "the trigger's mode is kept: {}", backup.new_content);
        assert!(
            matches!(&plan.steps[2].effects[0], Effect::Exec(guard) if guard.argv[3] == "triggers-saved" && guard.argv[5..] == ["rrpi_public_emp", "rrpu_public_emp"]),
            "the backup is checked to hold every trigger before the drop: {:?}",
            plan.steps[2].effects[0]
        );
        assert_eq!(
            sql_of(&plan.steps[2]),
            [
                "DROP TRIGGER IF EXISTS \"rrpi_public_emp\" ON public.emp",
                "DROP TRIGGER IF EXISTS \"rrpu_public_emp\" ON public.emp",
                "DROP FUNCTION IF EXISTS public.rrpi_public_emp_tgfunc()"
            ]
        );
        assert!(
            matches!(&plan.steps[3].effects[..], [Effect::Exec(guard), Effect::Sql(_)] if guard.argv[3] == "backup-holds"),
            "the backup is listed before the schemas are dropped: {:?}",
            plan.steps[3].effects
        );
        let restored = sql_of(&plan.steps[7]);
        assert_eq!(restored.len(), 4, "{restored:#?}");
        assert!(restored[0].starts_with("CREATE OR REPLACE FUNCTION public.rrpi_public_emp_tgfunc()"));
        assert!(restored[1].starts_with("DO $opsh$ BEGIN IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgname = 'rrpi_public_emp')"), "{}", restored[1]);
        assert_eq!(restored[3], "ALTER TABLE emp ENABLE ALWAYS TRIGGER rrpu_public_emp");
        assert!(plan.steps.iter().all(|s| s.custom.is_none()));
    }

    #[test]
    fn a_switchover_quiesces_synchronizes_moves_the_controller_admits_the_servers_and_reopens() {
        let hba = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        let conf = "type=postgresql\ndatabase=edb\nuser=opsh\npassword=x\nport=5432\nhost={{addr:n1}}\n";
        let mut world = world(ServiceState::Running)
            // opsh reads with a plan-user that is not a superuser.
            .sql("n1-edb", "rolname = current_user", rows(&["rolsuper"], vec![vec![Value::Boolean(false)]]))
            .target("host", "n1", &[("address-kind", "ipv4")])
            .file("n1", "/etc/edb-repl.conf", conf)
            .file("n1", "/pg/n1/pg_hba.conf", hba)
            .file("n2", "/pg/n2/pg_hba.conf", hba);
        for (db, path) in [("n1-edb", "/pg/n1/pg_hba.conf"), ("n2-edb", "/pg/n2/pg_hba.conf")] {
            world = world.sql(db, "name = 'hba_file'", rows(&["f"], vec![vec![text(path)]]));
        }
        let (plan, _) = world.run(|| super::Xdb::plan(invocation("switchover", &[])));
        let plan = plan.expect("a plan");
        let ids = ids(&plan);
        assert_eq!(ids[..3], ["quiesce", "synchronize", "stop-servers"]);
        assert!(sql_of(&plan.steps[0])[1].ends_with("AND NOT rolsuper AND application_name <> 'opsh'"), "opsh's own sessions survive the quiesce");
        assert!(plan.warnings.iter().any(|w| w.en.starts_with("opsh reads n1-edb as a user that is not a superuser")), "{:?}", plan.warnings);
        assert_eq!(ids[13..], ["edit-replication-config", "pg-hba-n2", "pg-hba-n1", "start-servers", "snapshot", "synchronize-after", "reopen"]);
        let Effect::File(config) = &plan.steps[13].effects[0] else { panic!("{:?}", plan.steps[13]) };
        assert!(config.new_content.contains("host={{addr:n2}}\n") && !config.new_content.contains("{{addr:n1}}"), "{}", config.new_content);
        let Effect::File(admit) = &plan.steps[14].effects[0] else { panic!() };
        assert!(admit.new_content.ends_with("host edb opsh {{addr:n1}}/32 scram-sha-256\n"), "{}", admit.new_content);
        assert!(matches!(plan.steps[14].effects.last(), Some(Effect::Sql(reload)) if reload.statements[0].sql == "SELECT pg_reload_conf()"));
        assert_eq!(sql_of(&plan.steps[19]), ["ALTER DATABASE \"edb\" CONNECTION LIMIT -1"], "the limit read while planning is given back");
        assert!(plan.if_stopped[0].en.starts_with("n1-edb stays closed to applications"), "{:?}", plan.if_stopped);
    }

    #[test]
    fn swap_control_schema_is_refused_while_the_servers_run() {
        let (plan, asked) = world(ServiceState::Running).run(|| super::Xdb::plan(swap()));
        assert!(matches!(&plan, Err(CommandError::Refused(t)) if t.en.starts_with("swap-control-schema needs the servers stopped")), "{plan:?}");
        assert!(asked.iter().all(|a| !a.starts_with("write ")), "nothing written: {asked:?}");
    }
}
