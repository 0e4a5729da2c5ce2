//! `otb`: OpenTenBase failover, as seed 003 does it by hand — and safer than pgxc_ctl, which
//! changes routes one node at a time and silently skips nodes it cannot reach.
//!
//! - `otb status` — every node's members with their live role, the GTM, and every route each
//!   master holds (pgxc_node), mismatches highlighted.
//! - `otb promote NODE` — fence the old master if it answers, promote the standby (`pg_ctl -Z
//!   datanode|coordinator promote`), wait until it takes writes, then `ALTER NODE` + pool reload
//!   on every coordinator and datanode master (the new one included) as one parallel group.
//! - `otb promote gtm` — fence, `gtm_ctl -Z gtm promote`, `ALTER GTM NODE` everywhere.
//! - `otb reconcile` — fix every route that does not point at its node's live master.
//!
//! Roles come from live state (`pg_is_in_recovery()`, `gtm_ctl status`), never from names in
//! the inventory, which stop being true after the first failover.
#![cfg(target_arch = "wasm32")]

mod cluster;

use cluster::{Cluster, Kind, Live, Member};
use opsh_plugin_sdk::{
    Args, ChangePlan, CheckResult, CheckState, CommandError, CommandKind, CommandResult, Completion, Guest, Invocation,
    PluginInfo, RowsExt, Step, StepData, Table, Text, address_of, bad, command, data, good, host, plain, quote, sql, step, table,
    text, wait, warn,
};

struct Otb;

/// A standby further behind than this is not promoted without `--force`.
const MAX_LAG_BYTES: i64 = 16 << 20;

impl Guest for Otb {
    fn describe() -> PluginInfo {
        let node = || Completion::Choices(vec!["cn01".into(), "cn02".into(), "dn01".into(), "dn02".into(), "gtm".into()]);
        PluginInfo {
            name: "otb".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: text("OpenTenBase: DN, CN and GTM failover with routes fixed on every node", "OpenTenBase: DN・CN・GTM のフェイルオーバーと全ノードのルート変更"),
            capabilities: vec!["sql".into(), "ssh".into()],
            commands: vec![
                command("status", CommandKind::Read, text("Nodes, roles, GTM and every route; mismatches highlighted", "ノード・ロール・GTM・全ルート (不一致を強調)"))
                    .example("otb status", text("Show the cluster", "クラスタを表示"))
                    .build(),
                command("promote", CommandKind::Change, text("Fail a node (or the GTM) over to its standby and re-point every route", "ノード (または GTM) をスタンバイへフェイルオーバーし全ルートを変更"))
                    .positional("node", text("cn01, dn01, … or gtm", "cn01, dn01, … または gtm"), node())
                    .flag("force", text("promote even if the standby is not replicating or far behind", "スタンバイが複製していない/遅れていても昇格"))
                    .example("otb promote dn01 --dry-run", text("Preview the failover of dn01", "dn01 のフェイルオーバーを確認"))
                    .example("otb promote gtm", text("Promote the GTM standby", "GTM スタンバイを昇格"))
                    .build(),
                command("rebuild", CommandKind::Change, text("Make the fenced old master a streaming standby of the new one (pg_rewind, else a base backup)", "隔離された旧マスターを新マスターのスタンバイとして再構築 (pg_rewind、失敗時はベースバックアップ)"))
                    .positional("node", text("cn01, dn01, …", "cn01, dn01, …"), node())
                    .example("otb rebuild dn01", text("Give dn01 a standby again after a failover", "フェイルオーバー後に dn01 のスタンバイを再作成"))
                    .build(),
                command("reconcile", CommandKind::Change, text("Point every route at its node's live master", "全ルートを各ノードの現在のマスターに向ける"))
                    .example("otb reconcile --dry-run", text("Show the routes that are wrong", "誤ったルートを表示"))
                    .build(),
            ],
        }
    }

    fn read(call: Invocation) -> CommandResult<Vec<Table>> {
        match call.command.as_str() {
            "status" => status(&Cluster::load()?),
            other => Err(CommandError::Usage(format!("otb has no read command {other}"))),
        }
    }

    fn plan(call: Invocation) -> CommandResult<ChangePlan> {
        let args = Args(&call);
        let cluster = Cluster::load()?;
        match call.command.as_str() {
            "promote" if args.required("node")? == "gtm" => plan_promote_gtm(&cluster),
            "promote" => plan_promote(&cluster, args.required("node")?, args.flag("force")),
            "rebuild" => plan_rebuild(&cluster, args.required("node")?),
            "reconcile" => plan_reconcile(&cluster),
            other => Err(CommandError::Usage(format!("otb has no command {other}"))),
        }
    }

    fn apply(_call: Invocation, step: Step) -> CommandResult<Text> {
        let data = StepData::parse(&step.data);
        match data.get("action")? {
            "fence" => {
                let out = opsh_plugin_sdk::run(data.get("host")?, &["pg_ctl", "-Z", data.get("type")?, "-D", data.get("dir")?, "stop", "-m", "fast"], Some(120_000))?;
                let stderr = String::from_utf8_lossy(&out.stderr).to_string();
                match out.status {
                    Some(0) => Ok(text("stopped", "停止しました")),
                    _ if stderr.contains("Is server running?") || stderr.contains("no server running") => Ok(text("was not running", "起動していませんでした")),
                    _ => Err(CommandError::Failed(format!("pg_ctl stop on {}: {}", data.get("host")?, stderr.trim()))),
                }
            }
            "promote" => {
                let db = data.get("db")?;
                let out = opsh_plugin_sdk::run(data.get("host")?, &["pg_ctl", "-Z", data.get("type")?, "-D", data.get("dir")?, "promote"], Some(120_000))?;
                if out.status != Some(0) && !String::from_utf8_lossy(&out.stderr).contains("not in standby mode") {
                    return Err(CommandError::Failed(format!("pg_ctl promote on {}: {}", data.get("host")?, String::from_utf8_lossy(&out.stderr).trim())));
                }
                wait_for_writes(db)?;
                Ok(text("promoted; it takes writes", "昇格しました。書き込み可能です"))
            }
            "resync" => {
                let request = opsh_plugin_sdk::ssh::ExecRequest {
                    argv: ["sh", "-c", RESYNC, "resync", data.get("dir")?, data.get("address")?, data.get("port")?, data.get("user")?].iter().map(|a| a.to_string()).collect(),
                    env: vec![("PGPASSWORD".into(), opsh_plugin_sdk::ssh::EnvValue::DatabasePassword(data.get("source")?.into()))],
                    stdin: None,
                    timeout_ms: Some(600_000),
                    privileged: false,
                    read_only: false,
                };
                let out = opsh_plugin_sdk::ssh::exec(data.get("host")?, &request)?;
                let stdout = String::from_utf8_lossy(&out.stdout).to_string();
                match out.status {
                    Some(0) => Ok(text(stdout.lines().last().unwrap_or("copied"), "")),
                    _ => Err(CommandError::Failed(format!("re-synchronising {}: {}", data.get("dir")?, String::from_utf8_lossy(&out.stderr).trim()))),
                }
            }
            "start-standby" => {
                let dir = data.get("dir")?;
                let out = opsh_plugin_sdk::run(data.get("host")?, &["pg_ctl", "-Z", data.get("type")?, "-D", dir, "-l", &format!("{dir}.log"), "-w", "-t", "120", "start"], Some(180_000))?;
                if out.status != Some(0) {
                    return Err(CommandError::Failed(format!("pg_ctl start: {}", String::from_utf8_lossy(&out.stderr).trim())));
                }
                wait_for_streaming(data.get("db")?)?;
                Ok(text("streaming from the master", "マスターからストリーミング中"))
            }
            "fence-gtm" => {
                let out = opsh_plugin_sdk::run(data.get("host")?, &["gtm_ctl", "-Z", "gtm", "-D", data.get("dir")?, "stop"], Some(60_000))?;
                let stderr = String::from_utf8_lossy(&out.stderr).to_string();
                match out.status {
                    Some(0) => Ok(text("stopped", "停止しました")),
                    _ if stderr.contains("Is server running?") => Ok(text("was not running", "起動していませんでした")),
                    _ => Err(CommandError::Failed(format!("gtm_ctl stop: {}", stderr.trim()))),
                }
            }
            "promote-gtm" => {
                let out = opsh_plugin_sdk::run(data.get("host")?, &["gtm_ctl", "-Z", "gtm", "-D", data.get("dir")?, "promote"], Some(60_000))?;
                match out.status {
                    Some(0) => Ok(text("promoted", "昇格しました")),
                    _ => Err(CommandError::Failed(format!("gtm_ctl promote: {}", String::from_utf8_lossy(&out.stderr).trim()))),
                }
            }
            "route" => {
                let db = data.get("db")?;
                sql::query(db, &route_statement(&data)?, &[])?;
                sql::query(db, "SELECT pgxc_pool_reload()", &[])?;
                Ok(text("route changed, pool reloaded", "ルート変更・プール再読み込み済み"))
            }
            other => Err(CommandError::Failed(format!("unknown action {other}"))),
        }
    }

    fn check(_call: Invocation, step: Step) -> CommandResult<CheckResult> {
        let data = StepData::parse(&step.data);
        let done = |yes: bool, detail: &str| CheckResult { state: if yes { CheckState::Done } else { CheckState::NotDone }, detail: text(detail, "") };
        Ok(match data.get("action")? {
            "fence" => match opsh_plugin_sdk::probe(data.get("host")?, &["pg_ctl", "-D", data.get("dir")?, "status"], Some(10_000)) {
                Ok(out) => done(out.status == Some(3), "pg_ctl status"),
                Err(e) => CheckResult { state: CheckState::Unknown, detail: text(e.message(), "") },
            },
            "resync" => match opsh_plugin_sdk::probe(data.get("host")?, &["test", "-f", &format!("{}/standby.signal", data.get("dir")?)], Some(10_000)) {
                Ok(out) => done(out.status == Some(0), "standby.signal"),
                Err(e) => CheckResult { state: CheckState::Unknown, detail: text(e.message(), "") },
            },
            "start-standby" => match sql::query(data.get("db")?, "SELECT pg_is_in_recovery() AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming' AND last_msg_receipt_time IS NOT NULL) AS streaming", &[]) {
                Ok(rows) => done(rows.first_bool("streaming") == Some(true), "pg_stat_wal_receiver"),
                Err(e) => CheckResult { state: CheckState::Unknown, detail: text(e.message(), "") },
            },
            "promote" => match sql::query(data.get("db")?, "SELECT NOT pg_is_in_recovery() AS promoted", &[]) {
                Ok(rows) => done(rows.first_bool("promoted") == Some(true), "pg_is_in_recovery()"),
                Err(e) => CheckResult { state: CheckState::Unknown, detail: text(e.message(), "") },
            },
            "fence-gtm" | "promote-gtm" => {
                let want = if data.get("action")? == "fence-gtm" { "stopped" } else { "master" };
                match opsh_plugin_sdk::probe(data.get("host")?, &["gtm_ctl", "-Z", "gtm", "-D", data.get("dir")?, "status"], Some(10_000)) {
                    Ok(out) => {
                        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
                        let role = if out.status == Some(3) { "stopped".to_string() } else { stdout.lines().find_map(|l| l.strip_prefix("role: ")).unwrap_or("").trim().to_string() };
                        done(role == want, &format!("gtm_ctl status: {role}"))
                    }
                    Err(e) => CheckResult { state: CheckState::Unknown, detail: text(e.message(), "") },
                }
            }
            "route" => match cluster::routes(data.get("db")?) {
                Ok(routes) => {
                    let node = data.get("node")?;
                    let want = (data.get("address")?.to_string(), data.get("port")?.parse::<i64>().unwrap_or(0));
                    match routes.get(node) {
                        Some(have) => done(*have == want, &format!("pgxc_node {node} → {}:{}", have.0, have.1)),
                        None => CheckResult { state: CheckState::Stale, detail: text(&format!("{node} is not in pgxc_node on {}", data.get("db")?), "") },
                    }
                }
                Err(e) => CheckResult { state: CheckState::Unknown, detail: text(e.message(), "") },
            },
            other => return Err(CommandError::Failed(format!("unknown action {other}"))),
        })
    }

    fn verify(call: Invocation) -> CommandResult<Vec<Table>> {
        let cluster = Cluster::load()?;
        let mut tables = status(&cluster)?;
        if call.command == "promote" {
            let node = Args(&call).required("node")?;
            if node != "gtm" {
                let master = cluster.master(node).ok_or_else(|| CommandError::Failed(format!("after the promotion {node} has no master")))?;
                sql::query(&master.db, "SELECT txid_current()", &[])?;
            }
        }
        if let Some(wrong) = mismatches(&cluster).first() {
            return Err(CommandError::Failed(format!("a route is still wrong after the change: {wrong}; see `otb status`")));
        }
        tables.truncate(3);
        Ok(tables)
    }
}

/// Where every node should be routed: its live master (and the GTM master).
fn expected(cluster: &Cluster) -> Vec<(String, String, i64, bool)> {
    let mut out: Vec<(String, String, i64, bool)> =
        cluster.nodes().into_iter().filter_map(|n| cluster.master(&n).map(|m| (n.clone(), address_of(&m.host), i64::from(m.port), false))).collect();
    if let Some(gtm) = cluster.gtm_master() {
        out.push((cluster.gtm.name.clone(), address_of(&gtm.host), i64::from(cluster.gtm.port), true));
    }
    out
}

fn mismatches(cluster: &Cluster) -> Vec<String> {
    let mut wrong = Vec::new();
    for master in cluster.masters() {
        let Ok(routes) = cluster::routes(&master.db) else { continue };
        for (node, address, port, _) in expected(cluster) {
            if routes.get(&node) != Some(&(address.clone(), port)) {
                wrong.push(format!("{} routes {node} to {}", master.db, routes.get(&node).map_or("nothing".into(), |(h, p)| format!("{h}:{p}"))));
            }
        }
    }
    wrong
}

fn status(cluster: &Cluster) -> CommandResult<Vec<Table>> {
    let mut nodes = table(text(&format!("Nodes of {}", cluster.topology), &format!("{} のノード", cluster.topology)), &["node", "type", "member", "host", "port", "role", "replication"]);
    for member in &cluster.members {
        let kind = if member.kind == Kind::Coordinator { "coordinator" } else { "datanode" };
        let (role, replication) = match &member.live {
            Live::Master { lsn } => (good("master"), plain(format!("at {lsn}"))),
            Live::Standby { receiving: true, replay_lag, .. } => (plain("standby"), good(format!("streaming, replay lag {replay_lag} B"))),
            Live::Standby { receiving: false, received, .. } => (warn("standby"), warn(format!("not streaming (received up to {})", received.clone().unwrap_or_else(|| "nothing".into())))),
            Live::Down(why) => (bad("down"), bad(why.clone())),
        };
        nodes.push(vec![plain(&member.node), plain(kind), plain(&member.db), plain(address_of(&member.host)), plain(member.port.to_string()), role, replication]);
    }
    let mut gtm = table(text("GTM", "GTM"), &["name", "host", "port", "role"]);
    for h in &cluster.gtm.hosts {
        let role = match h.role.as_str() {
            "master" => good("master"),
            "standby" => plain("standby"),
            other => bad(other),
        };
        gtm.push(vec![plain(&cluster.gtm.name), plain(address_of(&h.host)), plain(cluster.gtm.port.to_string()), role]);
    }
    let mut routes = table(text("Routes (pgxc_node on every master)", "ルート (各マスターの pgxc_node)"), &["on", "node", "routes to", "live master", "state"]);
    let want = expected(cluster);
    for master in cluster.masters() {
        match cluster::routes(&master.db) {
            Ok(have) => {
                for (node, address, port, _) in &want {
                    let actual = have.get(node).map_or("(missing)".to_string(), |(h, p)| format!("{h}:{p}"));
                    let ok = have.get(node) == Some(&(address.clone(), *port));
                    routes.push(vec![plain(&master.db), plain(node), plain(actual), plain(format!("{address}:{port}")), if ok { good("ok") } else { bad("MISMATCH") }]);
                }
            }
            Err(e) => routes.push(vec![plain(&master.db), plain("*"), bad(e.message()), plain(""), bad("unreadable")]),
        }
    }
    Ok(vec![nodes.build(), gtm.build(), routes.build()])
}

fn route_statement(data: &StepData) -> Result<String, CommandError> {
    let gtm = if data.get("gtm")? == "true" { "GTM " } else { "" };
    Ok(format!("ALTER {gtm}NODE {} WITH (host={}, port={})", data.get("node")?, quote::literal(data.get("address")?), data.get("port")?))
}

/// One route step: on `on`, point `node` at `host:port`; all route steps form one parallel group.
fn route_step(on: &Member, node: &str, host_name: &str, port: u16, gtm: bool, group: &str) -> Step {
    let address = address_of(host_name);
    let port = port.to_string();
    let data = data::encode(&[("action", "route"), ("db", &on.db), ("node", node), ("address", &address), ("port", &port), ("gtm", if gtm { "true" } else { "false" })]);
    let statement = route_statement(&StepData::parse(&data)).unwrap_or_default();
    step(
        &format!("route-{}-{node}", on.db),
        text(&format!("Point {node} at {host_name}:{port} on {}", on.node), &format!("{} で {node} を {host_name}:{port} に向ける", on.node)),
        &on.db,
    )
    .sql(&on.db, &[&statement, "SELECT pgxc_pool_reload()"])
    .group(group)
    .idempotent()
    .data(data)
    .build()
}

/// Masters that must get a route change: every node's live master; a node without one is asked
/// on every member that is down (the one that comes back gets the change, or the group reports it
/// unreachable and `resume` finishes it).
fn route_targets<'c>(cluster: &'c Cluster, except_node: Option<&str>, warnings: &mut Vec<Text>) -> Vec<&'c Member> {
    let mut targets = Vec::new();
    for node in cluster.nodes() {
        if Some(node.as_str()) == except_node {
            continue;
        }
        match cluster.master(&node) {
            Some(master) => targets.push(master),
            None => {
                let down: Vec<&Member> = cluster.of_node(&node).into_iter().filter(|m| matches!(m.live, Live::Down(_))).collect();
                warnings.push(text(
                    &format!("{node} has no live master: its route change is asked of {} and reported if it cannot be made", down.iter().map(|m| m.db.as_str()).collect::<Vec<_>>().join(", ")),
                    &format!("{node} に稼働中のマスターがありません"),
                ));
                targets.extend(down);
            }
        }
    }
    targets
}

fn plan_promote(cluster: &Cluster, node: &str, force: bool) -> CommandResult<ChangePlan> {
    let members = cluster.of_node(node);
    if members.is_empty() {
        return Err(CommandError::Usage(format!("{node} is not a node of cluster {}: its nodes are {}, and gtm", cluster.topology, cluster.nodes().join(", "))));
    }
    let Some(standby) = members.iter().find(|m| matches!(m.live, Live::Standby { .. })).copied() else {
        let roles: Vec<String> = members.iter().map(|m| format!("{} is {}", m.db, describe(&m.live))).collect();
        return Err(CommandError::Refused(text(
            &format!("{node} has no standby to promote ({}); give it one with `otb rebuild {node}` first", roles.join(", ")),
            &format!("{node} には昇格できるスタンバイがありません ({})", roles.join(", ")),
        )));
    };
    let old = members.iter().find(|m| m.db != standby.db).copied();
    let mut warnings = Vec::new();
    if let (Some(old), Live::Standby { receiving, received, .. }) = (old, &standby.live) {
        if let Live::Master { lsn } = &old.live {
            if !receiving && !force {
                return Err(CommandError::Refused(text(
                    &format!("{} is not replicating from {} although the master answers: promoting it would lose writes; fix replication, or add --force", standby.db, old.db),
                    &format!("{} はマスター {} から複製していません (--force で強行)", standby.db, old.db),
                )));
            }
            let lag = lag_bytes(&standby.db, lsn, received.as_deref());
            if lag > MAX_LAG_BYTES && !force {
                return Err(CommandError::Refused(text(
                    &format!("{} is {lag} bytes behind {}: promoting it now loses them; wait, or add --force", standby.db, old.db),
                    &format!("{} は {} より {lag} バイト遅れています (--force で強行)", standby.db, old.db),
                )));
            }
        } else if received.is_none() && !force {
            return Err(CommandError::Refused(text(
                &format!("{} has never received WAL from its master; it is not a usable standby (add --force to promote it anyway)", standby.db),
                &format!("{} はマスターから WAL を受信したことがありません", standby.db),
            )));
        }
    }
    let kind = standby.kind.pg_ctl_type();
    let mut steps = Vec::new();
    if let Some(old) = old {
        match opsh_plugin_sdk::probe(&old.host, &["true"], Some(10_000)) {
            Ok(_) => steps.push(
                step("fence-old-master", text(&format!("Fence the old master {} (stop, fast)", old.db), &format!("旧マスター {} を停止 (fast) して隔離", old.db)), &old.host)
                    .exec(&old.host, &["pg_ctl", "-Z", kind, "-D", &old.data_dir, "stop", "-m", "fast"])
                    .idempotent()
                    .data(data::encode(&[("action", "fence"), ("host", &old.host), ("dir", &old.data_dir), ("type", kind)]))
                    .build(),
            ),
            Err(e) => warnings.push(text(
                &format!("cannot fence the old master {}: host {} does not answer ({}); make sure it stays down", old.db, old.host, e.message()),
                &format!("旧マスター {} を隔離できません: ホスト {} が応答しません。停止したままにしてください", old.db, old.host),
            )),
        }
    }
    steps.push(
        step("promote-standby", text(&format!("Promote {} and wait until it takes writes", standby.db), &format!("{} を昇格し書き込み可能になるまで待つ", standby.db)), &standby.db)
            .exec(&standby.host, &["pg_ctl", "-Z", kind, "-D", &standby.data_dir, "promote"])
            .data(data::encode(&[("action", "promote"), ("db", &standby.db), ("host", &standby.host), ("dir", &standby.data_dir), ("type", kind)]))
            .build(),
    );
    let mut targets = route_targets(cluster, Some(node), &mut warnings);
    targets.push(standby); // "connect to the new route" for the failed node itself
    for on in targets {
        steps.push(route_step(on, node, &standby.host, standby.port, false, "routes"));
    }
    Ok(ChangePlan {
        summary: text(
            &format!("Fail {node} over to {} and point every coordinator and datanode at it", standby.db),
            &format!("{node} を {} にフェイルオーバーし、全コーディネータ・データノードのルートを変更", standby.db),
        ),
        steps,
        warnings,
    })
}

/// Run on the node being rebuilt, with PGPASSWORD in its environment: keep the node's own
/// configuration (both tools copy the source's, which names the source's port and socket), try
/// pg_rewind, else take a fresh base backup; both write standby.signal and primary_conninfo (-R),
/// from which the password is removed — the standby authenticates with the server user's
/// ~/.pgpass: opsh writes no secret to disk.
const RESYNC: &str = r#"set -eu
dir=$1 address=$2 port=$3 user=$4
keep=$(mktemp -d)
cp -p "$dir/postgresql.conf" "$dir/pg_hba.conf" "$keep/"
if pg_rewind -D "$dir" --source-server="host=$address port=$port user=$user dbname=postgres" -R >"$keep/rewind.log" 2>&1; then
  how="pg_rewind"
else
  rm -rf "$dir.rebuild"
  pg_basebackup -D "$dir.rebuild" -h "$address" -p "$port" -U "$user" -X stream -c fast -R
  rm -rf "$dir"
  mv "$dir.rebuild" "$dir"
  how="a fresh base backup (pg_rewind: $(tail -n 1 "$keep/rewind.log"))"
fi
cp -p "$keep/postgresql.conf" "$keep/pg_hba.conf" "$dir/"
# The copy brings the source's own recovery settings (its slot, its upstream): keep only the
# primary_conninfo just written, without a password, and no slot of someone else's.
awk '/^primary_slot_name/ {next} /^primary_conninfo/ {last=$0; next} {print} END {if (last != "") print last}' \
  "$dir/postgresql.auto.conf" | sed "s/ password=[^ ']*//" > "$keep/auto.conf"
cat "$keep/auto.conf" > "$dir/postgresql.auto.conf"
chmod 700 "$dir"
rm -rf "$keep"
echo "re-synchronised with $how"
"#;

fn plan_rebuild(cluster: &Cluster, node: &str) -> CommandResult<ChangePlan> {
    let members = cluster.of_node(node);
    if members.is_empty() {
        return Err(CommandError::Usage(format!("{node} is not a node of cluster {}: its nodes are {}", cluster.topology, cluster.nodes().join(", "))));
    }
    let Some(master) = cluster.master(node) else {
        return Err(CommandError::Refused(text(&format!("{node} has no live master to copy from"), &format!("{node} にコピー元の稼働中マスターがありません"))));
    };
    let Some(target) = members.iter().find(|m| m.db != master.db).copied() else {
        return Err(CommandError::Refused(text(&format!("{node} has no second member in the inventory to make a standby of"), "")));
    };
    if let Live::Standby { receiving: true, .. } = target.live {
        return Err(CommandError::Refused(text(&format!("{} is already a streaming standby of {}", target.db, master.db), &format!("{} は既に {} のスタンバイです", target.db, master.db))));
    }
    if let Live::Master { .. } = target.live {
        return Err(CommandError::Refused(text(
            &format!("{} still takes writes as a master next to {}: two masters — fence it first (`otb promote` fences), then rebuild", target.db, master.db),
            &format!("{} と {} の両方がマスターです。先に隔離してください", target.db, master.db),
        )));
    }
    opsh_plugin_sdk::probe(&target.host, &["true"], Some(10_000))?;
    let kind = target.kind.pg_ctl_type();
    let user = host::lookup(&master.db)?.attributes.into_iter().find(|(k, _)| k == "user").map(|(_, v)| v).unwrap_or_else(|| "postgres".into());
    let address = address_of(&master.host);
    let port = master.port.to_string();
    let steps = vec![
        step("stop-old-master", text(&format!("Make sure {} is stopped", target.db), &format!("{} の停止を確認", target.db)), &target.host)
            .exec(&target.host, &["pg_ctl", "-Z", kind, "-D", &target.data_dir, "stop", "-m", "fast"])
            .idempotent()
            .data(data::encode(&[("action", "fence"), ("host", &target.host), ("dir", &target.data_dir), ("type", kind)]))
            .build(),
        step("resync", text(&format!("Re-synchronise {} from {} (pg_rewind, else a base backup)", target.db, master.db), &format!("{} を {} から再同期", target.db, master.db)), &target.host)
            .exec(&target.host, &["sh", "-c", RESYNC, "resync", &target.data_dir, &address, &port, &user])
            .data(data::encode(&[("action", "resync"), ("host", &target.host), ("dir", &target.data_dir), ("address", &address), ("port", &port), ("user", &user), ("source", &master.db)]))
            .build(),
        step("start-standby", text(&format!("Start {} as a standby and wait until it streams", target.db), &format!("{} をスタンバイとして起動しストリーミングを待つ", target.db)), &target.db)
            .exec(&target.host, &["pg_ctl", "-Z", kind, "-D", &target.data_dir, "-l", &format!("{}.log", target.data_dir), "-w", "start"])
            .idempotent()
            .data(data::encode(&[("action", "start-standby"), ("host", &target.host), ("dir", &target.data_dir), ("type", kind), ("db", &target.db)]))
            .build(),
    ];
    Ok(ChangePlan {
        summary: text(&format!("Make {} a streaming standby of {}", target.db, master.db), &format!("{} を {} のストリーミングスタンバイにする", target.db, master.db)),
        steps,
        warnings: vec![text(
            "the standby authenticates to its master with the server user's ~/.pgpass on its host (opsh writes no password to disk)",
            "スタンバイはホスト上のサーバーユーザーの ~/.pgpass で認証します (opsh はパスワードをディスクに書きません)",
        )],
    })
}

fn wait_for_streaming(db: &str) -> Result<(), CommandError> {
    let streaming = || {
        sql::query(db, "SELECT EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming' AND last_msg_receipt_time IS NOT NULL) AS streaming", &[])
            .map(|rows| rows.first_bool("streaming") == Some(true))
            .map_err(|e| e.brief())
    };
    wait::until(30_000, 100, &format!("{db} to stream from its master (see its log)"), streaming)
}

fn plan_promote_gtm(cluster: &Cluster) -> CommandResult<ChangePlan> {
    let gtm = &cluster.gtm;
    let Some(standby) = gtm.hosts.iter().find(|h| h.role == "standby") else {
        let roles: Vec<String> = gtm.hosts.iter().map(|h| format!("{}: {}", h.host, h.role)).collect();
        return Err(CommandError::Refused(text(&format!("the GTM has no running standby ({})", roles.join(", ")), &format!("GTM に稼働中のスタンバイがありません ({})", roles.join(", ")))));
    };
    let mut warnings = Vec::new();
    let mut steps = Vec::new();
    for old in gtm.hosts.iter().filter(|h| h.host != standby.host) {
        if old.role.starts_with("unreachable") {
            warnings.push(text(&format!("cannot fence the old GTM on {}: {}", old.host, old.role), &format!("{} の旧 GTM を隔離できません", old.host)));
            continue;
        }
        steps.push(
            step("fence-old-gtm", text(&format!("Stop the old GTM on {}", old.host), &format!("{} の旧 GTM を停止", old.host)), &old.host)
                .exec(&old.host, &["gtm_ctl", "-Z", "gtm", "-D", &gtm.data_dir, "stop"])
                .idempotent()
                .data(data::encode(&[("action", "fence-gtm"), ("host", &old.host), ("dir", &gtm.data_dir)]))
                .build(),
        );
    }
    steps.push(
        step("promote-gtm", text(&format!("Promote the GTM standby on {}", standby.host), &format!("{} の GTM スタンバイを昇格", standby.host)), &standby.host)
            .exec(&standby.host, &["gtm_ctl", "-Z", "gtm", "-D", &gtm.data_dir, "promote"])
            .idempotent()
            .data(data::encode(&[("action", "promote-gtm"), ("host", &standby.host), ("dir", &gtm.data_dir)]))
            .build(),
    );
    for on in route_targets(cluster, None, &mut warnings) {
        steps.push(route_step(on, &gtm.name, &standby.host, gtm.port, true, "gtm-routes"));
    }
    Ok(ChangePlan {
        summary: text(&format!("Fail the GTM over to {} and point every node at it", standby.host), &format!("GTM を {} にフェイルオーバーし全ノードのルートを変更", standby.host)),
        steps,
        warnings,
    })
}

fn plan_reconcile(cluster: &Cluster) -> CommandResult<ChangePlan> {
    let mut steps = Vec::new();
    let mut warnings = Vec::new();
    let want = expected(cluster);
    for node in cluster.nodes() {
        if cluster.master(&node).is_none() {
            warnings.push(text(&format!("{node} has no live master: routes to it are left as they are"), &format!("{node} に稼働中のマスターがありません")));
        }
    }
    for master in cluster.masters() {
        let have = cluster::routes(&master.db)?;
        for (node, address, port, gtm) in &want {
            if have.get(node) != Some(&(address.clone(), *port)) {
                let host_name = address.trim_start_matches("{{addr:").trim_end_matches("}}");
                steps.push(route_step(master, node, host_name, *port as u16, *gtm, "reconcile"));
            }
        }
    }
    Ok(ChangePlan { summary: text(&format!("{} route(s) to fix", steps.len()), &format!("修正するルート: {} 件", steps.len())), steps, warnings })
}

fn describe(live: &Live) -> String {
    match live {
        Live::Master { .. } => "master".into(),
        Live::Standby { .. } => "standby".into(),
        Live::Down(why) => format!("down ({why})"),
    }
}

fn lag_bytes(db: &str, master_lsn: &str, received: Option<&str>) -> i64 {
    let Some(received) = received else { return i64::MAX };
    sql::query(db, "SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::bigint AS lag", &[sql::Value::Text(master_lsn.into()), sql::Value::Text(received.into())])
        .ok()
        .and_then(|rows| rows.first_int("lag"))
        .unwrap_or(0)
        .max(0)
}

/// After `pg_ctl promote`: until the node assigns a transaction id it does not take writes.
fn wait_for_writes(db: &str) -> Result<(), CommandError> {
    wait::until(30_000, 100, &format!("{db} to take writes after its promotion"), || sql::query(db, "SELECT txid_current()", &[]).map(|_| true).map_err(|e| e.brief()))
}

opsh_plugin_sdk::export!(Otb);
