//! The four procedures of the seed as plans, the status view, and the verification of each goal.

use opsh_plugin_sdk::invariants::{Invariants, Seen};
use opsh_plugin_sdk::{
    Args, ChangePlan, CommandError, CommandResult, Invocation, RowsExt, Step, Table, bad, file_edit, good, names, plain, properties, refused, sql, table, text,
    warn,
};

use crate::appliances::{self, Database, Horizon, Pair, PairKind};

/// A subscriber whose last confirmed event is older than this is not promoted without `--force`
/// (a healthy one confirms within a few SYNC intervals; event counts alone say nothing, as a
/// quiet origin keeps making SYNC events that carry no data).
const MAX_LAG_SECONDS: f64 = 30.0;
use crate::slony::{self, Role};
use crate::steps::{self, titled};

pub fn status(horizon: &Horizon) -> CommandResult<Vec<Table>> {
    let mut appliances_table =
        table(text("Appliances", "アプライアンス"), &["appliance", "pair", "reachable", "services", "slon", "capabilities", "primary bits"]);
    let mut slony_table =
        table(text("Slony per database", "データベースごとの Slony"), &["database", "appliance", "role", "local node", "subscribers (lag)", "seed query"]);
    let mut files_table = table(text("Database hosts named in the properties files", "properties ファイルが指す DB ホスト"), &["appliance", "file", "hosts"]);
    let capabilities = capabilities_rows(horizon);
    let roles = roles(horizon);
    for pair in &horizon.pairs {
        for appliance in &pair.appliances {
            let reachable = appliances::reachable(appliance);
            let (services, slon) = match &reachable {
                Ok(()) => {
                    let states = appliances::service_states(appliance, &horizon.layout.services);
                    let summary = states.iter().map(|(s, st)| format!("{s} {st}")).collect::<Vec<_>>().join(", ");
                    let all_running = states.iter().all(|(_, st)| st == "running");
                    let slon = match appliances::slon_processes(appliance) {
                        Ok(n) => plain(format!("{n} processes")),
                        Err(e) => warn(e),
                    };
                    (if all_running { good(summary) } else { warn(summary) }, slon)
                }
                Err(_) => (bad("?"), bad("?")),
            };
            let (caps, bits) = match capabilities.iter().find(|(name, _)| name == appliance) {
                Some((_, caps)) => (plain(caps.to_string()), if caps & 192 == 192 { good("64+128 (primary)") } else { plain("-") }),
                None => (plain("?"), plain("?")),
            };
            appliances_table.push(vec![
                plain(appliance.as_str()),
                plain(pair.label()),
                match &reachable {
                    Ok(()) => good("yes"),
                    Err(e) => bad(e.as_str()),
                },
                services,
                slon,
                caps,
                bits,
            ]);
            for dbname in pair.databases() {
                let Ok(db) = horizon.database(appliance, dbname) else { continue };
                slony_table.push(slony_row(db, role_of(&roles, &db.name)));
                if reachable.is_ok() {
                    let path = horizon.layout.properties(dbname);
                    if let Ok(snapshot) = file_edit::read(appliance, &path) {
                        let hosts = properties::get(&snapshot.content, &format!("{dbname}.hosts"))
                            .map(str::to_string)
                            .unwrap_or_else(|| if snapshot.exists { "(no hosts line)".into() } else { "(no file)".into() });
                        files_table.push(vec![plain(appliance.as_str()), plain(path), plain(hosts)]);
                    }
                }
            }
            if reachable.is_ok()
                && let Ok(snapshot) = file_edit::read(appliance, &horizon.layout.diagnose_properties)
            {
                for key in ["db.jdbc.url", "db.fdb.jdbc.url"] {
                    let value = properties::get(&snapshot.content, key).unwrap_or("(not set)");
                    files_table.push(vec![plain(appliance.as_str()), plain(format!("{} {key}", horizon.layout.diagnose_properties)), plain(value)]);
                }
            }
        }
    }
    let invariants = invariants(horizon, &roles, &capabilities);
    Ok(vec![invariants.table(), appliances_table.build(), slony_table.build(), files_table.build()])
}

/// Per database: its Slony role, and whether it is fenced read-only.
type Roles = Vec<(String, Result<(Role, bool), String>)>;

/// The Slony role of every database of every pair, read once.
fn roles(horizon: &Horizon) -> Roles {
    horizon
        .databases
        .iter()
        .map(|db| {
            let read = slony::role(&db.name).and_then(|role| Ok((role, slony::fenced(&db.name)?)));
            (db.name.clone(), read.map_err(|e| e.brief()))
        })
        .collect()
}

fn role_of<'r>(roles: &'r Roles, db: &str) -> Result<(Role, bool), &'r str> {
    match roles.iter().find(|(name, _)| name == db) {
        Some((_, Ok(role))) => Ok(*role),
        Some((_, Err(e))) => Err(e.as_str()),
        None => Err("not read"),
    }
}

/// Per pair and database: at most one copy takes writes and at most one is a Slony origin; per
/// pair, at most one appliance carries the primary bits.
fn invariants(horizon: &Horizon, roles: &Roles, capabilities: &[(String, i64)]) -> Invariants {
    let mut report = Invariants::new();
    for pair in &horizon.pairs {
        for dbname in pair.databases() {
            let seen = |test: fn((Role, bool)) -> bool| -> Vec<(String, Seen)> {
                pair.appliances
                    .iter()
                    .filter_map(|a| horizon.database(a, dbname).ok())
                    .map(|db| {
                        let s = match role_of(roles, &db.name) {
                            Ok(role) if test(role) => Seen::Yes,
                            Ok(_) => Seen::No,
                            Err(e) => Seen::Unknown(e.to_string()),
                        };
                        (db.name.clone(), s)
                    })
                    .collect()
            };
            let scope = format!("{} {dbname}", pair.label());
            report.at_most_one(
                text("at most one copy takes writes", "書き込み可能なコピーは最大 1 つ"),
                &scope,
                &seen(|(r, fenced)| slony::takes_writes(r) && !fenced),
            );
            report.at_most_one(
                text("at most one Slony origin that takes writes", "書き込み可能な Slony origin は最大 1 つ"),
                &scope,
                &seen(|(r, fenced)| r == Role::Origin && !fenced),
            );
        }
        if !capabilities.is_empty() {
            let bits: Vec<(String, Seen)> = pair
                .appliances
                .iter()
                .map(|a| {
                    let s = match capabilities.iter().find(|(name, _)| name == a) {
                        Some((_, caps)) if caps & 192 == 192 => Seen::Yes,
                        Some(_) => Seen::No,
                        None => Seen::Unknown("no appliance row".into()),
                    };
                    (a.clone(), s)
                })
                .collect();
            report.at_most_one(text("at most one appliance with the primary bits", "プライマリ ビットを持つアプライアンスは最大 1 つ"), &pair.label(), &bits);
        }
    }
    report
}

fn slony_row(db: &Database, role: Result<(Role, bool), &str>) -> Vec<opsh_plugin_sdk::Cell> {
    let name = plain(db.name.as_str());
    let appliance = plain(db.appliance.as_str());
    let (role, fenced) = match role {
        Ok(role) => role,
        Err(e) => return vec![name, appliance, bad(format!("unreachable: {e}")), plain("-"), plain("-"), plain("-")],
    };
    let role_cell = match role {
        _ if fenced => warn(format!("{}, fenced read-only", role.describe())),
        Role::Origin => good(role.describe()),
        Role::Subscriber => plain(role.describe()),
        Role::Standalone => warn(role.describe()),
        Role::Partial => bad(role.describe()),
    };
    if role == Role::Standalone {
        return vec![name, appliance, role_cell, plain("-"), plain("-"), plain("relation \"_slony.sl_set\" does not exist")];
    }
    let (local, seed) = match slony::verification(&db.name) {
        Ok(Some((local, master))) => (plain(local.to_string()), if master { good("master_node = t") } else { plain("master_node = f") }),
        Ok(None) => (plain("-"), warn("no set")),
        Err(e) => (plain("-"), bad(e.message())),
    };
    let subscribers = if role == Role::Origin {
        match slony::lag(&db.name) {
            Ok(lag) if lag.is_empty() => warn("none"),
            Ok(lag) => {
                let text = lag.iter().map(|(node, events, seconds)| format!("node {node} ({events} events, {seconds:.1} s)")).collect::<Vec<_>>().join(", ");
                if lag.iter().all(|(_, e, s)| *e <= 2 && *s < 30.0) { good(text) } else { warn(text) }
            }
            Err(e) => bad(e.message()),
        }
    } else {
        match slony::subscription_active(&db.name) {
            Ok(true) => plain("subscribed, active"),
            Ok(false) => warn("subscription not active"),
            Err(e) => bad(e.message()),
        }
    };
    vec![name, appliance, role_cell, local, subscribers, seed]
}

/// `appliance` rows (name, capabilities) from the first service-provider fdb that answers.
fn capabilities_rows(horizon: &Horizon) -> Vec<(String, i64)> {
    let Ok(pair) = horizon.service_provider() else { return Vec::new() };
    for appliance in &pair.appliances {
        let Ok(db) = horizon.database(appliance, "fdb") else { continue };
        if let Ok(rows) = sql::query(&db.name, "SELECT name, capabilities::bigint AS capabilities FROM appliance ORDER BY name", &[]) {
            return rows
                .rows
                .iter()
                .filter_map(|row| match (row.first(), row.get(1)) {
                    (Some(sql::Value::Text(name)), Some(sql::Value::Int(caps))) => Some((name.clone(), *caps)),
                    _ => None,
                })
                .collect();
        }
    }
    Vec::new()
}

/// The appliance whose databases were primary before `secondary`'s: the set origin `secondary`'s
/// own Slony catalog names (known while that appliance is down); when no catalog says, the
/// other appliance of a pair of two.
fn failed_primary(horizon: &Horizon, pair: &Pair, secondary: &str) -> CommandResult<String> {
    for dbname in pair.databases() {
        let db = horizon.database(secondary, dbname)?;
        if let Ok(Some(origin)) = slony::origin_appliance(&db.name)
            && origin != secondary
            && pair.appliances.contains(&origin)
        {
            return Ok(origin);
        }
    }
    let others: Vec<&String> = pair.others(secondary).collect();
    match others.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(refused(
            format!(
                "{secondary}'s Slony catalog names no origin, and the {} has {} other appliances ({}): opsh cannot tell which one held the primary databases",
                pair.label(),
                others.len(),
                others.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
            format!("{secondary} の Slony カタログに origin がなく、どのアプライアンスがプライマリだったか判断できません"),
        )),
    }
}

/// The one other appliance of the pair whose databases (of `dbnames`) all take writes now: what
/// `reinit-slony` copies from when `--origin` is not given.
fn writable_other(horizon: &Horizon, pair: &Pair, appliance: &str, dbnames: &[&str]) -> CommandResult<String> {
    let mut writable = Vec::new();
    let mut why = Vec::new();
    for other in pair.others(appliance) {
        let mut all = true;
        for dbname in dbnames {
            let db = horizon.database(other, dbname)?;
            match (slony::role(&db.name), slony::fenced(&db.name)) {
                (Ok(role), Ok(false)) if slony::takes_writes(role) => {}
                (Ok(role), Ok(fenced)) => {
                    all = false;
                    why.push(format!("{} is a {}{}", db.name, role.describe(), if fenced { ", fenced read-only" } else { "" }));
                }
                (Err(e), _) | (_, Err(e)) => {
                    all = false;
                    why.push(format!("{}: {}", db.name, e.brief()));
                }
            }
        }
        if all {
            writable.push(other.clone());
        }
    }
    match writable.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(refused(
            format!(
                "no other appliance of the {} takes writes now ({}): there is nothing to copy from; name it with --origin if you know better",
                pair.label(),
                why.join("; ")
            ),
            format!("{} に書き込み可能な他のアプライアンスがありません ({})", pair.label(), why.join("; ")),
        )),
        many => Err(CommandError::Usage(format!("{} all take writes: name the appliance to copy from with --origin", many.join(" and ")))),
    }
}

/// Remove every name of `old` from the DB host lists of `path` on `appliance`: a step, or nothing
/// if the file does not name it. A list that names a host the inventory does not know (a DNS name
/// nobody declared as an alias) is refused: opsh cannot tell whether it is `old`.
fn remove_address_step(seed: &str, appliance: &str, path: &str, old: &str) -> CommandResult<Option<Step>> {
    let snapshot = file_edit::read(appliance, path)?;
    if !snapshot.exists {
        return Err(refused(
            format!("{path} does not exist on {appliance}: is this a Horizon appliance before 9.0.0?"),
            format!("{appliance} に {path} がありません"),
        ));
    }
    let unknown: Vec<String> = properties::listed_hosts(&snapshot.content)
        .into_iter()
        .filter(|(_, _, host)| names::host_of(host).is_none())
        .map(|(line, key, host)| format!("{host} (line {line}, {key})"))
        .collect();
    if !unknown.is_empty() {
        return Err(refused(
            format!(
                "{appliance}:{path} names {} — no name of any inventory host: opsh cannot tell whether it is {old}. Add it to the right host's `aliases` in the inventory",
                unknown.join(", ")
            ),
            format!("{appliance}:{path} がインベントリにないホスト名 {} を含みます。正しいホストの aliases に追加してください", unknown.join(", ")),
        ));
    }
    let tokens = names::tokens_of(&snapshot.content, old);
    if tokens.is_empty() {
        return Ok(None);
    }
    let mut content = snapshot.content.clone();
    for token in &tokens {
        content = properties::remove_address(&content, token)
            .map_err(|e| refused(format!("{appliance}:{path}: {e}; fix the file by hand"), format!("{appliance}:{path}: {e}")))?;
    }
    let file = path.rsplit('/').next().unwrap_or(path);
    Ok(Some(steps::edit_file(
        &format!("edit-{}-{appliance}", file.replace('.', "-")),
        titled(seed, &format!("Remove {old}'s address from {path} on {appliance}"), &format!("{appliance} の {path} から {old} の IP アドレスを削除")),
        appliance,
        &snapshot,
        path,
        &content,
    )))
}

pub fn enable_writes(horizon: &Horizon, secondary: &str) -> CommandResult<ChangePlan> {
    let pair = horizon.pair_of(secondary)?;
    let primary = &failed_primary(horizon, pair, secondary)?;
    let layout = &horizon.layout;
    let mut warnings = Vec::new();
    appliances::reachable(secondary)
        .map_err(|e| refused(format!("the secondary {secondary} does not answer: {e}"), format!("セカンダリ {secondary} が応答しません: {e}")))?;
    let mut secondary_dbs = Vec::new();
    let mut still_subscribed = Vec::new();
    for dbname in pair.databases() {
        let db = horizon.database(secondary, dbname)?;
        let role =
            slony::role(&db.name).map_err(|e| refused(format!("{} does not answer: {}", db.name, e.message()), format!("{} が応答しません", db.name)))?;
        match role {
            Role::Origin => {
                return Err(refused(
                    format!("{} is already the Slony origin: {secondary} holds the primary database; nothing to enable", db.name),
                    format!("{} は既に Slony の origin です。{secondary} がプライマリです", db.name),
                ));
            }
            Role::Standalone => warnings.push(text(
                &format!("{} already takes writes (no _slony schema): it is not restored from {primary}", db.name),
                &format!("{} は既に書き込み可能です ({primary} からリストアしません)", db.name),
            )),
            Role::Subscriber | Role::Partial => still_subscribed.push(dbname),
        }
        secondary_dbs.push(db);
    }
    for other in pair.others(secondary).filter(|a| *a != primary) {
        warnings.push(text(
            &format!("{other} stays a Slony subscriber of {primary}: once this is done, make it follow {secondary} with `horizon reinit-slony {other} --origin {secondary}`"),
            &format!("{other} は {primary} のサブスクライバーのままです。完了後 `horizon reinit-slony {other} --origin {secondary}` を実行してください"),
        ));
    }
    let primary_reachable = appliances::reachable(primary);
    if let Err(e) = &primary_reachable {
        warnings.push(text(
            &format!("the primary {primary} does not answer ({e}): its services and slon are not stopped; make sure it stays down"),
            &format!("プライマリ {primary} が応答しません。サービスと slon を停止できません。停止したままにしてください"),
        ));
    }
    let mut plan: Vec<Step> = Vec::new();
    if primary_reachable.is_ok() {
        plan.push(steps::stop_services("1", primary, &layout.services, "stop-services"));
    }
    plan.push(steps::stop_services("1", secondary, &layout.services, "stop-services"));
    if primary_reachable.is_ok() {
        plan.push(steps::stop_slon("2", primary));
    }
    plan.push(steps::stop_slon("2", secondary));
    // Not in the seed: the old primary's copies stop taking writes, so the pair never has two
    // writable copies (reinit-slony lifts it when the old primary becomes a subscriber).
    if primary_reachable.is_ok() {
        for dbname in pair.databases() {
            let db = horizon.database(primary, dbname)?;
            match appliances::answers(&db.name) {
                Ok(()) if !slony::fenced(&db.name).unwrap_or(false) => plan.push(steps::fence_db("2", db)),
                Ok(()) => {}
                Err(e) => warnings.push(text(
                    &format!("{} does not answer ({e}): if it comes back it takes writes again until `horizon reinit-slony {primary}`", db.name),
                    &format!("{} が応答しません。復旧すると `horizon reinit-slony {primary}` まで書き込みを受け付けます", db.name),
                )),
            }
        }
    }
    for db in &secondary_dbs {
        plan.push(steps::drop_slony(if db.dbname == "fdb" { "3" } else { "4" }, db));
    }
    for db in secondary_dbs.iter().filter(|d| still_subscribed.contains(&d.dbname.as_str())) {
        let source = horizon.database(primary, &db.dbname)?;
        match appliances::answers(&source.name) {
            Ok(()) => plan.push(steps::restore("5", source, db, &layout.backup_dir)),
            Err(e) => warnings.push(text(
                &format!("{} does not answer ({e}): {} keeps what Slony had replicated", source.name, db.name),
                &format!("{} が応答しません。{} は Slony が複製済みの内容のままです", source.name, db.name),
            )),
        }
    }
    for (i, db) in secondary_dbs.iter().enumerate() {
        if let Some(step) = remove_address_step(&(6 + i).to_string(), secondary, &layout.properties(&db.dbname), primary)? {
            plan.push(step);
        }
    }
    let password_db = secondary_dbs.iter().find(|d| d.dbname == "avdb").or(secondary_dbs.first()).map(|d| d.name.clone()).unwrap_or_default();
    plan.push(steps::av_setup("9-10", secondary, &layout.av_setup(), &password_db));
    plan.push(jdbc_step("11-12", horizon, pair, secondary)?);
    plan.push(steps::start_services("13", secondary, &layout.services, ""));
    Ok(ChangePlan {
        summary: text(
            &format!(
                "Make {secondary}'s databases ({}) the primary datasource of the {} (the primary {primary} failed)",
                pair.databases().join(", "),
                pair.label()
            ),
            &format!("{secondary} のデータベース ({}) をマスター データソースにする (プライマリ {primary} の障害)", pair.databases().join(", ")),
        ),
        steps: plan,
        warnings,
        if_stopped: vec![text(
            &format!("{}'s services stay stopped until the run finishes", layout.services.join(", ")),
            &format!("実行が終わるまで {} は停止したままです", layout.services.join("、")),
        )],
    })
}

/// Point both JDBC URLs of the diagnose service at `appliance`: its name in the form the URL used,
/// the port of that database on it (from the inventory), the rest of the URL kept.
fn jdbc_step(seed: &str, horizon: &Horizon, pair: &Pair, appliance: &str) -> CommandResult<Step> {
    let path = &horizon.layout.diagnose_properties;
    let snapshot = file_edit::read(appliance, path)?;
    let mut content = snapshot.content.clone();
    let appliances: Vec<&str> = pair.appliances.iter().map(String::as_str).collect();
    let fdb_port = horizon.database(appliance, "fdb")?.port.clone();
    for (key, db) in [("db.jdbc.url", "avdb"), ("db.fdb.jdbc.url", "fdb")] {
        let bad_file = |e: String| {
            refused(format!("{appliance}:{path}: {e}; is this the diagnose configuration the runbook expects?"), format!("{appliance}:{path}: {e}"))
        };
        let current = properties::get(&content, key).ok_or_else(|| bad_file(format!("no line sets {key}")))?.to_string();
        let form = names::form_used(&current, &appliances).flatten();
        let host = names::in_form(appliance, form.as_deref())?;
        // A service-provider appliance has no avdb of its own: its URL keeps the server's port.
        let port = horizon.database(appliance, db).map(|d| d.port.clone()).unwrap_or_else(|_| fdb_port.clone());
        let url = properties::jdbc_url_at(&current, &host, &port).map_err(bad_file)?;
        content = properties::set(&content, key, &url).map_err(bad_file)?;
    }
    Ok(steps::edit_file(
        &format!("edit-application-properties-{appliance}"),
        titled(seed, &format!("Point both JDBC URLs of diagnose at {appliance}"), &format!("diagnose の両方の JDBC URL を {appliance} に向ける")),
        appliance,
        &snapshot,
        path,
        &content,
    ))
}

pub fn promote(horizon: &Horizon, new: &str, old: &str, org: Option<&str>, force: bool) -> CommandResult<ChangePlan> {
    let pair = match org {
        Some(org) => horizon.tenant(org)?,
        None => horizon.service_provider()?,
    };
    for appliance in [new, old] {
        if !pair.appliances.iter().any(|a| a == appliance) {
            return Err(CommandError::Usage(format!(
                "{appliance} is not an appliance of the {}: its appliances are {}",
                pair.label(),
                pair.appliances.join(", ")
            )));
        }
    }
    if new == old {
        return Err(CommandError::Usage("NEW and --old name the same appliance".into()));
    }
    let layout = &horizon.layout;
    let dbnames = pair.databases();
    let mut warnings = Vec::new();
    for appliance in [new, old] {
        appliances::reachable(appliance).map_err(|e| {
            refused(
                format!("{appliance} does not answer ({e}). The permanent promotion needs both appliances and their databases (the seed's \"A is accessible\"); while {old} is down, run `horizon enable-writes {new}`, and promote once it is back"),
                format!("{appliance} が応答しません。恒久的な昇格には両方のアプライアンスが必要です。{old} の停止中は `horizon enable-writes {new}` を実行し、復旧後に昇格してください"),
            )
        })?;
        for dbname in &dbnames {
            let db = horizon.database(appliance, dbname)?;
            appliances::answers(&db.name).map_err(|e| {
                refused(
                    format!("{} does not answer ({e}): Slony cannot be re-initialised without it; while it is down, run `horizon enable-writes {new}`, and promote once it is back", db.name),
                    format!("{} が応答しません。停止中は `horizon enable-writes {new}` を実行し、復旧後に昇格してください", db.name),
                )
            })?;
        }
    }
    let capabilities_db = match pair.kind {
        PairKind::ServiceProvider => horizon.database(new, "fdb")?.name.clone(),
        PairKind::Tenant(_) => horizon.database(&horizon.service_provider_primary()?, "fdb")?.name.clone(),
    };
    let rows = sql::query(
        &capabilities_db,
        "SELECT count(*) FILTER (WHERE name = $1)::bigint AS old, count(*) FILTER (WHERE name = $2)::bigint AS new FROM appliance WHERE name IN ($1, $2)",
        &[sql::Value::Text(old.into()), sql::Value::Text(new.into())],
    )?;
    // One row each: the primary-bits step moves the bits of exactly these two rows.
    let (old_rows, new_rows) = (rows.first_int("old"), rows.first_int("new"));
    if (old_rows, new_rows) != (Some(1), Some(1)) {
        let shown = |n: Option<i64>| n.map_or("an unreadable number of".to_string(), |n| n.to_string());
        return Err(refused(
            format!(
                "{capabilities_db} has {} appliance row(s) named {old} and {} named {new}: the primary bits move between exactly one of each",
                shown(old_rows),
                shown(new_rows)
            ),
            format!("{capabilities_db} の appliance 行: {old} が {} 行、{new} が {} 行 (各 1 行が必要)", shown(old_rows), shown(new_rows)),
        ));
    }
    // Slony's set is rebuilt from NEW's tables: refuse now, before anything is dropped, if
    // Slony could not replicate them.
    let mut objects = Vec::new();
    for dbname in &dbnames {
        objects.push(slony::replicated_objects(&horizon.database(new, dbname)?.name)?);
    }
    // NEW becomes the origin with the data it holds: while it is a subscriber of OLD, it must
    // have everything OLD took — refused when it lags (in numbers), then confirmed by Slony
    // itself once the writers are stopped.
    let mut lagging = Vec::new();
    let mut syncs = Vec::new();
    for dbname in &dbnames {
        let old_db = horizon.database(old, dbname)?;
        if slony::role(&old_db.name)? != Role::Origin {
            continue;
        }
        let unreadable = |what: &str| {
            refused(
                format!("{}: {what} cannot be read: opsh cannot tell whether {new} has every change", old_db.name),
                format!("{}: {what} を読めません", old_db.name),
            )
        };
        let old_id = slony::local_node(&old_db.name)?.ok_or_else(|| unreadable("its Slony node id"))?;
        let mut subscribers = Vec::new();
        for appliance in pair.others(old) {
            let db = horizon.database(appliance, dbname)?;
            if slony::role(&db.name)? != Role::Subscriber {
                continue;
            }
            let id = slony::local_node(&db.name)?.ok_or_else(|| unreadable("a subscriber's node id"))?;
            if appliance == new {
                match slony::subscriber_lag(&old_db.name, id)? {
                    Some((events, seconds)) if seconds >= MAX_LAG_SECONDS => {
                        lagging.push(format!("{} is {events} Slony events ({seconds:.1} s) behind {}", db.name, old_db.name))
                    }
                    Some(_) => {}
                    None => lagging.push(format!("{} has no Slony status for {} (its lag cannot be read)", old_db.name, db.name)),
                }
            }
            subscribers.push((db, id));
        }
        if !subscribers.is_empty() {
            syncs.push((old_db, old_id, subscribers));
        }
    }
    if !lagging.is_empty() {
        if !force {
            return Err(refused(
                format!(
                    "{}: promoting {new} now loses the changes it has not received. Wait until it catches up (`horizon status`), or add --force to accept losing them",
                    lagging.join("; ")
                ),
                format!("{}: 今 {new} を昇格すると未受信の変更が失われます。追いつくまで待つか、--force で損失を受け入れてください", lagging.join("; ")),
            ));
        }
        warnings.push(text(
            &format!("--force: {}; those changes are lost", lagging.join("; ")),
            &format!("--force: {}。これらの変更は失われます", lagging.join("; ")),
        ));
        syncs.clear();
    }
    let tenant = matches!(pair.kind, PairKind::Tenant(_));
    let (seed_slon_stop, seed_drop, seed_caps, seed_slon_start, seed_reinit, seed_verify, seed_start) =
        if tenant { ("4", "6", "7", "8", "9", "10", "11") } else { ("4", "5", "6", "9", "10", "11", "12") };
    let mut plan = Vec::new();
    for appliance in &pair.appliances {
        plan.push(steps::stop_services("1", appliance, &layout.services[..1], "stop-dtservice"));
    }
    for appliance in &pair.appliances {
        // The seed edits fdb.properties; a tenant's edb and avdb properties name the failed
        // appliance too and are edited alike.
        for dbname in &dbnames {
            if let Some(step) = remove_address_step("3", appliance, &layout.properties(dbname), old)? {
                plan.push(step);
            }
        }
    }
    for (origin, origin_id, subscribers) in &syncs {
        let subscribers: Vec<(&Database, i64)> = subscribers.iter().map(|(db, id)| (*db, *id)).collect();
        plan.push(steps::sync_wait(seed_slon_stop, origin, *origin_id, &subscribers));
    }
    for appliance in &pair.appliances {
        plan.push(steps::stop_slon(seed_slon_stop, appliance));
    }
    // The seed drops _slony on the primary and the secondary; with more appliances, on every one
    // (the new cluster is built from nothing).
    for appliance in std::iter::once(old).chain(std::iter::once(new)).chain(pair.appliances.iter().map(String::as_str).filter(|a| *a != old && *a != new)) {
        for dbname in &dbnames {
            plan.push(steps::drop_slony(seed_drop, horizon.database(appliance, dbname)?));
        }
    }
    plan.push(steps::capabilities(seed_caps, &capabilities_db, old, new));
    if !tenant {
        for appliance in pair.others(old) {
            plan.push(steps::start_services("7", appliance, &layout.services[..1], "-first"));
        }
        for appliance in pair.others(new).filter(|a| *a != old) {
            plan.push(steps::stop_services("8", appliance, &layout.services[..1], "stop-dtservice-again"));
        }
    }
    let mut node_sets = Vec::new();
    for (dbname, (tables, sequences)) in dbnames.iter().zip(&objects) {
        let mut nodes = vec![horizon.database(new, dbname)?];
        for appliance in pair.others(new) {
            nodes.push(horizon.database(appliance, dbname)?);
        }
        plan.push(steps::slony_init(seed_reinit, &nodes, tables, sequences));
        node_sets.push(nodes);
    }
    let scripts: Vec<String> = dbnames.iter().map(|d| layout.start_slon(d)).collect();
    for appliance in &pair.appliances {
        plan.push(steps::start_slon(seed_slon_start, appliance, &dbnames, &scripts));
    }
    for nodes in &node_sets {
        plan.push(steps::subscribe(seed_reinit, nodes));
    }
    for nodes in &node_sets {
        plan.push(steps::confirm_origin(seed_verify, nodes[0]));
    }
    for appliance in pair.others(old) {
        plan.push(steps::start_services(seed_start, appliance, &layout.services[..1], ""));
    }
    warnings.push(text(
        &format!("dtService stays stopped on the failed appliance {old}, as the seed orders"),
        &format!("手順どおり、障害アプライアンス {old} の dtService は停止したままです"),
    ));
    Ok(ChangePlan {
        summary: text(
            &format!(
                "Promote {new} to primary {} appliance in place of {old}; Slony re-initialised with {new} as origin ({})",
                pair.label(),
                dbnames.join(", ")
            ),
            &format!("{new} を {old} に代わるプライマリ アプライアンスに昇格し、{new} を origin として Slony を再初期化 ({})", dbnames.join(", ")),
        ),
        steps: plan,
        warnings,
        if_stopped: vec![text(
            "dtService stays stopped on the appliances the run stopped it on, and Slony may be half re-initialised, until the run finishes",
            "実行が終わるまで dtService は停止したまま、Slony は再初期化の途中のままです",
        )],
    })
}

pub fn reinit(horizon: &Horizon, appliance: &str, only: Option<&str>, origin: Option<&str>, force: bool) -> CommandResult<ChangePlan> {
    let pair = horizon.pair_of(appliance)?;
    let origin = match origin {
        Some(origin) if pair.appliances.iter().any(|a| a == origin) && origin != appliance => origin.to_string(),
        Some(origin) => {
            return Err(CommandError::Usage(format!("--origin {origin} must be another appliance of the {} ({})", pair.label(), pair.appliances.join(", "))));
        }
        None => String::new(),
    };
    let dbnames: Vec<&str> = match only {
        Some(db) if pair.databases().contains(&db) => vec![db],
        Some(db) => return Err(CommandError::Usage(format!("--db {db}: a {} appliance has {}", pair.label(), pair.databases().join(", ")))),
        None => pair.databases().to_vec(),
    };
    let origin = if origin.is_empty() { writable_other(horizon, pair, appliance, &dbnames)? } else { origin };
    let mut warnings = Vec::new();
    for host in [appliance, origin.as_str()] {
        appliances::reachable(host).map_err(|e| refused(format!("{host} does not answer: {e}"), format!("{host} が応答しません: {e}")))?;
    }
    let mut objects = Vec::new();
    for dbname in &dbnames {
        let source = horizon.database(&origin, dbname)?;
        let target = horizon.database(appliance, dbname)?;
        appliances::answers(&target.name).map_err(|e| refused(format!("{} does not answer: {e}", target.name), format!("{} が応答しません", target.name)))?;
        let source_role = slony::role(&source.name)?;
        if source_role == Role::Subscriber {
            return Err(refused(
                format!("{} is a Slony subscriber: {origin} does not hold the primary {dbname}; give --origin the appliance that does", source.name),
                format!("{} はサブスクライバーです。{origin} はプライマリではありません", source.name),
            ));
        }
        // The subscribe truncates the target's copy: never the side holding the newer writes.
        let why = match (slony::role(&target.name)?, source_role) {
            (Role::Standalone, Role::Origin) => Some(format!(
                "{} takes writes on its own (its Slony schema was dropped: writes were enabled there) while {} still holds its old Slony origin: {appliance} has the newer writes, and making it a subscriber would truncate them. Did you mean `horizon reinit-slony {origin} --origin {appliance}`?",
                target.name, source.name
            )),
            (Role::Standalone, Role::Standalone) => {
                Some(format!("both {} and {} take writes without Slony: opsh cannot tell which one has the newer writes", target.name, source.name))
            }
            (Role::Origin, Role::Origin) => {
                Some(format!("both {} and {} are Slony origins: opsh cannot tell which one has the newer writes", target.name, source.name))
            }
            _ => None,
        };
        if let Some(why) = why {
            if !force {
                return Err(refused(
                    format!("{why}. Compare them; --force replaces {}'s data with {}'s anyway", target.name, source.name),
                    format!("{}: --force で {} のデータを {} のデータで置き換えます", target.name, target.name, source.name),
                ));
            }
            warnings.push(text(
                &format!("--force: {why}; {}'s data is replaced by {}'s", target.name, source.name),
                &format!("--force: {} のデータは {} のデータで置き換えられます", target.name, source.name),
            ));
        }
        objects.push(slony::replicated_objects(&source.name)?);
    }
    let running: Vec<String> =
        appliances::service_states(appliance, &horizon.layout.services).into_iter().filter(|(_, s)| s == "running").map(|(n, _)| n).collect();
    if !running.is_empty() {
        warnings.push(text(
            &format!("{} run on {appliance}: whatever they write to its own databases is replaced by {origin}'s copy", running.join(", ")),
            &format!("{appliance} で {} が稼働中です。自身の DB への書き込みは {origin} のコピーで置き換えられます", running.join("、")),
        ));
    }
    let mut plan = Vec::new();
    for host in [origin.as_str(), appliance] {
        plan.push(steps::stop_slon("restart", host));
    }
    let mut node_sets = Vec::new();
    for (dbname, (tables, sequences)) in dbnames.iter().zip(&objects) {
        let nodes = vec![horizon.database(&origin, dbname)?, horizon.database(appliance, dbname)?];
        plan.push(steps::slony_init("restart", &nodes, tables, sequences));
        node_sets.push(nodes);
    }
    // killall stopped every slon of both appliances: all of their databases get theirs back.
    let all: Vec<&str> = pair.databases().to_vec();
    let scripts: Vec<String> = all.iter().map(|d| horizon.layout.start_slon(d)).collect();
    for host in [origin.as_str(), appliance] {
        plan.push(steps::start_slon("restart", host, &all, &scripts));
    }
    for nodes in &node_sets {
        plan.push(steps::subscribe("restart", nodes));
    }
    for nodes in &node_sets {
        plan.push(steps::confirm_origin("restart", nodes[0]));
    }
    Ok(ChangePlan {
        summary: text(
            &format!(
                "Re-initialise Slony for {} with {origin} as origin and {appliance} as subscriber (Service Center: Appliances > Maintenance > Slony Operations)",
                dbnames.join(", ")
            ),
            &format!(
                "{origin} を origin、{appliance} をサブスクライバーとして {} の Slony を再初期化 ([アプライアンス] > [メンテナンス] > [Slony Operations])",
                dbnames.join(", ")
            ),
        ),
        steps: plan,
        warnings,
        if_stopped: vec![text(
            &format!("{appliance}'s slon daemons may stay stopped and Slony half re-initialised until the run finishes"),
            &format!("実行が終わるまで {appliance} の slon は停止したまま、Slony は再初期化の途中のままです"),
        )],
    })
}

pub fn verify(horizon: &Horizon, call: &Invocation) -> CommandResult<Vec<Table>> {
    let args = Args(call);
    let mut checked = table(text("Verified", "検証結果"), &["what", "result"]);
    match call.command.as_str() {
        "enable-writes" => {
            let secondary = args.required("secondary")?;
            for dbname in horizon.pair_of(secondary)?.databases() {
                let db = horizon.database(secondary, dbname)?;
                let rows = sql::query(
                    &db.name,
                    "SELECT NOT pg_is_in_recovery() AND NOT current_setting('default_transaction_read_only')::bool AS writable, \
                     (SELECT count(*) FROM pg_trigger WHERE tgname LIKE '\\_slony\\_%' OR tgname LIKE '\\_slony%') AS slony_triggers",
                    &[],
                )?;
                let writable =
                    rows.first_bool("writable") == Some(true) && rows.first_int("slony_triggers") == Some(0) && slony::role(&db.name)? == Role::Standalone;
                if !writable {
                    return Err(CommandError::Failed(format!("{} still refuses writes (Slony's triggers or schema remain, or it is read-only)", db.name)));
                }
                checked.push(vec![plain(format!("{} accepts writes", db.name)), good("no _slony schema, no Slony triggers, read-write")]);
            }
        }
        "promote service-provider" | "promote tenant" | "reinit-slony" => {
            let origin = if call.command == "reinit-slony" {
                let appliance = args.required("appliance")?;
                match args.get("origin") {
                    Some(o) => o.to_string(),
                    None => {
                        let pair = horizon.pair_of(appliance)?;
                        let dbnames: Vec<&str> = args.get("db").map(|d| vec![d]).unwrap_or_else(|| pair.databases());
                        writable_other(horizon, pair, appliance, &dbnames)?
                    }
                }
            } else {
                args.required("new")?.to_string()
            };
            let pair = horizon.pair_of(&origin)?;
            let dbnames: Vec<&str> = match (call.command.as_str(), args.get("db")) {
                ("reinit-slony", Some(db)) => vec![db],
                _ => pair.databases().to_vec(),
            };
            for dbname in dbnames {
                let db = horizon.database(&origin, dbname)?;
                match slony::verification(&db.name)? {
                    Some((local, true)) => checked.push(vec![plain(format!("seed query on {}", db.name)), good(format!("local_id {local}, master_node = t"))]),
                    other => return Err(CommandError::Failed(format!("the seed's query on {} shows {other:?}, not master_node = t", db.name))),
                }
            }
        }
        _ => {}
    }
    let mut tables = vec![checked.build()];
    let roles = roles(horizon);
    let capabilities = capabilities_rows(horizon);
    tables.push(invariants(horizon, &roles, &capabilities).verified()?);
    tables.extend(status(horizon)?.into_iter().skip(1));
    Ok(tables)
}
