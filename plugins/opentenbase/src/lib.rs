//! `otb`: OpenTenBase failover, as seed 003 does it by hand — and safer than pgxc_ctl, which
//! neither fences the old master nor re-points other standbys, and silently skips nodes it cannot
//! reach.
//!
//! - `otb status` — every node's members with their live role, upstream and WAL position, the GTM
//!   servers, every route each master holds (pgxc_node), and the invariants (one writable master
//!   per node, every route at its node's live master) — violations in red, `--check` for cron.
//! - `otb promote NODE [--to MEMBER]` — fence every other member that takes writes or could come
//!   back as a master, promote the most advanced standby (`pg_ctl -Z datanode|coordinator
//!   promote`), point the other standbys at it, then `ALTER NODE` + pool reload on every
//!   coordinator and datanode master (the new one included) as one parallel group.
//! - `otb promote gtm [--to HOST]` — fence, `gtm_ctl -Z gtm promote` (asynchronous: polled), `ALTER
//!   GTM NODE` everywhere with the new GTM's own port.
//! - `otb rebuild NODE [--member DB]` — make fenced or broken members streaming standbys again,
//!   with the recovery configuration of the server's major (recovery.conf up to 11).
//! - `otb reconcile` — fix every route that does not point at its node's live master.
//! - `otb requirements` — the tools on each host and the privileges of each login (`doctor`).
//!
//! Roles come from live state (`pg_is_in_recovery()`, `pg_stat_wal_receiver`, `gtm_ctl status`),
//! never from names or the order of the inventory, which stop being true after the first failover.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod cluster;
mod decide;

use cluster::{Cluster, GtmMember, GtmRole, Live, Member};
use decide::Refusal;
use opsh_plugin_sdk::ahead;
use opsh_plugin_sdk::invariants::{Invariants, Seen, one_writable_master};
use opsh_plugin_sdk::pg::{self, Conninfo, Lsn};
use opsh_plugin_sdk::requirements::{self, Privilege, Requirements};
use opsh_plugin_sdk::{
    Args, ChangePlan, CheckResult, CheckState, CommandError, CommandKind, CommandResult, Completion, Guest, Invocation, PluginInfo, RowsExt, Step, Table, Text,
    bad, command, good, names, plain, quote, sql, ssh, step, table, text, warn,
};

/// Written for opsh:plugin 0.2 (see `opsh_plugin_sdk::WIT_MINOR`): the host performs every
/// step as declared; the plugin applies none.
const _: () = assert!(opsh_plugin_sdk::WIT_MINOR == 2, "this plugin is written for opsh:plugin 0.2");

struct Otb;

impl Guest for Otb {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "otb".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: text(
                "OpenTenBase: DN, CN and GTM failover with routes fixed on every node",
                "OpenTenBase: DN・CN・GTM のフェイルオーバーと全ノードのルート変更",
            ),
            capabilities: opsh_plugin_sdk::capabilities(&["sql", "ssh"], cluster::PROBES),
            commands: vec![
                command(
                    "status",
                    CommandKind::Read,
                    text("Nodes, live roles, GTM, every route and the invariants; problems in red", "ノード・ロール・GTM・全ルート・不変条件 (問題は赤)"),
                )
                .example("otb status", text("Show the cluster", "クラスタを表示"))
                .example("otb status --check", text("Exit 6 if anything is wrong (for cron and monitoring)", "問題があれば終了コード 6 (cron・監視用)"))
                .build(),
                command(
                    "promote",
                    CommandKind::Change,
                    text(
                        "Fail a node (or the GTM) over to its most advanced standby and re-point every route",
                        "ノード (または GTM) を最も進んだスタンバイへフェイルオーバーし全ルートを変更",
                    ),
                )
                .positional(
                    "node",
                    text("a node (cn01, dn01, …) or gtm", "ノード (cn01, dn01, …) または gtm"),
                    // The node names the inventory's members carry, and the GTM.
                    Completion::Choices(vec!["@otb-node".into(), "gtm".into()]),
                )
                .option(
                    "to",
                    false,
                    text(
                        "promote this member (a database of the node, or the GTM's host) rather than the most advanced standby",
                        "最も進んだスタンバイの代わりにこのメンバーを昇格",
                    ),
                    Completion::None,
                )
                .flag(
                    "force",
                    text(
                        "go on although a standby is behind or not replicating, or a member cannot be asked (it must stay down)",
                        "スタンバイの遅延・複製停止、または問い合わせできないメンバーがあっても続行 (停止を確認済みのこと)",
                    ),
                )
                .example("otb promote dn01 --dry-run", text("Preview the failover of dn01", "dn01 のフェイルオーバーを確認"))
                .example("otb promote gtm", text("Promote the GTM standby", "GTM スタンバイを昇格"))
                .build(),
                command(
                    "rebuild",
                    CommandKind::Change,
                    text(
                        "Make fenced or broken members of a node streaming standbys of its master again (pg_rewind, else a base backup)",
                        "隔離・故障したメンバーをマスターのスタンバイとして再構築 (pg_rewind、失敗時はベースバックアップ)",
                    ),
                )
                .positional("node", text("cn01, dn01, …", "cn01, dn01, …"), Completion::Choices(vec!["@otb-node".into()]))
                .option("member", false, text("only this member (a database of the node)", "このメンバーのみ"), Completion::Database)
                .example("otb rebuild dn01", text("Give dn01 its standbys back after a failover", "フェイルオーバー後に dn01 のスタンバイを再作成"))
                .build(),
                command("reconcile", CommandKind::Change, text("Point every route at its node's live master", "全ルートを各ノードの現在のマスターに向ける"))
                    .example("otb reconcile --dry-run", text("Show the routes that are wrong", "誤ったルートを表示"))
                    .build(),
                requirements::declaration("otb"),
            ],
        }
    }

    fn read(call: Invocation) -> CommandResult<Vec<Table>> {
        match call.command.as_str() {
            "status" => ahead::settled(|| status(&Cluster::load()?)),
            requirements::COMMAND => Ok(vec![needs(&Cluster::described()?)]),
            other => Err(CommandError::Usage(format!("otb has no read command {other}"))),
        }
    }

    /// The pre-checks of a failover read every member: gathered level by level (`ahead`).
    fn plan(call: Invocation) -> CommandResult<ChangePlan> {
        let args = Args(&call);
        ahead::settled(|| {
            let cluster = Cluster::load()?;
            match call.command.as_str() {
                "promote" if args.required("node")? == "gtm" => plan_promote_gtm(&cluster, args.flag("force"), args.get("to")),
                "promote" => plan_promote(&cluster, args.required("node")?, args.flag("force"), args.get("to")),
                "rebuild" => plan_rebuild(&cluster, args.required("node")?, args.get("member")),
                "reconcile" => plan_reconcile(&cluster),
                other => Err(CommandError::Usage(format!("otb has no command {other}"))),
            }
        })
    }

    /// Every step is declared: the host performs it.
    fn apply(_call: Invocation, step: Step) -> CommandResult<Text> {
        Err(CommandError::Failed(format!("otb applies no step itself; step {} is the host's", step.id)))
    }

    fn check(_call: Invocation, step: Step) -> CommandResult<CheckResult> {
        match opsh_plugin_sdk::data::kind_of(&step).and_then(|kind| check_step(&kind)) {
            Ok(result) => Ok(result),
            Err(CommandError::Capability(e)) => Ok(CheckResult { state: CheckState::Unknown, detail: text(&e.brief(), "") }),
            Err(e) => Err(e),
        }
    }

    fn verify(_call: Invocation) -> CommandResult<Vec<Table>> {
        let cluster = Cluster::load()?;
        let facts = route_facts(&cluster);
        let mut tables = vec![invariants(&cluster, &facts).verified()?];
        tables.extend(status_tables(&cluster, &facts));
        Ok(tables)
    }
}

fn refusal(r: Refusal) -> CommandError {
    match r {
        Refusal::Usage(m) => CommandError::Usage(m),
        Refusal::Refused(t) => CommandError::Refused(t),
    }
}

// ----- status and invariants ------------------------------------------------------------------

fn status(cluster: &Cluster) -> CommandResult<Vec<Table>> {
    let facts = route_facts(cluster);
    let mut tables = vec![invariants(cluster, &facts).table()];
    tables.extend(status_tables(cluster, &facts));
    Ok(tables)
}

type RouteFact = (String, String, Result<Option<String>, String>, Option<String>);

fn role_cell(live: &Live) -> opsh_plugin_sdk::Cell {
    match live {
        Live::Master { .. } => good("master"),
        Live::Standby(s) if s.streaming => plain("standby, streaming"),
        Live::Standby(_) => warn("standby, not streaming"),
        Live::Stopped { fenced: true, .. } => warn("stopped, fenced"),
        Live::Stopped { fenced: false, .. } => warn("stopped"),
        Live::Unknown(why) => bad(format!("cannot tell: {why}")),
    }
}

fn status_tables(cluster: &Cluster, facts: &[RouteFact]) -> Vec<Table> {
    let mut members = table(
        text(&format!("Cluster {}", cluster.topology), &format!("クラスタ {}", cluster.topology)),
        &["node", "member", "host", "port", "role", "upstream", "WAL"],
    );
    for node in cluster.nodes() {
        for m in cluster.of_node(&node) {
            let (upstream, wal) = match &m.live {
                Live::Master { lsn, .. } => (String::new(), lsn.to_string()),
                Live::Standby(s) => {
                    let up = s.upstream.as_ref().map(|u| {
                        cluster
                            .members
                            .iter()
                            .find(|o| o.host == u.host && o.port == u.port)
                            .map(|o| o.db.clone())
                            .unwrap_or_else(|| format!("{}:{}", u.host, u.port))
                    });
                    (up.unwrap_or_else(|| "?".into()), s.position().map(|p| p.to_string()).unwrap_or_default())
                }
                _ => (String::new(), String::new()),
            };
            members.push(vec![
                plain(node.as_str()),
                plain(m.db.as_str()),
                plain(m.host.as_str()),
                plain(m.port.to_string()),
                role_cell(&m.live),
                plain(upstream),
                plain(wal),
            ]);
        }
    }
    let mut gtm = table(text(&format!("GTM {}", cluster.gtm_name), &format!("GTM {}", cluster.gtm_name)), &["host", "port", "role"]);
    for g in &cluster.gtms {
        let role = match &g.role {
            GtmRole::Primary(_) => good("primary"),
            GtmRole::Standby(_) => plain("standby"),
            GtmRole::Stopped => warn("stopped"),
            GtmRole::Unknown(why) => bad(format!("cannot tell: {why}")),
        };
        gtm.push(vec![plain(g.host.as_str()), plain(g.port.to_string()), role]);
    }
    let mut routes = table(text("Routes (pgxc_node on every master)", "ルート (各マスターの pgxc_node)"), &["on", "node", "route", "should be", "state"]);
    for (on, node, have, want) in facts {
        let state = match (&have, &want) {
            (Err(e), _) => bad(format!("cannot read: {e}")),
            (Ok(_), None) => warn("no live master to point at"),
            (Ok(Some(h)), Some(w)) if h == w => good("ok"),
            (Ok(_), Some(_)) => bad("MISMATCH"),
        };
        let shown = |r: &Result<Option<String>, String>| match r {
            Ok(Some(text)) => text.clone(),
            Ok(None) => "(missing)".into(),
            Err(_) => "?".into(),
        };
        routes.push(vec![plain(on.as_str()), plain(node.as_str()), plain(shown(have)), plain(want.clone().unwrap_or_else(|| "?".into())), state]);
    }
    vec![members.build(), gtm.build(), routes.build()]
}

/// For every master and every node (and the GTM): (on, node, the route as `host:port` by
/// inventory host, the route it should be).
fn route_facts(cluster: &Cluster) -> Vec<RouteFact> {
    let mut facts = Vec::new();
    let want: Vec<(String, Option<String>)> = cluster
        .nodes()
        .into_iter()
        .map(|n| {
            let to = cluster.master(&n).map(|m| format!("{}:{}", m.host, m.port));
            (n, to)
        })
        .chain(std::iter::once((
            cluster.gtm_name.clone(),
            match cluster.gtm_primaries().as_slice() {
                [one] => Some(format!("{}:{}", one.host, one.port)),
                _ => None,
            },
        )))
        .collect();
    for on in cluster.masters() {
        let have = cluster::routes(&on.db).map_err(|e| e.brief());
        for (node, should) in &want {
            let route = have.as_ref().map(|routes| {
                routes.iter().find(|r| &r.node == node).map(|r| match r.host() {
                    Some(m) => format!("{}:{}", m.host, r.port),
                    None => format!("{} (no inventory host):{}", r.host_text, r.port),
                })
            });
            facts.push((on.db.clone(), node.clone(), route.map_err(Clone::clone), should.clone()));
        }
    }
    facts
}

fn invariants(cluster: &Cluster, facts: &[RouteFact]) -> Invariants {
    let mut report = Invariants::new();
    for node in cluster.nodes() {
        let seen: Vec<(String, Seen)> = cluster
            .of_node(&node)
            .iter()
            .map(|m| {
                let s = match &m.live {
                    Live::Master { .. } => Seen::Yes,
                    Live::Unknown(why) => Seen::Unknown(why.clone()),
                    _ => Seen::No,
                };
                (m.db.clone(), s)
            })
            .collect();
        report.at_most_one(one_writable_master(), &node, &seen);
    }
    let gtm: Vec<(String, Seen)> = cluster
        .gtms
        .iter()
        .map(|g| {
            let s = match &g.role {
                GtmRole::Primary(_) => Seen::Yes,
                GtmRole::Unknown(why) => Seen::Unknown(why.clone()),
                _ => Seen::No,
            };
            (g.host.clone(), s)
        })
        .collect();
    report.at_most_one(text("at most one primary GTM", "プライマリ GTM は最大 1 つ"), &cluster.gtm_name, &gtm);
    let mut targets: Vec<String> = facts.iter().map(|(_, n, _, _)| n.clone()).collect();
    targets.sort();
    targets.dedup();
    for node in targets {
        let items: Vec<(String, Seen)> = facts
            .iter()
            .filter(|(_, n, _, _)| *n == node)
            .map(|(on, _, have, want)| {
                let s = match (have, want) {
                    (Err(e), _) => Seen::Unknown(e.clone()),
                    (Ok(_), None) => Seen::Unknown("no live master".into()),
                    (Ok(h), Some(w)) if h.as_deref() == Some(w.as_str()) => Seen::Yes,
                    (Ok(h), Some(_)) => return (format!("{on} ({})", h.clone().unwrap_or_else(|| "missing".into())), Seen::No),
                };
                (on.clone(), s)
            })
            .collect();
        report.all(text("every route points at the live master", "全ルートが稼働中のマスターを指す"), &node, &items);
    }
    report
}

// ----- requirements ---------------------------------------------------------------------------

/// What the runbooks run on each member's and GTM server's host (from the member's `bin-dir`,
/// the GTM's `gtm.[HOST.]bin-dir`), and the privileges of each member's login.
fn needs(cluster: &Cluster) -> Table {
    let mut needs = Requirements::default();
    for m in &cluster.members {
        needs.tool(&m.host, &m.tool("pg_ctl"), "status, fence, promote, rebuild");
        needs.tool(&m.host, &m.tool("pg_controldata"), "promote (the old master's last WAL position)");
        needs.tool(&m.host, &m.tool("pg_rewind"), "rebuild");
        needs.tool(&m.host, &m.tool("pg_basebackup"), "rebuild");
        needs.tool(&m.host, "flock", "rebuild (one copy at a time)");
        needs.privilege(&m.db, Privilege::Superuser, "ALTER NODE, pgxc_pool_reload(), ALTER SYSTEM");
        needs.privilege(&m.db, Privilege::Replication, "rebuild (pg_basebackup) and the standbys' primary_conninfo");
    }
    for g in &cluster.gtms {
        needs.tool(&g.host, &g.tool("gtm_ctl"), "GTM status, fence, promote");
    }
    needs.table()
}

// ----- promote --------------------------------------------------------------------------------

/// `sh -c MARK fence PG_CTL DIR FILE CONTENT`: the read-only mark, written only into the data
/// directory of a server that is stopped (`pg_ctl status` exits 3): a server that did not stop
/// is left unmarked and the step fails, so a master kept by an abandoned failover never comes
/// back as a standby by surprise.
const MARK: &str = r#"pg_ctl=$1 dir=$2 file=$3 content=$4
"$pg_ctl" status -D "$dir" >/dev/null 2>&1; rc=$?
if [ "$rc" != 3 ]; then echo "$dir: the server did not stop (pg_ctl status exits $rc): not marked read-only" >&2; exit 1; fi
[ -e "$file" ] || printf '%s' "$content" > "$file"
"#;

/// The read-only mark of `member` (recovery.conf or standby.signal, by version) and the command
/// that writes it.
fn fence_mark(member: &Member, major: Option<u32>) -> Result<(String, Vec<String>), CommandError> {
    let major = major.ok_or_else(|| {
        CommandError::Refused(text(
            &format!("the server version of {} cannot be read (PG_VERSION in {}): opsh cannot fence it", member.db, member.data_dir),
            "",
        ))
    })?;
    let (file, content) = pg::fence_file(major);
    let path = format!("{}/{file}", member.data_dir);
    let argv = ["sh", "-c", MARK, "fence", &member.tool("pg_ctl"), &member.data_dir, &path, content].map(str::to_string).to_vec();
    Ok((path, argv))
}

fn fence_step(member: &Member, running: bool) -> CommandResult<Step> {
    let kind = member.kind.pg_ctl_type();
    let pg_ctl = member.tool("pg_ctl");
    let (marker, mark) = fence_mark(member, member.major())?;
    let title = if running {
        text(
            &format!("Fence {} (stop, fast; a restart comes back read-only)", member.db),
            &format!("{} を隔離 (fast 停止。再起動しても読み取り専用)", member.db),
        )
    } else {
        text(
            &format!("Fence the stopped {} so that a restart cannot make it a second master", member.db),
            &format!("停止中の {} を隔離 (再起動で 2 つ目のマスターにならないように)", member.db),
        )
    };
    // Stopped members are stopped again too (harmless when they are): one may have been started
    // since the plan read it.
    let builder = step(&format!("fence-{}", member.db), title, &member.host)
        .exec(&member.host, &[&pg_ctl, "-Z", kind, "-D", &member.data_dir, "stop", "-m", "fast"])
        .timeout_ms(120_000)
        // 1: it did not run (or did not stop: the step's check tells, `pg_ctl status`).
        .ok_status(&[0, 1]);
    let mark_refs: Vec<&str> = mark.iter().map(String::as_str).collect();
    Ok(builder
        .exec(&member.host, &mark_refs)
        .timeout_ms(60_000)
        .group("fence")
        .idempotent()
        .kind(&Kind::Fence { host: member.host.clone(), dir: member.data_dir.clone(), pg_ctl: pg_ctl.clone(), marker: Some(marker) })
        .build())
}

fn alter_node(node: &str) -> String {
    if node.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') && !node.starts_with(|c: char| c.is_ascii_digit()) {
        node.to_string()
    } else {
        quote::ident(node)
    }
}

/// `ALTER NODE` (or `ALTER GTM NODE`) on one master, then the pool reload — each on its own: the
/// reload refuses to run inside a transaction block.
fn route_step(on: &Member, node: &str, host_value: &str, host_name: &str, port: u16, gtm: bool, group: &str) -> Step {
    let statement = format!("ALTER {}NODE {} WITH (host={}, port={port})", if gtm { "GTM " } else { "" }, alter_node(node), quote::literal(host_value));
    step(
        &format!("route-{}-{node}", on.db),
        text(&format!("On {}: route {node} to {host_name}:{port}", on.db), &format!("{} で {node} のルートを {host_name}:{port} に変更", on.db)),
        &on.db,
    )
    .sql(&on.db, &[&statement, "SELECT pgxc_pool_reload()"])
    .one_by_one()
    .group(group)
    .idempotent()
    .kind(&Kind::Route { db: on.db.clone(), node: node.into(), host: host_name.into(), port })
    .build()
}

/// The host as `on`'s catalog should name it: in the form its current route to `node` uses (a
/// DNS name if it names hosts by DNS name).
fn route_value(on: &Member, node: &str, host_name: &str) -> CommandResult<String> {
    let form = cluster::routes(&on.db).ok().and_then(|routes| routes.into_iter().find(|r| r.node == node)).and_then(|r| r.host()).and_then(|m| m.form);
    names::in_form(host_name, form.as_deref())
}

/// Masters that must get a route change: every node's live master; a node without one is asked
/// on every member that might come back (the one that does gets the change, or the group reports
/// it unreachable and `resume` finishes it).
fn route_targets<'c>(cluster: &'c Cluster, except_node: Option<&str>, warnings: &mut Vec<Text>) -> Vec<&'c Member> {
    let mut targets = Vec::new();
    for node in cluster.nodes() {
        if Some(node.as_str()) == except_node {
            continue;
        }
        match cluster.master(&node) {
            Some(master) => targets.push(master),
            None => {
                let down: Vec<&Member> = cluster.of_node(&node).into_iter().filter(|m| !m.is_master() && m.standby().is_none()).collect();
                warnings.push(text(
                    &format!(
                        "{node} has no live master: its route change is asked of {} and reported if it cannot be made",
                        down.iter().map(|m| m.db.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    &format!("{node} に稼働中のマスターがありません"),
                ));
                targets.extend(down);
            }
        }
    }
    targets
}

fn repoint_steps(candidate: &Member, standby: &Member, steps: &mut Vec<Step>) -> CommandResult<()> {
    let Some(state) = standby.standby() else { return Ok(()) };
    let major = pg::major(state.version);
    let conninfo = Conninfo::parse(state.conninfo.as_deref().unwrap_or("")).map_err(|e| {
        CommandError::Refused(text(&format!("{}'s primary_conninfo cannot be read ({e}): point it at {} by hand, or rebuild it", standby.db, candidate.db), ""))
    })?;
    let host_value = match conninfo.get("host").and_then(names::host_of) {
        Some(m) => names::in_form(&candidate.host, m.form.as_deref())?,
        None => names::token(&candidate.host, None),
    };
    let next = conninfo.pointed_at(&host_value, candidate.port);
    if let Some(slot) = &state.slot {
        steps.push(
            step(
                &format!("slot-{}-on-{}", slot, candidate.db),
                text(
                    &format!("Keep WAL for {} on the new master {} (replication slot {slot})", standby.db, candidate.db),
                    &format!("新マスター {} にスロット {slot} を作成", candidate.db),
                ),
                &candidate.db,
            )
            // Only if it is not there yet (a resumed run): one statement, no gap.
            .sql(
                &candidate.db,
                &[&format!(
                    "SELECT count(pg_create_physical_replication_slot({slot_literal}, true))::bigint AS created FROM (SELECT WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = {slot_literal})) AS absent",
                    slot_literal = quote::literal(slot)
                )],
            )
            .group("slots")
            .idempotent()
            .kind(&Kind::Slot { db: candidate.db.clone(), slot: slot.clone() })
            .build(),
        );
    }
    let title = text(
        &format!("Point the standby {} at the new master {}", standby.db, candidate.db),
        &format!("スタンバイ {} を新マスター {} に向ける", standby.db, candidate.db),
    );
    let repointed = Kind::Repoint { db: standby.db.clone(), master_host: candidate.host.clone(), master_port: candidate.port };
    let builder = step(&format!("repoint-{}", standby.db), title, &standby.db).group("repoint").idempotent();
    let s = if major >= 12 {
        let mut statements = vec![format!("ALTER SYSTEM SET primary_conninfo = {}", quote::literal(&next.to_string()))];
        if let Some(slot) = &state.slot {
            statements.push(format!("ALTER SYSTEM SET primary_slot_name = {}", quote::literal(slot)));
        }
        statements.push("SELECT pg_reload_conf()".into());
        let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
        // ALTER SYSTEM cannot run in a transaction: one by one.
        let mut builder = builder.sql(&standby.db, &refs).one_by_one();
        if major < 13 {
            // primary_conninfo is reloadable from 13 only.
            builder = builder
                .exec(&standby.host, &[&standby.tool("pg_ctl"), "-Z", standby.kind.pg_ctl_type(), "-D", &standby.data_dir, "restart", "-m", "fast", "-w"])
                .timeout_ms(180_000);
        }
        builder.wait_until(streams_from(standby, candidate), 200, 60_000).kind(&repointed)
    } else {
        // Up to 11 the settings live in recovery.conf; OpenTenBase re-reads it on reload.
        let config = pg::standby_config(major, &next, state.slot.as_deref());
        let (file, content) = config.files.first().cloned().unwrap_or_default();
        let path = format!("{}/{file}", standby.data_dir);
        let argv = [
            "sh".to_string(),
            "-c".into(),
            "printf '%s' \"$2\" > \"$1.opsh-new\" && mv \"$1.opsh-new\" \"$1\" && \"$3\" reload -D \"$4\"".into(),
            "repoint".into(),
            path,
            content,
            standby.tool("pg_ctl"),
            standby.data_dir.clone(),
        ];
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        builder.exec(&standby.host, &refs).timeout_ms(120_000).wait_until(streams_from(standby, candidate), 200, 60_000).kind(&repointed)
    };
    steps.push(s.build());
    Ok(())
}

fn streams_from(standby: &Member, master: &Member) -> Text {
    text(&format!("{} streams from {}", standby.db, master.db), &format!("{} が {} からストリーミング", standby.db, master.db))
}

fn plan_promote(cluster: &Cluster, node: &str, force: bool, to: Option<&str>) -> CommandResult<ChangePlan> {
    let members = cluster.of_node(node);
    if members.is_empty() {
        return Err(CommandError::Usage(format!(
            "{node} is not a node of cluster {}: its nodes are {}, and gtm",
            cluster.topology,
            cluster.nodes().join(", ")
        )));
    }
    let plan = decide::failover(node, &members, force, to).map_err(refusal)?;
    let candidate = plan.candidate;
    let mut warnings = plan.notes.clone();
    let mut steps = Vec::new();
    for m in &plan.fence_running {
        steps.push(fence_step(m, true)?);
    }
    for m in &plan.fence_stopped {
        steps.push(fence_step(m, false)?);
    }
    let kind = candidate.kind.pg_ctl_type();
    let pg_ctl = candidate.tool("pg_ctl");
    match plan.old_master {
        Some(old) if force => warnings.push(text(
            &format!("--force: {} is promoted without waiting for the rest of {}'s WAL; writes it has not received are lost", candidate.db, old.db),
            &format!("--force: {} の残りの WAL を待たずに {} を昇格します。未受信の書き込みは失われます", old.db, candidate.db),
        )),
        // A switchover: the old master is stopped now; the standby must have everything it wrote.
        Some(old) => steps.push(
            step(
                "received-everything",
                text(
                    &format!("Wait until {} has received all of {}'s WAL (up to its last checkpoint)", candidate.db, old.db),
                    &format!("{} が {} の全 WAL を受信するまで待つ", candidate.db, old.db),
                ),
                &candidate.db,
            )
            .wait_until(text(&format!("{} has all of {}'s WAL", candidate.db, old.db), &format!("{} が {} の全 WAL を受信", candidate.db, old.db)), 200, 60_000)
            .idempotent()
            .kind(&Kind::Received {
                db: candidate.db.clone(),
                old_db: old.db.clone(),
                old_host: old.host.clone(),
                old_dir: old.data_dir.clone(),
                controldata: old.tool("pg_controldata"),
            })
            .build(),
        ),
        None => {}
    }
    let promote = promote_argv(&pg_ctl, kind, &candidate.data_dir, &candidate.tool("pg_controldata"));
    let promote: Vec<&str> = promote.iter().map(String::as_str).collect();
    steps.push(
        step(
            "promote-standby",
            text(&format!("Promote {} and wait until it takes writes", candidate.db), &format!("{} を昇格し書き込み可能になるまで待つ", candidate.db)),
            &candidate.db,
        )
        .exec(&candidate.host, &promote)
        .timeout_ms(120_000)
        .wait_until(text(&format!("{} takes writes", candidate.db), &format!("{} が書き込み可能", candidate.db)), 100, 30_000)
        .kind(&Kind::Promote { db: candidate.db.clone() })
        .build(),
    );
    for standby in &plan.repoint {
        repoint_steps(candidate, standby, &mut steps)?;
    }
    let mut targets = route_targets(cluster, Some(node), &mut warnings);
    targets.push(candidate); // "connect to the new route" for the failed node itself
    for on in targets {
        let value = route_value(on, node, &candidate.host)?;
        steps.push(route_step(on, node, &value, &candidate.host, candidate.port, false, "routes"));
    }
    Ok(ChangePlan {
        summary: text(
            &format!("Fail {node} over to {} and point every coordinator and datanode at it", candidate.db),
            &format!("{node} を {} にフェイルオーバーし、全コーディネータ・データノードのルートを変更", candidate.db),
        ),
        steps,
        warnings,
        if_stopped: vec![text(
            &format!(
                "{node}'s fenced members stay stopped (a restart comes back read-only); until the run finishes {node} may have no master, and routes may still name the old one"
            ),
            &format!(
                "{node} の隔離したメンバーは停止したまま (再起動しても読み取り専用)。完了まで {node} にマスターが無い、または旧マスターへのルートが残る場合があります"
            ),
        )],
    })
}

/// The GTM's fence: stopped, and told to start as a standby of the new GTM should anyone start it.
const GTM_FENCE: &str = r#"set -eu
gtm_ctl=$1 dir=$2 host=$3 port=$4
if [ -f "$dir/gtm.pid" ]; then "$gtm_ctl" -Z gtm -D "$dir" stop -m fast || true; fi
pid=$(sed -n 1p "$dir/gtm.pid" 2>/dev/null || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "the GTM in $dir (PID $pid) is still running" >&2; exit 1; fi
if tail -n 6 "$dir/gtm.conf" | grep -q "fenced after the GTM failed over to $host:$port"; then echo "fenced already"; exit 0; fi
printf '#===========================================\n# Updated by opsh: fenced after the GTM failed over to %s:%s\nstartup = STANDBY\nactive_host = '"'"'%s'"'"'\nactive_port = %s\n#===========================================\n' "$host" "$port" "$host" "$port" >> "$dir/gtm.conf"
echo "fenced"
"#;

fn gtm_fence_step(old: &GtmMember, new_host_value: &str, new: &GtmMember) -> Step {
    let gtm_ctl = old.tool("gtm_ctl");
    let port = new.port.to_string();
    step(
        &format!("fence-gtm-{}", old.host),
        text(
            &format!("Fence the GTM on {} (stop; it would start as a standby of {})", old.host, new.host),
            &format!("{} の GTM を隔離 (停止し、{} のスタンバイとして起動する設定)", old.host, new.host),
        ),
        &old.host,
    )
    .exec(&old.host, &["sh", "-c", GTM_FENCE, "fence-gtm", &gtm_ctl, &old.data_dir, new_host_value, &port])
    .timeout_ms(120_000)
    .group("fence")
    .idempotent()
    .kind(&Kind::FenceGtm(Gtm { host: old.host.clone(), dir: old.data_dir.clone(), gtm_ctl: gtm_ctl.clone(), port: old.port }))
    .build()
}

/// The `startup` a GTM's configuration ends with (the last setting wins).
fn gtm_startup(gtm: &GtmMember) -> CommandResult<String> {
    let out = opsh_plugin_sdk::probe(&gtm.host, &["cat", &format!("{}/gtm.conf", gtm.data_dir)], Some(15_000))?;
    if out.status != Some(0) {
        return Err(CommandError::Refused(text(
            &format!(
                "{}/gtm.conf on {} cannot be read ({}): opsh cannot tell how that GTM would start",
                gtm.data_dir,
                gtm.host,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            "",
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('#').next())
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == "startup")
        .map(|(_, v)| v.trim().trim_matches('\'').to_ascii_uppercase())
        .next_back()
        .unwrap_or_else(|| "ACT".into()))
}

fn plan_promote_gtm(cluster: &Cluster, force: bool, to: Option<&str>) -> CommandResult<ChangePlan> {
    let plan = decide::gtm_failover(&cluster.gtms, force, to).map_err(refusal)?;
    let new = plan.candidate;
    let mut warnings = plan.notes.clone();
    let mut steps = Vec::new();
    for old in &plan.fence_running {
        steps.push(gtm_fence_step(old, &names::token(&new.host, None), new));
    }
    for old in &plan.check_stopped {
        if gtm_startup(old)? != "STANDBY" {
            steps.push(gtm_fence_step(old, &names::token(&new.host, None), new));
        }
    }
    let gtm_ctl = new.tool("gtm_ctl");
    steps.push(
        step(
            "promote-gtm",
            text(
                &format!("Promote the GTM standby on {} and wait until it is primary", new.host),
                &format!("{} の GTM スタンバイを昇格しプライマリになるまで待つ", new.host),
            ),
            &new.host,
        )
        .exec(&new.host, &[&gtm_ctl, "-Z", "gtm", "-D", &new.data_dir, "promote"])
        .timeout_ms(60_000)
        // gtm_ctl only signals the server.
        .wait_until(text(&format!("the GTM on {} is primary", new.host), &format!("{} の GTM がプライマリ", new.host)), 200, 30_000)
        .idempotent()
        .kind(&Kind::PromoteGtm(Gtm { host: new.host.clone(), dir: new.data_dir.clone(), gtm_ctl: gtm_ctl.clone(), port: new.port }))
        .build(),
    );
    for on in route_targets(cluster, None, &mut warnings) {
        let value = route_value(on, &cluster.gtm_name, &new.host)?;
        steps.push(route_step(on, &cluster.gtm_name, &value, &new.host, new.port, true, "gtm-routes"));
    }
    Ok(ChangePlan {
        summary: text(
            &format!("Fail the GTM over to {} (port {}) and point every node at it", new.host, new.port),
            &format!("GTM を {} (ポート {}) にフェイルオーバーし全ノードのルートを変更", new.host, new.port),
        ),
        steps,
        warnings,
        if_stopped: vec![text(
            "the old GTM stays stopped (it would start as a standby); until the run finishes some nodes may still route to it",
            "旧 GTM は停止したまま (起動してもスタンバイ)。完了まで旧 GTM へのルートが残る場合があります",
        )],
    })
}

// ----- rebuild ----------------------------------------------------------------------------------

/// Run on the member being rebuilt, with PGPASSWORD in its environment: keep the member's own
/// configuration (both tools copy the source's, which names the source's port and socket), try
/// pg_rewind (OpenTenBase's needs the node's name, and writes no recovery settings), else take a
/// fresh base backup; then write the standby configuration of the server's major (given as
/// arguments: a file and its content, and lines for postgresql.auto.conf) — without a password:
/// the standby authenticates with the server user's ~/.pgpass, and opsh writes no secret to disk.
/// Its last act is an empty marker file named after this re-synchronisation (the master and its
/// WAL position when planned): the step's check looks for it, because the read-only mark alone is
/// also what fencing leaves on a member never re-synchronised, and a copy cut short by a crash
/// leaves it too. Markers of earlier re-synchronisations (its own or the copied source's) go.
/// One at a time per data directory (flock(1), util-linux): the copy of an opsh that was killed
/// goes on on the host, and the resumed run's copy waits for it instead of copying into the
/// same directories at the same time.
const RESYNC: &str = r#"set -eu
rewind=$1 basebackup=$2 dir=$3 address=$4 port=$5 user=$6 node=$7 file=$8 content=$9 marker=${10}
shift 10
command -v flock >/dev/null || { echo "flock (util-linux) is needed on this host to re-synchronise $dir" >&2; exit 1; }
exec 9>>"$dir.opsh-resync.lock"
flock 9
rm -f "$dir"/opsh-resynced-*
keep=$(mktemp -d)
cp -p "$dir/postgresql.conf" "$dir/pg_hba.conf" "$keep/"
if "$rewind" -D "$dir" --node-name="$node" --source-server="host=$address port=$port user=$user dbname=postgres" >"$keep/rewind.log" 2>&1; then
  how="pg_rewind"
else
  rm -rf "$dir.rebuild"
  "$basebackup" -D "$dir.rebuild" -h "$address" -p "$port" -U "$user" -X stream -c fast
  rm -rf "$dir"
  mv "$dir.rebuild" "$dir"
  how="a fresh base backup (pg_rewind: $(tail -n 1 "$keep/rewind.log"))"
fi
cp -p "$keep/postgresql.conf" "$keep/pg_hba.conf" "$dir/"
# The copy brings the source's own state: no recovery settings or markers of anyone else's.
rm -f "$dir/recovery.conf" "$dir/recovery.done" "$dir/standby.signal" "$dir/recovery.signal" "$dir"/opsh-resynced-*
if [ -f "$dir/postgresql.auto.conf" ]; then
  grep -v -E '^[[:space:]]*(primary_conninfo|primary_slot_name|recovery_target_timeline)[[:space:]]*=' "$dir/postgresql.auto.conf" > "$keep/auto.conf" || true
  cat "$keep/auto.conf" > "$dir/postgresql.auto.conf"
fi
for line in "$@"; do printf '%s\n' "$line" >> "$dir/postgresql.auto.conf"; done
printf '%s' "$content" > "$dir/$file"
chmod 700 "$dir"
rm -rf "$keep"
: > "$dir/$marker"
echo "re-synchronised with $how"
"#;

/// Start a rebuilt member; a server already running there counts as started. The start of an
/// opsh that was killed goes on on the host, and the resumed run's `pg_ctl start` then fails with
/// "another server might be running" while that server comes up: the step's wait decides.
const START_STANDBY: &str = r#"pg_ctl=$1 kind=$2 dir=$3
"$pg_ctl" -Z "$kind" -D "$dir" -l "$dir.log" -w -t 120 start || "$pg_ctl" -D "$dir" status
"#;

/// The promote step's remote command, written out with its values so that the plan reads as
/// the runbook does (`pg_ctl -Z datanode -D DIR promote`). A promote that an earlier, killed
/// opsh started may have finished on the host after that run's journal last spoke (its ssh
/// command is not killed with it): `pg_ctl promote` then says "server is not in standby mode".
/// A server that is in production by then counts as promoted; the step's "takes writes" wait
/// decides (pure: unit-tested, the script run with stand-in tools).
pub fn promote_argv(pg_ctl: &str, kind: &str, dir: &str, controldata: &str) -> Vec<String> {
    let (pg_ctl, kind, dir, controldata) = (quote::shell(pg_ctl), quote::shell(kind), quote::shell(dir), quote::shell(controldata));
    let script = format!(
        "{pg_ctl} -Z {kind} -D {dir} promote && exit 0\n\
         {controldata} {dir} | grep -q '^Database cluster state: *in production$' || exit 1\n\
         echo 'the server was already promoted (an earlier promote finished)'\n"
    );
    vec!["sh".into(), "-c".into(), script]
}

/// The remote command of a rebuild's start step (pure: unit-tested).
pub fn start_standby_argv(pg_ctl: &str, kind: &str, dir: &str) -> Vec<String> {
    ["sh", "-c", START_STANDBY, "start", pg_ctl, kind, dir].map(str::to_string).to_vec()
}

/// The marker a finished re-synchronisation of a member from `master` at `lsn` leaves.
pub fn resync_marker(master: &Member, lsn: Lsn) -> String {
    format!("opsh-resynced-{}-{:016X}", master.db, lsn.0)
}

/// The remote command that re-synchronises `target` from `master` and configures it as its
/// standby, for the server major `major` (pure: unit-tested for both eras).
pub fn resync_argv(target: &Member, master: &Member, major: u32, master_host_value: &str, marker: &str) -> Vec<String> {
    let conninfo = Conninfo(vec![
        ("host".into(), master_host_value.to_string()),
        ("port".into(), master.port.to_string()),
        ("user".into(), master.user.clone()),
        ("application_name".into(), target.db.clone()),
    ]);
    let config = pg::standby_config(major, &conninfo, None);
    let (file, content) = config.files.first().cloned().unwrap_or_default();
    let mut argv = vec![
        "sh".to_string(),
        "-c".into(),
        RESYNC.into(),
        "resync".into(),
        target.tool("pg_rewind"),
        target.tool("pg_basebackup"),
        target.data_dir.clone(),
        names::token(&master.host, None),
        master.port.to_string(),
        master.user.clone(),
        target.node.clone(),
        file,
        content,
        marker.to_string(),
    ];
    argv.extend(config.auto_conf);
    argv
}

fn plan_rebuild(cluster: &Cluster, node: &str, only: Option<&str>) -> CommandResult<ChangePlan> {
    let members = cluster.of_node(node);
    if members.is_empty() {
        return Err(CommandError::Usage(format!("{node} is not a node of cluster {}: its nodes are {}", cluster.topology, cluster.nodes().join(", "))));
    }
    let masters = cluster.masters_of(node);
    let master = match masters.as_slice() {
        [one] => *one,
        [] => {
            return Err(CommandError::Refused(text(
                &format!("{node} has no live master to copy from"),
                &format!("{node} にコピー元の稼働中マスターがありません"),
            )));
        }
        many => {
            return Err(CommandError::Refused(text(
                &format!(
                    "{node} has {} writable masters ({}): a split brain — fence the one to give up first (`otb promote {node}` refuses too), then rebuild",
                    many.len(),
                    many.iter().map(|m| m.db.as_str()).collect::<Vec<_>>().join(", ")
                ),
                &format!("{node} に書き込み可能なマスターが複数あります"),
            )));
        }
    };
    let Live::Master { version, lsn } = master.live else { return Err(CommandError::Failed(format!("{} is not a master", master.db))) };
    let marker = resync_marker(master, lsn);
    let major = pg::major(version);
    let targets: Vec<&Member> = match only {
        Some(db) => match members.iter().copied().find(|m| m.db == db) {
            Some(m) if m.db == master.db => return Err(CommandError::Usage(format!("--member {db} is the master of {node}"))),
            Some(m) => vec![m],
            None => {
                return Err(CommandError::Usage(format!(
                    "--member {db} is not a member of {node}: its members are {}",
                    members.iter().map(|m| m.db.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
        },
        None => members.iter().copied().filter(|m| m.db != master.db && !m.standby().is_some_and(|s| s.streaming)).collect(),
    };
    if targets.is_empty() {
        return Err(CommandError::Refused(text(
            &format!("every member of {node} other than the master {} is already a streaming standby", master.db),
            &format!("{node} のマスター {} 以外は既にストリーミング中のスタンバイです", master.db),
        )));
    }
    let mut steps = Vec::new();
    for target in &targets {
        if let Live::Unknown(why) = &target.live {
            return Err(CommandError::Refused(text(&format!("{} cannot be asked ({why}): opsh rebuilds only a member whose server answers", target.db), "")));
        }
        opsh_plugin_sdk::reachable(&target.host)?;
        let kind = target.kind.pg_ctl_type();
        let pg_ctl = target.tool("pg_ctl");
        let argv = resync_argv(target, master, major, &names::token(&master.host, None), &marker);
        let start = start_standby_argv(&pg_ctl, kind, &target.data_dir);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        steps.push(
            step(&format!("stop-{}", target.db), text(&format!("Make sure {} is stopped", target.db), &format!("{} の停止を確認", target.db)), &target.host)
                .exec(&target.host, &[&pg_ctl, "-Z", kind, "-D", &target.data_dir, "stop", "-m", "fast"])
                .timeout_ms(120_000)
                // 1: it did not run (the step's check tells, `pg_ctl status`).
                .ok_status(&[0, 1])
                .idempotent()
                .kind(&Kind::Fence { host: target.host.clone(), dir: target.data_dir.clone(), pg_ctl: pg_ctl.clone(), marker: None })
                .build(),
        );
        steps.push(
            step(
                &format!("resync-{}", target.db),
                text(
                    &format!("Re-synchronise {} from {} (pg_rewind, else a base backup) and make it its standby", target.db, master.db),
                    &format!("{} を {} から再同期しスタンバイにする", target.db, master.db),
                ),
                &target.host,
            )
            .exec(&target.host, &refs)
            .env("PGPASSWORD", ssh::EnvValue::DatabasePassword(master.db.clone()))
            .timeout_ms(1_800_000)
            .kind(&Kind::Resync { host: target.host.clone(), dir: target.data_dir.clone(), major, marker: marker.clone() })
            .build(),
        );
        steps.push(
            step(
                &format!("start-{}", target.db),
                text(
                    &format!("Start {} as a standby and wait until it streams", target.db),
                    &format!("{} をスタンバイとして起動しストリーミングを待つ", target.db),
                ),
                &target.db,
            )
            .exec(&target.host, &start.iter().map(String::as_str).collect::<Vec<_>>())
            .timeout_ms(180_000)
            .wait_until(text(&format!("{} streams from {}", target.db, master.db), &format!("{} が {} からストリーミング", target.db, master.db)), 100, 60_000)
            .idempotent()
            .kind(&Kind::StartStandby { db: target.db.clone() })
            .build(),
        );
    }
    Ok(ChangePlan {
        summary: text(
            &format!("Make {} streaming standby(s) of {}", targets.iter().map(|t| t.db.as_str()).collect::<Vec<_>>().join(", "), master.db),
            &format!("{} を {} のストリーミングスタンバイにする", targets.iter().map(|t| t.db.as_str()).collect::<Vec<_>>().join(", "), master.db),
        ),
        steps,
        warnings: vec![text(
            "a standby authenticates to its master with the server user's ~/.pgpass on its host (opsh writes no password to disk)",
            "スタンバイはホスト上のサーバーユーザーの ~/.pgpass で認証します (opsh はパスワードをディスクに書きません)",
        )],
        if_stopped: vec![text(
            &format!(
                "{} stay stopped until the run finishes; the master {} is not touched",
                targets.iter().map(|t| t.db.as_str()).collect::<Vec<_>>().join(", "),
                master.db
            ),
            &format!("完了まで {} は停止したまま。マスター {} は変更しません", targets.iter().map(|t| t.db.as_str()).collect::<Vec<_>>().join("、"), master.db),
        )],
    })
}

// ----- reconcile ----------------------------------------------------------------------------------

fn plan_reconcile(cluster: &Cluster) -> CommandResult<ChangePlan> {
    let mut steps = Vec::new();
    let mut warnings = Vec::new();
    for node in cluster.nodes() {
        match cluster.masters_of(&node).len() {
            0 => {
                warnings.push(text(&format!("{node} has no live master: routes to it are left as they are"), &format!("{node} に稼働中のマスターがありません")))
            }
            1 => {}
            n => warnings.push(text(
                &format!("{node} has {n} writable masters (a split brain): routes to it are left as they are — resolve it with `otb promote {node}`"),
                &format!("{node} に複数のマスターがあります"),
            )),
        }
    }
    let gtm = match cluster.gtm_primaries().as_slice() {
        [one] => Some((one.host.clone(), one.port)),
        _ => {
            warnings.push(text("the GTM has no single primary: GTM routes are left as they are", "GTM のプライマリが 1 つではありません"));
            None
        }
    };
    let mut want: Vec<(String, String, u16, bool)> =
        cluster.nodes().iter().filter_map(|n| cluster.master(n).map(|m| (n.clone(), m.host.clone(), m.port, false))).collect();
    if let Some((host, port)) = gtm {
        want.push((cluster.gtm_name.clone(), host, port, true));
    }
    for master in cluster.masters() {
        let have = cluster::routes(&master.db)?;
        for (node, host_name, port, is_gtm) in &want {
            let current = have.iter().find(|r| &r.node == node);
            if current.is_some_and(|r| r.points_at(host_name, *port)) {
                continue;
            }
            let form = current.and_then(|r| r.host()).and_then(|m| m.form);
            let value = names::in_form(host_name, form.as_deref())?;
            steps.push(route_step(master, node, &value, host_name, *port, *is_gtm, "reconcile"));
        }
    }
    Ok(ChangePlan {
        summary: text(&format!("{} route(s) to fix", steps.len()), &format!("修正するルート: {} 件", steps.len())),
        steps,
        warnings,
        if_stopped: vec![text(
            "some routes may still be wrong: run `otb reconcile` again",
            "一部のルートが未修正の場合があります。`otb reconcile` を再実行してください",
        )],
    })
}

// ----- apply and check --------------------------------------------------------------------------

fn stderr(out: &ssh::ExecOutput) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// The WAL a stopped master last wrote (`pg_controldata`'s latest checkpoint).
fn final_lsn(host: &str, controldata: &str, dir: &str) -> CommandResult<Lsn> {
    let out = opsh_plugin_sdk::probe(host, &[controldata, "-D", dir], Some(60_000))?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Latest checkpoint location:"))
        .and_then(|v| Lsn::parse(v.trim()))
        .ok_or_else(|| CommandError::Failed(format!("pg_controldata on {host} did not give the latest checkpoint of {dir}: {}", stderr(&out))))
}

fn received(db: &str) -> Result<Option<Lsn>, String> {
    sql::query(db, "SELECT pg_last_wal_receive_lsn()::text AS lsn", &[]).map(|rows| rows.first_text("lsn").and_then(|l| Lsn::parse(&l))).map_err(|e| e.brief())
}

fn gtm_role_now(gtm: &Gtm) -> CommandResult<GtmRole> {
    let out = opsh_plugin_sdk::probe(&gtm.host, &[&gtm.gtm_ctl, "-Z", "gtm", "-D", &gtm.dir, "-P", &gtm.port.to_string(), "status"], Some(15_000))?;
    Ok(cluster::gtm_role(out.status, &String::from_utf8_lossy(&out.stdout), &String::from_utf8_lossy(&out.stderr)))
}

fn upstream_now(db: &str) -> Result<Option<(cluster::Upstream, bool)>, String> {
    let rows = sql::query(db, "SELECT status, conninfo FROM pg_stat_wal_receiver", &[]).map_err(|e| e.brief())?;
    Ok(rows.first_text("conninfo").and_then(|c| cluster::upstream_of(&c)).map(|u| (u, rows.first_text("status").as_deref() == Some("streaming"))))
}

/// The kinds of step, as `plan` leaves them in a step's data for `check`. Databases are inventory
/// names, hosts inventory hosts.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Kind {
    /// Stopped, and marked to start read-only (`marker`, the file that says so) when set.
    Fence {
        host: String,
        dir: String,
        pg_ctl: String,
        marker: Option<String>,
    },
    /// The standby `db` has everything the fenced master `old_db` wrote.
    Received {
        db: String,
        old_db: String,
        old_host: String,
        old_dir: String,
        controldata: String,
    },
    Promote {
        db: String,
    },
    Slot {
        db: String,
        slot: String,
    },
    Repoint {
        db: String,
        master_host: String,
        master_port: u16,
    },
    Resync {
        host: String,
        dir: String,
        major: u32,
        /// What only this re-synchronisation, finished, leaves in `dir` ([`resync_marker`]).
        #[serde(default)]
        marker: String,
    },
    StartStandby {
        db: String,
    },
    FenceGtm(Gtm),
    PromoteGtm(Gtm),
    Route {
        db: String,
        node: String,
        host: String,
        port: u16,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Gtm {
    host: String,
    dir: String,
    gtm_ctl: String,
    port: u16,
}

fn check_step(kind: &Kind) -> CommandResult<CheckResult> {
    let result = |yes: bool, detail: String| CheckResult { state: if yes { CheckState::Done } else { CheckState::NotDone }, detail: text(&detail, "") };
    Ok(match kind {
        Kind::Fence { host, dir, pg_ctl, marker } => {
            let status = opsh_plugin_sdk::probe(host, &[pg_ctl, "status", "-D", dir], Some(15_000))?;
            let marked = match marker {
                Some(path) => opsh_plugin_sdk::probe(host, &["test", "-e", path], Some(15_000))?.status == Some(0),
                None => true,
            };
            result(
                status.status == Some(3) && marked,
                format!("{dir}: {}{}", if status.status == Some(3) { "not running" } else { "running" }, if marked { "" } else { ", not marked read-only" }),
            )
        }
        Kind::Received { db, old_db, old_host, old_dir, controldata } => {
            let last = final_lsn(old_host, controldata, old_dir)?;
            let got = received(db).map_err(CommandError::Failed)?;
            let yes = got.is_some_and(|r| r >= last);
            result(
                yes,
                if yes {
                    format!("{db} received up to {last}")
                } else {
                    format!(
                        "{db} received {} of {old_db}'s WAL up to {last}; nothing was promoted — the old master is stopped and fenced: start it again (remove its standby.signal / recovery.conf) or promote with --force",
                        got.map(|r| r.to_string()).unwrap_or_else(|| "nothing".into()),
                    )
                },
            )
        }
        Kind::Promote { db } => {
            let rows = sql::query(db, "SELECT NOT pg_is_in_recovery() AS master", &[])?;
            result(rows.first_bool("master") == Some(true), "pg_is_in_recovery()".into())
        }
        Kind::Slot { db, slot } => {
            let rows = sql::query(db, "SELECT count(*)::bigint AS n FROM pg_replication_slots WHERE slot_name = $1", &[sql::Value::Text(slot.clone())])?;
            result(rows.first_int("n") == Some(1), format!("slot {slot}"))
        }
        Kind::Repoint { db, master_host, master_port } => {
            let now = upstream_now(db).map_err(CommandError::Failed)?;
            let yes = now.as_ref().is_some_and(|(u, s)| *s && u.host == *master_host && u.port == *master_port);
            result(
                yes,
                format!(
                    "streams from {}",
                    now.map(|(u, s)| format!("{}:{}{}", u.host, u.port, if s { "" } else { " (not streaming)" })).unwrap_or_else(|| "nothing".into())
                ),
            )
        }
        Kind::Resync { host, dir, major, marker } => {
            let (file, _) = pg::fence_file(*major);
            let mut found = Vec::new();
            for name in [file, marker.as_str()] {
                let out = opsh_plugin_sdk::probe(host, &["test", "-e", &format!("{dir}/{name}")], Some(15_000))?;
                found.push(format!("{name} {}", if out.status == Some(0) { "there" } else { "missing" }));
            }
            result(!marker.is_empty() && found.iter().all(|f| f.ends_with(" there")), format!("in {dir}: {}", found.join(", ")))
        }
        Kind::StartStandby { db } => {
            let streaming = sql::query(
                db,
                "SELECT EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming' AND last_msg_receipt_time IS NOT NULL) AS s",
                &[],
            )?;
            result(streaming.first_bool("s") == Some(true), "pg_stat_wal_receiver".into())
        }
        Kind::FenceGtm(gtm) => {
            let role = gtm_role_now(gtm)?;
            result(role == GtmRole::Stopped, format!("GTM on {}: {role:?}", gtm.host))
        }
        Kind::PromoteGtm(gtm) => {
            let role = gtm_role_now(gtm)?;
            result(matches!(role, GtmRole::Primary(_)), format!("GTM on {}: {role:?}", gtm.host))
        }
        Kind::Route { db, node, host, port } => {
            let routes = cluster::routes(db)?;
            let route = routes.iter().find(|r| r.node == *node);
            result(
                route.is_some_and(|r| r.points_at(host, *port)),
                format!("pgxc_node says {}", route.map(|r| format!("{}:{}", r.host_text, r.port)).unwrap_or_else(|| "nothing".into())),
            )
        }
    })
}

#[cfg(target_arch = "wasm32")]
opsh_plugin_sdk::export!(Otb);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Kind;

    fn member(db: &str, host: &str, port: u16, bin: Option<&str>) -> Member {
        Member {
            db: db.into(),
            node: "dn01".into(),
            kind: Kind::Datanode,
            host: host.into(),
            port,
            data_dir: format!("/data/{db}"),
            bin_dir: bin.map(str::to_string),
            user: "otb".into(),
            live: Live::Unknown(String::new()),
        }
    }

    #[test]
    fn rebuild_writes_recovery_conf_on_opentenbase_10_and_standby_signal_from_12() {
        let target = member("dn01-b", "b", 23002, Some("/opt/otb/bin"));
        let master = member("dn01-a", "a", 23001, None);
        let old = resync_argv(&target, &master, 10, "{{addr:a}}", "opsh-resynced-dn01-a-0000000003000148");
        assert_eq!(&old[4..7], &["/opt/otb/bin/pg_rewind".to_string(), "/opt/otb/bin/pg_basebackup".into(), "/data/dn01-b".into()]);
        assert_eq!(old[10], "dn01", "OpenTenBase's pg_rewind needs the node's name");
        assert_eq!(old[11], "recovery.conf");
        assert!(
            old[12].contains("standby_mode = 'on'")
                && old[12].contains("primary_conninfo = 'host={{addr:a}} port=23001 user=otb application_name=dn01-b'")
                && old[12].contains("recovery_target_timeline = 'latest'"),
            "{}",
            old[12]
        );
        assert_eq!(old[13], "opsh-resynced-dn01-a-0000000003000148", "the marker it leaves when finished");
        assert_eq!(old.len(), 14, "nothing for postgresql.auto.conf: PostgreSQL 10 refuses to start with primary_conninfo there");
        let new = resync_argv(&target, &master, 15, "{{addr:a}}", "opsh-resynced-dn01-a-0000000003000148");
        assert_eq!(new[11], "standby.signal");
        assert_eq!(new[12], "");
        assert_eq!(
            &new[14..],
            &["primary_conninfo = 'host={{addr:a}} port=23001 user=otb application_name=dn01-b'".to_string(), "recovery_target_timeline = 'latest'".into()]
        );
        assert!(!RESYNC.contains(" -R"), "neither tool's -R: OpenTenBase's pg_rewind has none, and pg_basebackup -R would write the password");
    }

    #[test]
    fn a_node_name_is_quoted_only_when_opentenbase_would_fold_it() {
        assert_eq!(alter_node("dn01"), "dn01");
        assert_eq!(alter_node("DN01"), "\"DN01\"");
        assert_eq!(alter_node("gtm_1"), "gtm_1");
    }
}

/// Plans against a scripted cluster (see `opsh_plugin_sdk::fake`): a coordinator cn01 on host a,
/// datanode dn01 with its master dn01-a on a and a standby dn01-b on b, GTMs on a (primary) and b.
#[cfg(test)]
mod plan_tests {
    use opsh_plugin_sdk::fake::{World, ids, invocation as call, rows, text};
    use opsh_plugin_sdk::sql::Value;
    use opsh_plugin_sdk::{CommandError, Effect, Guest, Step};

    fn member(db: &str, kind: &str, node: &str, host: &str, port: &str) -> (String, Vec<(String, String)>) {
        let attrs = [("otb-type", kind), ("otb-node", node), ("host", host), ("port", port), ("data-dir", &format!("/data/{db}")), ("user", "otb")];
        (db.to_string(), attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn state(standby: bool, lsn: &str, conninfo: Option<&str>) -> opsh_plugin_sdk::sql::Rows {
        let columns = ["standby", "version", "current", "received", "replayed", "receiver", "conninfo", "slot", "configured", "configured_slot"];
        let nul = || Value::Null;
        let row = if standby {
            vec![Value::Boolean(true), Value::Int(150_000), nul(), text(lsn), text(lsn), nul(), nul(), nul(), conninfo.map_or_else(nul, text), nul()]
        } else {
            vec![Value::Boolean(false), Value::Int(150_000), text(lsn), nul(), nul(), nul(), nul(), nul(), nul(), nul()]
        };
        rows(&columns, vec![row])
    }

    fn routes(dn01_host: &str) -> opsh_plugin_sdk::sql::Rows {
        let route = |name: &str, kind: &str, host: &str, port: i64| vec![text(name), text(kind), text(host), Value::Int(port)];
        rows(
            &["name", "type", "host", "port"],
            vec![route("cn01", "C", "{{addr:a}}", 15432), route("dn01", "D", dn01_host, 23001), route("gtm_1", "G", "{{addr:a}}", 21000)],
        )
    }

    #[derive(PartialEq)]
    enum Dn01 {
        /// dn01-a is the master, dn01-b its standby.
        Healthy,
        /// dn01-a crashed; dn01-b is still a standby.
        MasterCrashed,
        /// dn01-a crashed and dn01-b was promoted.
        FailedOver,
    }

    fn world(dn01: Dn01) -> World {
        let topology = [
            ("plugin", "otb"),
            ("member.coordinator", "cn01-a"),
            ("member.datanode", "dn01-a,dn01-b"),
            ("gtm.name", "gtm_1"),
            ("gtm.hosts", "a,b"),
            ("gtm.port", "21000"),
            ("gtm.data-dir", "/data/gtm"),
        ];
        let mut world = World::new().target("topology", "otb", &topology);
        for (db, attrs) in [
            member("cn01-a", "coordinator", "cn01", "a", "15432"),
            member("dn01-a", "datanode", "dn01", "a", "23001"),
            member("dn01-b", "datanode", "dn01", "b", "23001"),
        ] {
            let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            world = world.target("database", &db, &attrs);
        }
        world = world
            .sql("cn01-a", "pg_is_in_recovery() AS standby", state(false, "0/5000000", None))
            .sql(
                "dn01-b",
                "pg_is_in_recovery() AS standby",
                if dn01 == Dn01::FailedOver {
                    state(false, "0/6000000", None)
                } else {
                    state(true, "0/5000200", Some("host={{addr:a}} port=23001 user=otb application_name=dn01-b"))
                },
            )
            .sql("cn01-a", "FROM pgxc_node", routes("{{addr:a}}"))
            .sql("dn01-b", "FROM pgxc_node", routes("{{addr:a}}"))
            .exec(
                "a",
                "gtm_ctl -Z gtm -D /data/gtm -P 21000 status",
                0,
                "gtm_ctl: server is running (PID: 42)\ncurrent node [primary] gts[1] xlog [0/3000060]\n",
            )
            .exec(
                "b",
                "gtm_ctl -Z gtm -D /data/gtm -P 21000 status",
                0,
                "gtm_ctl: server is running (PID: 43)\ncurrent node [standby] gts[1] xlog [0/3000060]\n",
            );
        if dn01 == Dn01::Healthy {
            world.sql("dn01-a", "pg_is_in_recovery() AS standby", state(false, "0/5000200", None))
        } else {
            world
                .sql_fails(
                    "dn01-a",
                    "pg_is_in_recovery() AS standby",
                    opsh_plugin_sdk::CapabilityError::Unreachable("database dn01-a: connection refused".into()),
                )
                .exec("a", "pg_ctl status -D /data/dn01-a", 3, "pg_ctl: no server running\n")
                .exec("a", "test -e", 1, "")
                .exec("a", "cat /data/dn01-a/PG_VERSION", 0, "15\n")
        }
    }

    fn argv(step: &Step) -> Vec<String> {
        step.effects.iter().filter_map(|e| if let Effect::Exec(x) = e { Some(x.argv.join(" ")) } else { None }).collect()
    }

    #[test]
    fn promote_after_a_crash_fences_the_stopped_master_promotes_the_standby_and_routes_every_master_to_it() {
        let (plan, _) = world(Dn01::MasterCrashed).run(|| super::Otb::plan(call("promote", &[("node", "dn01")])));
        let plan = plan.expect("a plan");
        assert_eq!(ids(&plan), ["fence-dn01-a", "promote-standby", "route-cn01-a-dn01", "route-dn01-b-dn01"]);
        let fence = argv(&plan.steps[0]);
        assert_eq!(fence[0], "pg_ctl -Z datanode -D /data/dn01-a stop -m fast");
        assert!(
            fence[1].contains("status -D \"$dir\"") && fence[1].ends_with(" fence pg_ctl /data/dn01-a /data/dn01-a/standby.signal "),
            "the mark is written only once pg_ctl status says stopped: {}",
            fence[1]
        );
        let promote = argv(&plan.steps[1]);
        assert!(promote[0].starts_with("sh -c pg_ctl -Z datanode -D /data/dn01-b promote && exit 0\n"), "the plan shows the runbook's command: {promote:?}");
        assert!(promote[0].contains("pg_controldata /data/dn01-b | grep -q"), "{promote:?}");
        assert!(matches!(plan.steps[1].effects.last(), Some(Effect::Wait(_))), "it waits until the new master takes writes");
        let Effect::Sql(route) = &plan.steps[2].effects[0] else { panic!("{:?}", plan.steps[2]) };
        let texts: Vec<&str> = route.statements.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(texts, ["ALTER NODE dn01 WITH (host='{{addr:b}}', port=23001)", "SELECT pgxc_pool_reload()"]);
        assert!(!route.transaction, "pgxc_pool_reload refuses a transaction block");
        assert!(plan.steps.iter().all(|s| s.custom.is_none()));
    }

    #[test]
    fn a_switchover_to_a_standby_that_does_not_stream_from_the_live_master_is_refused() {
        let world = world(Dn01::Healthy).sql("dn01-b", "FROM pg_stat_wal_receiver", rows(&["status", "conninfo"], vec![]));
        let (plan, _) = world.run(|| super::Otb::plan(call("promote", &[("node", "dn01"), ("to", "dn01-b")])));
        match plan {
            // The standby does not stream from the live master: refused unless --force.
            Err(CommandError::Refused(t)) => assert!(t.en.contains("dn01-b is not replicating from dn01-a although the master answers"), "{}", t.en),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reconcile_with_every_route_right_has_nothing_to_do() {
        let (plan, _) = world(Dn01::MasterCrashed).run(|| super::Otb::plan(call("reconcile", &[])));
        let plan = plan.expect("a plan");
        // dn01 has no live master: its routes are left as they are, and said so.
        assert!(plan.steps.is_empty(), "{:?}", ids(&plan));
        assert!(plan.warnings.iter().any(|w| w.en == "dn01 has no live master: routes to it are left as they are"), "{:?}", plan.warnings);
    }

    #[test]
    fn promote_gtm_with_the_primary_alive_fences_it_then_promotes_the_standby_and_routes_every_node() {
        let (plan, _) = world(Dn01::MasterCrashed).run(|| super::Otb::plan(call("promote", &[("node", "gtm")])));
        let plan = plan.expect("a plan");
        assert_eq!(ids(&plan), ["fence-gtm-a", "promote-gtm", "route-cn01-a-gtm_1", "route-dn01-a-gtm_1"]);
        assert_eq!(argv(&plan.steps[1]), ["gtm_ctl -Z gtm -D /data/gtm promote"]);
        let Effect::Sql(route) = &plan.steps[2].effects[0] else { panic!("{:?}", plan.steps[2]) };
        assert_eq!(route.statements[0].sql, "ALTER GTM NODE gtm_1 WITH (host='{{addr:b}}', port=21000)");
        assert!(plan.warnings.iter().any(|w| w.en.starts_with("dn01 has no live master: its route change is asked of dn01-a")), "{:?}", plan.warnings);
    }

    #[test]
    fn rebuild_stops_the_old_master_resyncs_it_with_the_masters_password_named_and_starts_it_as_a_standby() {
        let (plan, _) = world(Dn01::FailedOver).exec("a", "true", 0, "").run(|| super::Otb::plan(call("rebuild", &[("node", "dn01")])));
        let plan = plan.expect("a plan");
        assert_eq!(ids(&plan), ["stop-dn01-a", "resync-dn01-a", "start-dn01-a"]);
        let Effect::Exec(resync) = &plan.steps[1].effects[0] else { panic!("{:?}", plan.steps[1]) };
        assert_eq!(resync.env, [("PGPASSWORD".to_string(), opsh_plugin_sdk::ssh::EnvValue::DatabasePassword("dn01-b".into()))]);
        let Effect::Exec(start) = &plan.steps[2].effects[0] else { panic!("{:?}", plan.steps[2]) };
        assert_eq!(start.argv[3..], ["start", "pg_ctl", "datanode", "/data/dn01-a"], "pg_ctl, node type and data dir as arguments");
        assert!(
            super::START_STANDBY.contains(r#""$pg_ctl" -Z "$kind" -D "$dir" -l "$dir.log" -w -t 120 start || "$pg_ctl" -D "$dir" status"#),
            "a server already running (an earlier start goes on) counts as started"
        );
        assert!(matches!(plan.steps[2].effects.last(), Some(Effect::Wait(_))), "it waits until the standby streams");
    }

    /// Runs the promote script with stand-in `pg_ctl` and `pg_controldata` that exit with
    /// `promote_status` and print the cluster state `state`; returns the script's exit status.
    fn promote_script(promote_status: i32, state: &str) -> i32 {
        let dir = std::env::temp_dir().join(format!("otb-promote-{}-{promote_status}-{}", std::process::id(), state.replace(' ', "-")));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let tool = |name: &str, body: &str| {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write tool");
            std::process::Command::new("chmod").arg("+x").arg(&path).status().expect("chmod");
            path.display().to_string()
        };
        let pg_ctl = tool("pg_ctl", &format!("echo \"pg_ctl $*\" >&2; exit {promote_status}"));
        let controldata =
            tool("pg_controldata", &format!("echo 'pg_control version number:            1201'; echo 'Database cluster state:               {state}'"));
        let argv = super::promote_argv(&pg_ctl, "datanode", "/data/dn01-b", &controldata);
        let status = std::process::Command::new(&argv[0]).args(&argv[1..]).status().expect("sh");
        let _ = std::fs::remove_dir_all(&dir);
        status.code().unwrap_or(-1)
    }

    #[test]
    fn promote_succeeds_when_pg_ctl_does_or_when_an_earlier_promote_already_finished() {
        assert_eq!(promote_script(0, "in archive recovery"), 0, "pg_ctl promote worked");
        assert_eq!(promote_script(1, "in production"), 0, "an earlier (killed) run's promote finished meanwhile");
        assert_eq!(promote_script(1, "in archive recovery"), 1, "still a standby: the promote failed");
        assert_eq!(promote_script(1, "shut down in recovery"), 1, "a stopped standby was not promoted");
    }

    #[test]
    fn rebuild_of_a_node_whose_members_all_replicate_is_refused() {
        let (plan, _) = world(Dn01::MasterCrashed).run(|| super::Otb::plan(call("rebuild", &[("node", "cn01")])));
        assert!(matches!(&plan, Err(CommandError::Refused(t)) if t.en.contains("already a streaming standby")), "{plan:?}");
    }
}
