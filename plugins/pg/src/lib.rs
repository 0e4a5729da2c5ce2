//! `pg`: PostgreSQL basics for every database the inventory grants this plugin.
//!
//! - `pg status` — reachability, role (primary / standby), version, replication of each database.
//! - `pg set-config DATABASE NAME VALUE` — `ALTER SYSTEM SET` then `pg_reload_conf()`, verified
//!   by reading `pg_settings` back; warns when the setting needs a restart.
//! - `pg requirements` — what `doctor` checks: a superuser login on every granted database.
//!
//! Built against opsh:plugin@0.2.0: each step declares its SQL and the host runs exactly that
//! (and waits, asking `check`, until the reloaded value is in effect); the plugin applies nothing.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use opsh_plugin_sdk::ahead;
use opsh_plugin_sdk::requirements::{self, Privilege, Requirements};
use opsh_plugin_sdk::{
    Args, ChangePlan, CheckResult, CheckState, CommandError, CommandKind, CommandResult, Completion, Guest, Invocation, PluginInfo, RowsExt, Step, Table, bad,
    command, good, host, plain, quote, sql, step, table, text, warn,
};

/// Written for opsh:plugin 0.2 (see `opsh_plugin_sdk::WIT_MINOR`).
const _: () = assert!(opsh_plugin_sdk::WIT_MINOR == 2, "this plugin is written for opsh:plugin 0.2");

struct Pg;

impl Guest for Pg {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "pg".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: text("PostgreSQL status and settings", "PostgreSQL の状態と設定"),
            capabilities: opsh_plugin_sdk::capabilities(&["sql"], &[]),
            commands: vec![
                command(
                    "status",
                    CommandKind::Read,
                    text("Role, version and replication of every database", "各データベースのロール・バージョン・レプリケーション"),
                )
                .example("pg status", text("Show every database the inventory grants to pg", "pg に許可された全データベースを表示"))
                .build(),
                command(
                    "set-config",
                    CommandKind::Change,
                    text("Change a server setting (ALTER SYSTEM) and reload", "サーバー設定を変更 (ALTER SYSTEM) して再読み込み"),
                )
                .positional("database", text("Database (inventory name)", "データベース (インベントリ名)"), Completion::Database)
                .positional("name", text("Setting name, e.g. log_min_duration_statement", "設定名 (例: log_min_duration_statement)"), Completion::None)
                .positional("value", text("New value", "新しい値"), Completion::None)
                .example("pg set-config alpha-app log_min_duration_statement 250ms --dry-run", text("Preview the change", "変更内容を確認"))
                .build(),
                requirements::declaration("pg"),
            ],
        }
    }

    fn read(call: Invocation) -> CommandResult<Vec<Table>> {
        match call.command.as_str() {
            "status" => ahead::settled(|| Ok(vec![status()?])),
            requirements::COMMAND => Ok(vec![needs()]),
            other => Err(CommandError::Usage(format!("pg has no read command {other}"))),
        }
    }

    fn plan(call: Invocation) -> CommandResult<ChangePlan> {
        let args = Args(&call);
        let (database, name, value) = (args.required("database")?, args.required("name")?, args.required("value")?);
        let setting =
            sql::query(database, "SELECT current_setting(name) AS shown, context FROM pg_settings WHERE name = $1", &[sql::Value::Text(name.into())])?;
        let Some(current) = setting.first_text("shown") else {
            return Err(CommandError::Usage(format!("{database} has no setting named {name:?}")));
        };
        let mut warnings = Vec::new();
        if matches!(setting.first_text("context").as_deref(), Some("postmaster")) {
            warnings
                .push(text(&format!("{name} takes effect only after a restart of {database}"), &format!("{name} は {database} の再起動後に有効になります")));
        }
        let alter = format!("ALTER SYSTEM SET {} = {}", quote::ident(name), quote::literal(value));
        Ok(ChangePlan {
            summary: text(
                &format!("Set {name} on {database} from {current:?} to {value:?}"),
                &format!("{database} の {name} を {current:?} から {value:?} に変更"),
            ),
            warnings,
            steps: vec![
                step(
                    "alter-system",
                    text(&format!("Write {name} = {value} to postgresql.auto.conf"), &format!("{name} = {value} を postgresql.auto.conf に書き込む")),
                    database,
                )
                .sql(database, &[&alter])
                .idempotent()
                .build(),
                step("reload", text("Reload the configuration", "設定を再読み込み"), database)
                    .sql(database, &["SELECT pg_reload_conf()"])
                    // pg_reload_conf() only signals the server: the value takes effect soon after.
                    .wait_until(text(&format!("{name} = {value} is in effect"), &format!("{name} = {value} が反映される")), 100, 5_000)
                    .idempotent()
                    .build(),
            ],
            if_stopped: Vec::new(),
        })
    }

    /// Every step is declared: the host performs it.
    fn apply(_call: Invocation, step: Step) -> CommandResult<opsh_plugin_sdk::Text> {
        Err(CommandError::Failed(format!("pg applies no step itself; step {} is the host's", step.id)))
    }

    fn check(call: Invocation, step: Step) -> CommandResult<CheckResult> {
        let args = Args(&call);
        let (database, name, value) = (args.required("database")?, args.required("name")?, args.required("value")?);
        let query = match step.id.as_str() {
            "alter-system" => "SELECT count(*) > 0 AS done FROM pg_file_settings WHERE name = $1 AND sourcefile LIKE '%postgresql.auto.conf' AND setting = $2",
            _ => IN_EFFECT,
        };
        let rows = sql::query(database, query, &[sql::Value::Text(name.into()), sql::Value::Text(value.into())])?;
        Ok(match rows.first_bool("done") {
            Some(true) => CheckResult { state: CheckState::Done, detail: text("in effect", "反映済み") },
            Some(false) => CheckResult {
                state: CheckState::NotDone,
                detail: text(&format!("{name} is not {value} yet"), &format!("{name} はまだ {value} ではありません")),
            },
            None => CheckResult { state: CheckState::Unknown, detail: text("no answer", "応答なし") },
        })
    }

    fn verify(call: Invocation) -> CommandResult<Vec<Table>> {
        let args = Args(&call);
        let (database, name) = (args.required("database")?, args.required("name")?);
        let rows = sql::query(
            database,
            "SELECT setting, coalesce(unit, '') AS unit, pending_restart FROM pg_settings WHERE name = $1",
            &[sql::Value::Text(name.into())],
        )?;
        let pending = rows.first_bool("pending_restart").unwrap_or(false);
        Ok(vec![
            table(text("Setting now", "現在の設定"), &["database", "name", "setting", "unit", "pending restart"])
                .row(vec![
                    plain(database),
                    plain(name),
                    good(rows.first_text("setting").unwrap_or_default()),
                    plain(rows.first_text("unit").unwrap_or_default()),
                    if pending { warn("yes") } else { plain("no") },
                ])
                .build(),
        ])
    }
}

/// Whether setting $1 has value $2 now (or waits for a restart).
const IN_EFFECT: &str = "SELECT current_setting($1) = $2 OR setting = $2 OR pending_restart AS done FROM pg_settings WHERE name = $1";

/// Every database granted to pg. A status that could read none of them is a failure (exit 1),
/// not an empty or all-red table with exit 0; one that read some shows what it could.
/// Every granted database: `set-config` runs ALTER SYSTEM and pg_reload_conf().
fn needs() -> Table {
    let mut needs = Requirements::default();
    for database in host::list_targets("database") {
        needs.privilege(&database, Privilege::Superuser, "ALTER SYSTEM and pg_reload_conf() (set-config)");
    }
    needs.table()
}

fn status() -> CommandResult<Table> {
    let mut out =
        table(text("PostgreSQL databases", "PostgreSQL データベース"), &["database", "host", "state", "role", "version", "replication", "connections"]);
    let databases = host::list_targets("database");
    if databases.is_empty() {
        return Err(CommandError::Failed(
            "no database is granted to pg: add databases to the inventory and `[grants.pg] sql = [\"NAME\", …]` (see `opsh inventory`)".into(),
        ));
    }
    let mut failures = Vec::new();
    let mut unread = Vec::new();
    for database in databases {
        let server = host::lookup(&database).ok().and_then(|info| info.attributes.into_iter().find(|(k, _)| k == "host").map(|(_, v)| v)).unwrap_or_default();
        let query = "SELECT current_setting('server_version') AS version, pg_is_in_recovery() AS standby, \
                     (SELECT count(*) FROM pg_stat_replication) AS senders, \
                     (SELECT status FROM pg_stat_wal_receiver LIMIT 1) AS receiver, \
                     (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS connections";
        match sql::query(&database, query, &[]) {
            Ok(rows) => {
                // A role that cannot be read is shown as such, never as "primary".
                let Some(standby) = rows.first_bool("standby") else {
                    unread.push(format!("{database}: it answered, but whether it is a standby could not be read"));
                    out.push(vec![
                        plain(&database),
                        plain(&server),
                        good("up"),
                        bad("cannot tell"),
                        plain(rows.first_text("version").unwrap_or_default()),
                        plain("?"),
                        plain(rows.first_int("connections").map_or("?".to_string(), |n| n.to_string())),
                    ]);
                    continue;
                };
                let replication = if standby {
                    match rows.first_text("receiver").filter(|r| r != "NULL") {
                        Some(status) => good(format!("receiving ({status})")),
                        None => bad("standby, not receiving"),
                    }
                } else {
                    match rows.first_int("senders").unwrap_or(0) {
                        0 => plain("no standbys"),
                        n => good(format!("{n} standby(s) streaming")),
                    }
                };
                out.push(vec![
                    plain(&database),
                    plain(&server),
                    good("up"),
                    plain(if standby { "standby" } else { "primary" }),
                    plain(rows.first_text("version").unwrap_or_default()),
                    replication,
                    plain(rows.first_int("connections").unwrap_or(0).to_string()),
                ]);
            }
            Err(e) => {
                // A server that refuses opsh's login is up: say so, it is not "down".
                let state = match &e {
                    opsh_plugin_sdk::CapabilityError::Auth(_) => "auth failed",
                    opsh_plugin_sdk::CapabilityError::Unreachable(_) | opsh_plugin_sdk::CapabilityError::Timeout(_) => "unreachable",
                    _ => "down",
                };
                failures.push(format!("{database}: {state} ({})", e.brief()));
                out.push(vec![plain(&database), plain(&server), bad(state), plain("?"), plain("?"), plain(e.message()), plain("?")]);
            }
        }
    }
    let table = out.build();
    if failures.len() == table.rows.len() {
        return Err(CommandError::Failed(format!("no database answered: {}", failures.join("; "))));
    }
    if failures.len() + unread.len() == table.rows.len() {
        failures.extend(unread);
        return Err(CommandError::Failed(format!("no database's role could be read: {}", failures.join("; "))));
    }
    Ok(table)
}

#[cfg(target_arch = "wasm32")]
opsh_plugin_sdk::export!(Pg);

#[cfg(test)]
mod tests {
    use opsh_plugin_sdk::fake::{World, ids, invocation, rows, text};
    use opsh_plugin_sdk::{CommandError, Effect, Guest, Invocation};

    fn set_config(name: &str, value: &str) -> Invocation {
        invocation("set-config", &[("database", "alpha-app"), ("name", name), ("value", value)])
    }

    fn setting(shown: &str, context: &str) -> World {
        World::new().sql("alpha-app", "FROM pg_settings WHERE name = $1", rows(&["shown", "context"], vec![vec![text(shown), text(context)]]))
    }

    #[test]
    fn set_config_writes_the_setting_then_reloads_and_waits_until_it_is_in_effect() {
        let (plan, _) = setting("0", "superuser").run(|| super::Pg::plan(set_config("log_min_duration_statement", "250ms")));
        let plan = plan.expect("a plan");
        assert_eq!(ids(&plan), ["alter-system", "reload"]);
        let Effect::Sql(alter) = &plan.steps[0].effects[0] else { panic!("{:?}", plan.steps[0].effects) };
        assert_eq!(alter.statements[0].sql, "ALTER SYSTEM SET \"log_min_duration_statement\" = '250ms'");
        assert!(matches!(&plan.steps[1].effects[..], [Effect::Sql(reload), Effect::Wait(_)] if reload.statements[0].sql == "SELECT pg_reload_conf()"));
        assert!(plan.steps.iter().all(|s| s.custom.is_none()), "the host performs every step");
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        assert_eq!(plan.summary.en, "Set log_min_duration_statement on alpha-app from \"0\" to \"250ms\"");
    }

    #[test]
    fn a_value_is_quoted_as_a_literal_whatever_it_holds() {
        let (plan, _) = setting("", "user").run(|| super::Pg::plan(set_config("search_path", "x'; DROP TABLE t; --")));
        let Effect::Sql(alter) = &plan.expect("a plan").steps[0].effects[0] else { panic!() };
        assert_eq!(alter.statements[0].sql, "ALTER SYSTEM SET \"search_path\" = 'x''; DROP TABLE t; --'");
    }

    #[test]
    fn a_setting_that_needs_a_restart_is_planned_with_a_warning() {
        let (plan, _) = setting("100", "postmaster").run(|| super::Pg::plan(set_config("max_connections", "200")));
        let warnings = plan.expect("a plan").warnings;
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].en, "max_connections takes effect only after a restart of alpha-app");
    }

    /// What the status query returns from a primary without standbys.
    fn a_primary() -> opsh_plugin_sdk::sql::Rows {
        rows(
            &["version", "standby", "senders", "receiver", "connections"],
            vec![vec![
                text("15.4"),
                opsh_plugin_sdk::sql::Value::Boolean(false),
                opsh_plugin_sdk::sql::Value::Int(0),
                opsh_plugin_sdk::sql::Value::Null,
                opsh_plugin_sdk::sql::Value::Int(3),
            ]],
        )
    }

    #[test]
    fn status_says_auth_failed_for_a_login_refused_and_fails_when_no_database_answers() {
        let refused = opsh_plugin_sdk::CapabilityError::Auth("database b: password authentication failed for user \"opsh\"".into());
        let world = World::new()
            .target("database", "a", &[("host", "h1")])
            .target("database", "b", &[("host", "h2")])
            .sql("a", "server_version", a_primary())
            .sql_fails("b", "server_version", refused.clone());
        let (tables, _) = world.run(|| super::Pg::read(invocation("status", &[])));
        let tables = tables.expect("tables");
        assert_eq!(tables[0].rows[1][2], opsh_plugin_sdk::Cell::Bad("auth failed".into()), "{:?}", tables[0].rows[1]);
        let (none, _) = World::new().target("database", "b", &[]).sql_fails("b", "server_version", refused).run(|| super::Pg::read(invocation("status", &[])));
        assert!(matches!(&none, Err(CommandError::Failed(m)) if m.starts_with("no database answered: b: auth failed")), "{none:?}");
        let unreadable = rows(&["version", "standby"], vec![vec![text("15.4"), opsh_plugin_sdk::sql::Value::Null]]);
        let (unread, _) =
            World::new().target("database", "c", &[]).sql("c", "server_version", unreadable.clone()).run(|| super::Pg::read(invocation("status", &[])));
        assert!(
            matches!(&unread, Err(CommandError::Failed(m)) if m == "no database's role could be read: c: it answered, but whether it is a standby could not be read"),
            "{unread:?}"
        );
        let (beside, _) = World::new()
            .target("database", "a", &[])
            .target("database", "c", &[])
            .sql("a", "server_version", a_primary())
            .sql("c", "server_version", unreadable)
            .run(|| super::Pg::read(invocation("status", &[])));
        let beside = beside.expect("one database read in full");
        let c = beside[0].rows.iter().find(|r| r[0] == opsh_plugin_sdk::Cell::Plain("c".into())).expect("c's row");
        assert_eq!(c[3], opsh_plugin_sdk::Cell::Bad("cannot tell".into()), "never shown as primary: {c:?}");
        assert_eq!(c[4], opsh_plugin_sdk::Cell::Plain("15.4".into()), "what was read is kept: {c:?}");
        let (empty, _) = World::new().run(|| super::Pg::read(invocation("status", &[])));
        assert!(matches!(&empty, Err(CommandError::Failed(m)) if m.starts_with("no database is granted to pg")), "{empty:?}");
    }

    #[test]
    fn an_unknown_setting_is_refused_as_a_usage_error() {
        let world = World::new().sql("alpha-app", "FROM pg_settings", rows(&["shown", "context"], vec![]));
        let (plan, asked) = world.run(|| super::Pg::plan(set_config("no_such_setting", "1")));
        assert!(matches!(&plan, Err(CommandError::Usage(m)) if m == "alpha-app has no setting named \"no_such_setting\""), "{plan:?}");
        assert_eq!(asked.len(), 1, "one read, nothing else: {asked:?}");
    }
}
