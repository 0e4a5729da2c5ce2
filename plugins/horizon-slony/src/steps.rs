//! The kinds of step a Horizon runbook is made of: how each is planned (what the operator sees),
//! applied, and checked (for resume, and to confirm an applied step took effect).

use opsh_plugin_sdk::data::kind_of;
use opsh_plugin_sdk::{CheckResult, CheckState, CommandError, CommandResult, Step, Text, file_edit, service, ssh, step, text};

use crate::appliances::Database;
use crate::slony::{self, Role};

/// The kinds of step, as `plan` leaves them in a step's data for `check` (and the subscription's
/// `apply`). Databases are inventory names.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Kind {
    Services {
        host: String,
        services: Vec<String>,
        start: bool,
    },
    SlonStop {
        host: String,
    },
    Fence {
        db: String,
    },
    DropSlony {
        db: String,
    },
    Restore {
        from: String,
        to: String,
    },
    File,
    AvSetup,
    Capabilities {
        db: String,
        old: String,
        new: String,
    },
    /// `nodes[0]` is the origin.
    SlonyInit {
        nodes: Vec<String>,
    },
    SlonStart {
        host: String,
        dbs: Vec<String>,
    },
    Subscribe {
        host: String,
        nodes: Vec<String>,
        script: String,
    },
    /// Slony node ids of the subscribers.
    Sync {
        origin: String,
        subscribers: Vec<i64>,
    },
    ConfirmOrigin {
        db: String,
    },
}

/// A step title with the seed's step number(s) in front, in both languages (`restart` is the
/// seed's closing section, "Restart the primary appliance").
pub fn titled(seed: &str, en: &str, ja: &str) -> Text {
    let mut title = opsh_plugin_sdk::titled(seed, en, ja);
    if seed == "restart" {
        title.ja = format!("[再起動] {ja}");
    }
    title
}

fn services_step(id: &str, title: Text, appliance: &str, services: &[String], action: &str) -> Step {
    let start = action == "start";
    step(id, title, appliance)
        .services(appliance, services, start)
        .idempotent()
        .kind(&Kind::Services { host: appliance.into(), services: services.to_vec(), start })
        .build()
}

pub fn stop_services(seed: &str, appliance: &str, services: &[String], group: &str) -> Step {
    let mut s = services_step(
        &format!("stop-{}-{appliance}", if services.len() == 1 { services[0].to_lowercase() } else { "services".into() }),
        titled(seed, &format!("Stop {} on {appliance}", services.join(", ")), &format!("{appliance} で {} を停止", services.join("、"))),
        appliance,
        services,
        "stop",
    );
    s.group = group.into();
    s
}

pub fn start_services(seed: &str, appliance: &str, services: &[String], id_suffix: &str) -> Step {
    services_step(
        &format!("start-{}-{appliance}{id_suffix}", if services.len() == 1 { services[0].to_lowercase() } else { "services".into() }),
        titled(
            seed,
            &format!("Start {} on {appliance} and confirm it is up", services.join(", ")),
            &format!("{appliance} で {} を開始し、起動を確認", services.join("、")),
        ),
        appliance,
        services,
        "start",
    )
}

/// The seed's `killall slon`, escalated as a busy slon needs it: TERM, up to 10 s, TERM again, up
/// to 10 s, then KILL (slon is a watchdog and a worker). None running is done.
const STOP_SLON: &str = r#"for signal in TERM TERM KILL; do
  killall -q -"$signal" slon || exit 0
  for i in $(seq 20); do pgrep -x slon >/dev/null || exit 0; sleep 0.5; done
done
echo "slon still runs after killall -KILL" >&2
exit 1
"#;

pub fn stop_slon(seed: &str, appliance: &str) -> Step {
    step(
        &format!("stop-slon-{appliance}"),
        titled(seed, &format!("Stop all slon daemons on {appliance} (killall slon)"), &format!("{appliance} のすべての slony デーモンを停止 (killall slon)")),
        appliance,
    )
    .exec(appliance, &["sh", "-c", STOP_SLON, "stop-slon"])
    .privileged()
    .timeout_ms(60_000)
    .wait_until(text(&format!("no slon runs on {appliance}"), &format!("{appliance} で slon が動いていない")), 500, 15_000)
    .group("stop-slon")
    .idempotent()
    .kind(&Kind::SlonStop { host: appliance.into() })
    .build()
}

/// The old primary's copy stops taking writes: read-only for every new session, and the sessions
/// it has ended (its writers are stopped already; this is for anyone else).
pub fn fence_db(seed: &str, db: &Database) -> Step {
    let alter = format!("ALTER DATABASE {} SET default_transaction_read_only = on", opsh_plugin_sdk::quote::ident(&db.dbname));
    let terminate =
        "SELECT count(pg_terminate_backend(pid))::bigint AS ended FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()";
    step(
        &format!("fence-{}", db.name),
        titled(
            seed,
            &format!("Fence {}: read-only for every new session, open sessions ended", db.name),
            &format!("{} を隔離: 新しいセッションは読み取り専用、既存セッションを終了", db.name),
        ),
        &db.name,
    )
    .sql(&db.name, &[&alter, terminate])
    .one_by_one()
    .group("fence")
    .idempotent()
    .kind(&Kind::Fence { db: db.name.clone() })
    .build()
}

pub fn drop_slony(seed: &str, db: &Database) -> Step {
    step(
        &format!("drop-slony-{}", db.name),
        titled(seed, &format!("Drop schema _slony on {}", db.name), &format!("{} で _slony スキーマを削除", db.name)),
        &db.name,
    )
    .sql(&db.name, &[DROP_SLONY])
    .group("drop-slony")
    .idempotent()
    .kind(&Kind::DropSlony { db: db.name.clone() })
    .build()
}

const DROP_SLONY: &str = "DROP SCHEMA IF EXISTS _slony CASCADE";

/// pg_dump of the primary's data (not its Slony schema) and a restore into the secondary in one
/// transaction, run on the secondary appliance. The dump is kept on the secondary.
const RESTORE: &str = r#"set -eu
src_host=$1 src_port=$2 dst_host=$3 dst_port=$4 db=$5 user=$6 dir=$7
umask 077
mkdir -p "$dir"
dump="$dir/opsh-horizon-$db-$(date -u +%Y%m%dT%H%M%SZ).sql"
PGPASSWORD="$SOURCE_PASSWORD" pg_dump --data-only --exclude-schema=_slony -h "$src_host" -p "$src_port" -U "$user" -d "$db" -f "$dump"
tables=$(PGPASSWORD="$TARGET_PASSWORD" psql -X -A -t -h "$dst_host" -p "$dst_port" -U "$user" -d "$db" -c "SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema', '_slony')")
{ echo "SET client_min_messages = warning;"; if [ -n "$tables" ]; then echo "TRUNCATE $tables;"; fi; cat "$dump"; } \
  | PGPASSWORD="$TARGET_PASSWORD" psql -X -q -v ON_ERROR_STOP=1 --single-transaction -h "$dst_host" -p "$dst_port" -U "$user" -d "$db" >/dev/null
echo "restored $db; the backup is kept in $dump"
"#;

pub fn restore(seed: &str, from: &Database, to: &Database, backup_dir: &str) -> Step {
    let args = restore_args(from, to, backup_dir);
    let argv: Vec<&str> = ["sh", "-c", RESTORE, "restore"].into_iter().chain(args.iter().map(String::as_str)).collect();
    step(
        &format!("restore-{}", to.name),
        titled(
            seed,
            &format!("Back up {} and restore it into {} (data only, one transaction)", from.name, to.name),
            &format!("{} をバックアップし {} にリストア (データのみ、1 トランザクション)", from.name, to.name),
        ),
        &to.name,
    )
    .exec(&to.appliance, &argv)
    .env("SOURCE_PASSWORD", ssh::EnvValue::DatabasePassword(from.name.clone()))
    .env("TARGET_PASSWORD", ssh::EnvValue::DatabasePassword(to.name.clone()))
    .timeout_ms(3_600_000)
    .idempotent()
    .kind(&Kind::Restore { from: from.name.clone(), to: to.name.clone() })
    .build()
}

fn restore_args(from: &Database, to: &Database, backup_dir: &str) -> Vec<String> {
    vec![
        opsh_plugin_sdk::address_of(&from.appliance),
        from.port.clone(),
        opsh_plugin_sdk::address_of(&to.appliance),
        to.port.clone(),
        to.dbname.clone(),
        to.user.clone(),
        backup_dir.to_string(),
    ]
}

/// Replace a file's content (the host shows the diff and refuses if the file changed since).
pub fn edit_file(id: &str, title: Text, appliance: &str, snapshot: &file_edit::FileSnapshot, path: &str, content: &str) -> Step {
    step(id, title, appliance).file(appliance, path, &snapshot.sha256, content).idempotent().kind(&Kind::File).build()
}

pub fn av_setup(seed: &str, appliance: &str, script: &str, password_of: &str) -> Step {
    step(
        &format!("av-setup-{appliance}"),
        titled(
            seed,
            &format!("Run av-setup on {appliance} with DB_HOST={appliance} and DB_PASSWORD (from the inventory, never shown)"),
            &format!("{appliance} で DB_HOST と DB_PASSWORD (インベントリから、表示しない) を設定して av-setup を実行"),
        ),
        appliance,
    )
    .exec(appliance, &[script])
    .env("DB_HOST", ssh::EnvValue::Plain(opsh_plugin_sdk::address_of(appliance)))
    .env("DB_PASSWORD", ssh::EnvValue::DatabasePassword(password_of.to_string()))
    .privileged()
    .timeout_ms(600_000)
    .idempotent()
    .kind(&Kind::AvSetup)
    .build()
}

pub fn capabilities(seed: &str, db: &str, old: &str, new: &str) -> Step {
    step(
        &format!("capabilities-{new}"),
        titled(seed, &format!("Move the primary bits from {old} to {new} in {db}"), &format!("{db} でプライマリ ビットを {old} から {new} へ移す")),
        db,
    )
    .sql(
        db,
        &[
            &format!("update appliance set capabilities = (capabilities & 65343) where name={}", opsh_plugin_sdk::quote::literal(old)),
            &format!("update appliance set capabilities = (capabilities | 192) where name={}", opsh_plugin_sdk::quote::literal(new)),
        ],
    )
    // One row each: none or several mean the plan read another table than the one it changes.
    .expect_rows(2)
    .idempotent()
    .kind(&Kind::Capabilities { db: db.into(), old: old.into(), new: new.into() })
    .build()
}

/// slonik on the origin's appliance: init cluster, nodes, paths, set with tables and sequences.
pub fn slony_init(seed: &str, nodes: &[&Database], tables: &[String], sequences: &[String]) -> Step {
    let origin = nodes[0];
    let script = slony::init_script(nodes, tables, sequences);
    step(
        &format!("slony-init-{}", origin.dbname),
        titled(
            seed,
            &format!(
                "Re-initialise Slony for {} with {} as origin (slonik: cluster, nodes, paths, set of {} tables and {} sequences)",
                origin.dbname,
                origin.appliance,
                tables.len(),
                sequences.len()
            ),
            &format!("{} を origin として {} の Slony を再初期化 (slonik)", origin.appliance, origin.dbname),
        ),
        &origin.name,
    )
    .each(nodes, |builder, node| {
        // Leftovers of an interrupted attempt would make `init cluster` fail, and a fenced copy
        // could not take what Slony copies into it: every node starts from nothing. One by
        // one: a fenced database's session starts read-only until the first statement.
        builder
            .sql(
                &node.name,
                &[
                    "SET default_transaction_read_only = off",
                    &format!("ALTER DATABASE {} RESET default_transaction_read_only", opsh_plugin_sdk::quote::ident(&node.dbname)),
                    DROP_SLONY,
                ],
            )
            .one_by_one()
    })
    .exec(&origin.appliance, &["slonik"])
    .stdin(&script)
    .timeout_ms(300_000)
    .idempotent()
    .kind(&Kind::SlonyInit { nodes: names(nodes) })
    .build()
}

pub fn start_slon(seed: &str, appliance: &str, dbs: &[&str], scripts: &[String]) -> Step {
    let mut builder = step(
        &format!("start-slon-{appliance}"),
        titled(
            seed,
            &format!("Start the slon daemons on {appliance} ({})", dbs.join(", ")),
            &format!("{appliance} で slon デーモンを開始 ({})", dbs.join(", ")),
        ),
        appliance,
    );
    for script in scripts {
        builder = builder.exec(appliance, &[script]).privileged().timeout_ms(60_000);
    }
    builder
        .wait_until(text(&format!("a slon runs for each of {}", dbs.join(", ")), &format!("{} の slon がそれぞれ稼働", dbs.join("、"))), 500, 30_000)
        .group("start-slon")
        .idempotent()
        .kind(&Kind::SlonStart { host: appliance.into(), dbs: dbs.iter().map(|d| d.to_string()).collect() })
        .build()
}

pub fn subscribe(seed: &str, nodes: &[&Database]) -> Step {
    let origin = nodes[0];
    let script = slony::subscribe_script(nodes);
    let subscribers: Vec<&str> = nodes[1..].iter().map(|n| n.appliance.as_str()).collect();
    step(
        &format!("slony-subscribe-{}", origin.dbname),
        titled(
            seed,
            &format!("Subscribe {} to {}'s {} and wait until the copy is done and caught up", subscribers.join(", "), origin.appliance, origin.dbname),
            &format!("{} を {} の {} に購読させ、コピー完了と追いつきを待つ", subscribers.join("、"), origin.appliance, origin.dbname),
        ),
        &origin.name,
    )
    .exec(&origin.appliance, &["slonik"])
    .stdin(&script)
    .timeout_ms(300_000)
    .custom(text(
        "slonik subscribes only when the set has no subscribers yet (a resumed run must not subscribe twice); then opsh waits until the copy is done",
        "購読がまだ無いときだけ slonik で購読する (再開時に二重に購読しない)。その後コピー完了を待つ",
    ))
    .idempotent()
    .kind(&Kind::Subscribe { host: origin.appliance.clone(), nodes: names(nodes), script })
    .build()
}

/// Before Slony is taken apart: the subscribers have everything the origin took (its writers are
/// stopped by then), confirmed by Slony itself.
pub fn sync_wait(seed: &str, origin: &Database, origin_id: i64, subscribers: &[(&Database, i64)]) -> Step {
    let script = slony::sync_script(origin, origin_id, subscribers);
    let names: Vec<&str> = subscribers.iter().map(|(d, _)| d.appliance.as_str()).collect();
    step(
        &format!("sync-{}", origin.name),
        titled(
            seed,
            &format!("Wait until {} have confirmed every change of {} (slonik: sync, wait for event)", names.join(", "), origin.name),
            &format!("{} が {} の全変更を確認するまで待つ (slonik: sync, wait for event)", names.join("、"), origin.name),
        ),
        &origin.name,
    )
    .exec(&origin.appliance, &["slonik"])
    .stdin(&script)
    .timeout_ms(300_000)
    .group("sync")
    .idempotent()
    .kind(&Kind::Sync { origin: origin.name.clone(), subscribers: subscribers.iter().map(|(_, id)| *id).collect() })
    .build()
}

pub fn confirm_origin(seed: &str, db: &Database) -> Step {
    step(
        &format!("confirm-origin-{}", db.name),
        titled(
            seed,
            &format!("Confirm the seed's query shows master_node = t on {}", db.name),
            &format!("{} で確認クエリが master_node = t を示すことを確認", db.name),
        ),
        &db.name,
    )
    .wait_until(text(&format!("{} is the origin (master_node = t)", db.name), &format!("{} が origin (master_node = t)", db.name)), 500, 10_000)
    .idempotent()
    .kind(&Kind::ConfirmOrigin { db: db.name.clone() })
    .build()
}

fn names(nodes: &[&Database]) -> Vec<String> {
    nodes.iter().map(|n| n.name.clone()).collect()
}

/// The one step the host cannot perform from its declaration: subscribing is not idempotent, so
/// slonik runs (its declared effect) only when the set has no subscribers yet.
pub fn apply(step: &Step) -> CommandResult<Text> {
    match kind_of::<Kind>(step)? {
        Kind::Subscribe { host, nodes, script } => {
            let subscribed = opsh_plugin_sdk::sql::query(&nodes[0], "SELECT count(*)::bigint AS n FROM _slony.sl_subscribe", &[])?;
            if opsh_plugin_sdk::RowsExt::first_int(&subscribed, "n") != Some(nodes.len() as i64 - 1) {
                slonik(&host, &script)?;
            }
            wait_until(300, "the subscribers to copy the set and catch up", || caught_up(&nodes))?;
            Ok(text("subscribed; the copy is done and the subscribers are caught up", "購読完了。コピーが終わり追いつきました"))
        }
        _ => Err(CommandError::Failed(format!("horizon performs no step {} itself; the host does", step.id))),
    }
}

pub fn check(step: &Step) -> CommandResult<CheckResult> {
    let done = |yes: bool, detail: &str| CheckResult { state: if yes { CheckState::Done } else { CheckState::NotDone }, detail: text(detail, "") };
    let unknown = |e: &dyn std::fmt::Display| CheckResult { state: CheckState::Unknown, detail: text(&e.to_string(), "") };
    Ok(match kind_of::<Kind>(step)? {
        Kind::Services { host, services, start } => {
            let want = if start { service::ServiceState::Running } else { service::ServiceState::Stopped };
            match opsh_plugin_sdk::services_are(&host, &services, want) {
                Ok(yes) => done(yes, "service status"),
                Err(e) => unknown(&e.message()),
            }
        }
        Kind::SlonStop { host } => match slon_gone(&host) {
            Ok(yes) => done(yes, "pgrep -x slon"),
            Err(e) => unknown(&e),
        },
        Kind::DropSlony { db } => match slony::role(&db) {
            Ok(role) => done(role == Role::Standalone, role.describe()),
            Err(e) => unknown(&e.message()),
        },
        Kind::Restore { from, to } => match same_rows(&from, &to) {
            Ok(yes) => done(yes, "row counts of every table"),
            Err(e) => unknown(&e.message()),
        },
        Kind::File => opsh_plugin_sdk::files::check(step)?,
        Kind::AvSetup => CheckResult {
            state: CheckState::Unknown,
            detail: text("av-setup leaves nothing opsh can read back; it is safe to run again", "av-setup の結果は確認できません (再実行は安全です)"),
        },
        Kind::Capabilities { db, old, new } => {
            let query = "SELECT bool_and(CASE WHEN name = $1 THEN capabilities & 192 = 0 ELSE capabilities & 192 = 192 END) AS moved, count(*)::bigint AS n FROM appliance WHERE name IN ($1, $2)";
            match opsh_plugin_sdk::sql::query(&db, query, &[opsh_plugin_sdk::sql::Value::Text(old), opsh_plugin_sdk::sql::Value::Text(new)]) {
                Ok(rows) => done(
                    opsh_plugin_sdk::RowsExt::first_bool(&rows, "moved") == Some(true) && opsh_plugin_sdk::RowsExt::first_int(&rows, "n") == Some(2),
                    "capabilities of both rows",
                ),
                Err(e) => unknown(&e.message()),
            }
        }
        Kind::SlonyInit { nodes } => {
            let roles: Result<Vec<Role>, _> = nodes.iter().map(|db| slony::role(db)).collect();
            match roles {
                Ok(roles) => done(roles[0] == Role::Origin && roles[1..].iter().all(|r| *r != Role::Standalone), "Slony roles of the nodes"),
                Err(e) => unknown(&e.message()),
            }
        }
        Kind::SlonStart { host, dbs } => match slons_for(&host, &dbs) {
            Ok(yes) => done(yes, "pgrep -a slon"),
            Err(e) => unknown(&e),
        },
        Kind::Subscribe { nodes, .. } => match caught_up(&nodes) {
            Ok(yes) => done(yes, "sl_subscribe.sub_active and sl_status"),
            Err(e) => unknown(&e),
        },
        Kind::Fence { db } => match slony::fenced(&db) {
            Ok(yes) => done(yes, "default_transaction_read_only of the database"),
            Err(e) => unknown(&e.message()),
        },
        Kind::Sync { origin, subscribers } => match slony::lag(&origin) {
            Ok(lag) => {
                let behind: Vec<String> = subscribers
                    .iter()
                    .filter(|id| !lag.iter().any(|(n, events, seconds)| n == *id && *events <= 2 && *seconds < 30.0))
                    .map(|id| format!("node {id}"))
                    .collect();
                done(
                    behind.is_empty(),
                    &if behind.is_empty() { "every subscriber is caught up (sl_status)".to_string() } else { format!("not caught up: {}", behind.join(", ")) },
                )
            }
            Err(e) => unknown(&e.message()),
        },
        Kind::ConfirmOrigin { db } => match slony::verification(&db) {
            Ok(found) => done(matches!(found, Some((_, true))), "the seed's verification query"),
            Err(e) => unknown(&e.message()),
        },
    })
}

fn slonik(host_name: &str, script: &str) -> Result<(), CommandError> {
    let mut request = opsh_plugin_sdk::exec_request(&["slonik"], Some(300_000), false);
    request.stdin = Some(script.as_bytes().to_vec());
    let out = ssh::exec(host_name, &request)?;
    if out.status != Some(0) {
        let said = format!("{}\n{}", String::from_utf8_lossy(&out.stderr).trim(), String::from_utf8_lossy(&out.stdout).trim());
        return Err(CommandError::Failed(format!("slonik on {host_name} exited {:?}: {}", out.status, said.trim())));
    }
    Ok(())
}

/// Poll `ready` every half second for `seconds`.
fn wait_until(seconds: u32, what: &str, ready: impl FnMut() -> Result<bool, String>) -> Result<(), CommandError> {
    opsh_plugin_sdk::wait::until(seconds * 1000, 500, what, ready)
}

fn slon_gone(host_name: &str) -> Result<bool, String> {
    crate::appliances::slon_processes(host_name).map(|n| n == 0)
}

/// Does a slon run for each database (its conninfo names `dbname=DB`, wherever in the conninfo
/// and however the start script orders its arguments)?
fn slons_for(host_name: &str, dbs: &[String]) -> Result<bool, String> {
    let out = opsh_plugin_sdk::probe(host_name, &["sh", "-c", "pgrep -a -x slon || true"], Some(10_000)).map_err(|e| e.message().to_string())?;
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    Ok(dbs.iter().all(|db| listing.lines().any(|l| slon_serves(l, db))))
}

/// A `pgrep -a` line of a slon for database `db`: one of its words is `dbname=db` (quoted or not).
fn slon_serves(line: &str, db: &str) -> bool {
    line.split_whitespace().map(|w| w.trim_matches(|c| c == '\'' || c == '"')).any(|w| w.strip_prefix("dbname=") == Some(db))
}

/// Every subscriber has finished the initial copy, and the origin sees them at most a couple
/// of SYNC events behind.
fn caught_up(nodes: &[String]) -> Result<bool, String> {
    for subscriber in &nodes[1..] {
        if !slony::subscription_active(subscriber).map_err(|e| e.message().to_string())? {
            return Ok(false);
        }
    }
    let lag = slony::lag(&nodes[0]).map_err(|e| e.message().to_string())?;
    Ok(lag.len() + 1 >= nodes.len() && lag.iter().all(|(_, events, seconds)| *events <= 2 && *seconds < 30.0))
}

/// The same number of rows in every table of the two databases.
fn same_rows(from: &str, to: &str) -> Result<bool, opsh_plugin_sdk::CapabilityError> {
    Ok(row_counts(from)? == row_counts(to)?)
}

/// Each user table of a database (outside Slony's schema) and its exact row count, by name.
fn row_counts(database: &str) -> Result<Vec<(String, String)>, opsh_plugin_sdk::CapabilityError> {
    // Names quoted by the server (`%I`), so that they can be read from in the count query.
    const TABLES: &str = "SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables \
        WHERE schemaname NOT IN ('pg_catalog', 'information_schema', '_slony') ORDER BY 1";
    let tables = opsh_plugin_sdk::sql::query(database, TABLES, &[])?;
    let names = opsh_plugin_sdk::rows::texts(&tables, "name");
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let counts = names
        .iter()
        .map(|name| format!("SELECT {} AS name, count(*)::text AS n FROM {name}", opsh_plugin_sdk::quote::literal(name)))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let rows = opsh_plugin_sdk::sql::query(database, &format!("SELECT name, n FROM ({counts}) c ORDER BY name"), &[])?;
    Ok(opsh_plugin_sdk::rows::texts(&rows, "name").into_iter().zip(opsh_plugin_sdk::rows::texts(&rows, "n")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_slon_is_found_by_its_dbname_wherever_the_conninfo_puts_it() {
        assert!(super::slon_serves("12 /usr/bin/slon -s 500 slony dbname=fdb host=a port=5432 user=opsh", "fdb"));
        assert!(super::slon_serves("12 /usr/bin/slon slony host=a port=6432 user=opsh dbname=fdb", "fdb"), "dbname last");
        assert!(super::slon_serves("12 slon -p /run/x.pid slony 'dbname=edb host=a'", "edb"));
        assert!(!super::slon_serves("12 slon slony host=a dbname=fdb2", "fdb"));
    }
}
