//! `opsh doctor`: before a failover, does everything its runbooks will touch answer now, with
//! the logins and rights they need? For each host: the ssh login (host key included), `sudo -n`
//! where the host escalates, and the programs the plugins' steps run; for each database: the
//! login (and the plan login), TLS as configured, the server version, and the privileges the
//! plugins' SQL needs. Every host and database is asked at once, each within the connect
//! timeout, so one frozen server costs the whole doctor one timeout (the plugins are asked what
//! they need meanwhile).
//!
//! What is needed comes from the plugins (their `requirements` read command, see
//! `opsh_plugin_sdk::requirements`); whether it is there is asked by the host alone: a plugin
//! states needs, it never reports them met, and it can only name targets it is granted.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::join_all;

use crate::capability::Capabilities;
use crate::capability::exec::ExecRequest;
use crate::capability::{CapabilityError, sql};
use crate::inventory::{Become, Inventory, LOCAL_HOST, SslMode};
use crate::plugins::Registry;
use crate::runbook::{Engine, Outcome, RunOptions, parse_invocation};
use crate::sandbox::bindings::runbook::{Cell, CommandKind, Table};

/// The read command every plugin may have (see `opsh_plugin_sdk::requirements`).
pub const REQUIREMENTS: &str = "requirements";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Failed,
    /// Not asked: what it depends on failed first.
    Skipped,
}

/// One line of the doctor's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub target: String,
    pub check: String,
    pub verdict: Verdict,
    /// What was found (a version, "on"), or what went wrong, in a few words.
    pub detail: String,
    /// For a failure: what went wrong in full and what to do.
    pub fix: String,
}

impl Check {
    fn ok(target: &str, check: &str, detail: impl Into<String>) -> Self {
        Self { target: target.into(), check: check.into(), verdict: Verdict::Ok, detail: detail.into(), fix: String::new() }
    }

    fn failed(target: &str, check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { target: target.into(), check: check.into(), verdict: Verdict::Failed, detail: detail.into(), fix: fix.into() }
    }

    fn skipped(target: &str, check: &str, why: &str) -> Self {
        Self { target: target.into(), check: check.into(), verdict: Verdict::Skipped, detail: why.into(), fix: String::new() }
    }
}

/// Which hosts and databases to examine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub hosts: BTreeSet<String>,
    pub databases: BTreeSet<String>,
}

impl Scope {
    /// Everything the inventory names (`names` empty), or the named topologies (their members
    /// and the members' hosts), hosts and databases (and their hosts).
    pub fn of(inventory: &Inventory, names: &[String]) -> Result<Self, String> {
        let mut scope = Self::default();
        if names.is_empty() {
            scope.hosts = inventory.hosts.keys().filter(|h| h.as_str() != LOCAL_HOST).cloned().collect();
            scope.databases = inventory.databases.keys().cloned().collect();
            return Ok(scope);
        }
        for name in names {
            if let Some(topology) = inventory.topologies.get(name) {
                for member in topology.members.values().flatten() {
                    scope.add(inventory, member);
                }
            } else if inventory.hosts.contains_key(name) || inventory.databases.contains_key(name) {
                scope.add(inventory, name);
            } else {
                let mut known: Vec<&str> =
                    inventory.topologies.keys().chain(inventory.hosts.keys()).chain(inventory.databases.keys()).map(String::as_str).collect();
                known.sort_unstable();
                let hint = crate::suggest::closest(name, known.iter().copied()).map(|s| format!(" — did you mean {s}?")).unwrap_or_default();
                return Err(format!(
                    "doctor: {name} is no topology, host or database of the inventory ({}){hint}; `opsh inventory` lists them",
                    inventory.source.display()
                ));
            }
        }
        Ok(scope)
    }

    fn add(&mut self, inventory: &Inventory, name: &str) {
        if let Some(db) = inventory.databases.get(name) {
            self.databases.insert(name.to_string());
            if db.host != LOCAL_HOST {
                self.hosts.insert(db.host.clone());
            }
        } else if inventory.hosts.contains_key(name) && name != LOCAL_HOST {
            self.hosts.insert(name.to_string());
        }
    }
}

/// A need one plugin states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub plugin: String,
    pub target: String,
    pub what: What,
    pub used_for: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum What {
    /// A program (a path, or a name the remote PATH must find) on a host.
    Tool(String),
    Superuser,
    Replication,
    Role(String),
}

impl What {
    fn label(&self) -> String {
        match self {
            Self::Tool(program) => format!("tool {program}"),
            Self::Superuser => "privilege superuser".into(),
            Self::Replication => "privilege replication".into(),
            Self::Role(role) => format!("privilege role {role}"),
        }
    }
}

/// The needs in a plugin's `requirements` tables: each row checked for shape (a plugin's words
/// are not trusted to be well-formed), a row that does not parse is an error naming it.
pub fn needs_of(plugin: &str, tables: &[Table]) -> Result<Vec<Need>, String> {
    let mut needs = Vec::new();
    for table in tables {
        if table.columns.iter().map(String::as_str).ne(["target", "kind", "need", "for"]) {
            return Err(format!("plugin {plugin}: its requirements table has the columns {:?}, not target, kind, need, for", table.columns));
        }
        for (i, row) in table.rows.iter().enumerate() {
            let cells: Vec<&str> = row
                .iter()
                .map(|cell| match cell {
                    Cell::Plain(t) | Cell::Good(t) | Cell::Warn(t) | Cell::Bad(t) => t.as_str(),
                })
                .collect();
            let bad = |why: &str| format!("plugin {plugin}: requirement {} ({}) {why}", i + 1, cells.join(" | "));
            let [target, kind, need, used_for] = cells.as_slice() else { return Err(bad("does not have four cells")) };
            if need.is_empty() || need.chars().any(char::is_control) || target.is_empty() {
                return Err(bad("names no target or need, or holds control characters"));
            }
            let what = match (*kind, *need) {
                ("tool", program) => What::Tool(program.to_string()),
                ("privilege", "superuser") => What::Superuser,
                ("privilege", "replication") => What::Replication,
                ("privilege", role) if role.strip_prefix("role:").is_some_and(|r| !r.is_empty()) => What::Role(role["role:".len()..].to_string()),
                _ => return Err(bad("is neither a tool nor a privilege opsh can check (superuser, replication, role:NAME)")),
            };
            needs.push(Need { plugin: plugin.to_string(), target: target.to_string(), what, used_for: used_for.to_string() });
        }
    }
    Ok(needs)
}

/// Ask every plugin that has a topology or a grant in the inventory what it needs. A plugin
/// that cannot say is a failed check; one without the command is listed as not declaring.
pub async fn requirements(engine: &Engine<'_>, registry: &Registry, options: &RunOptions) -> (Vec<Need>, Vec<Check>) {
    let inventory = &engine.caps.inventory;
    let relevant = registry
        .plugins
        .iter()
        .filter(|p| inventory.topologies.values().any(|t| t.plugin.as_deref() == Some(p.name())) || inventory.grants.contains_key(p.name()));
    let asked = relevant.map(|plugin| async move {
        let check = format!("{} requirements", plugin.name());
        let words = [REQUIREMENTS.to_string()];
        let Ok((command, call)) = parse_invocation(&plugin.info, &words) else {
            return Err(Check::skipped(plugin.name(), &check, "none declared: its tools and privileges are not checked"));
        };
        if command.kind != CommandKind::Read {
            return Err(Check::failed(
                plugin.name(),
                &check,
                "not a read command",
                format!("plugin {}: its `requirements` command is not a read command; doctor does not run it", plugin.name()),
            ));
        }
        let line = format!("{} {REQUIREMENTS}", plugin.name());
        match engine.run(plugin, command, &call, &line, options).await {
            Outcome::Tables { tables, .. } => needs_of(plugin.name(), &tables).map_err(|e| Check::failed(plugin.name(), &check, "malformed", e)),
            other => Err(Check::failed(plugin.name(), &check, "failed", format!("{}: fix the inventory for it, then run `{line}`", other.message()))),
        }
    });
    let mut needs = Vec::new();
    let mut checks = Vec::new();
    for result in join_all(asked).await {
        match result {
            Ok(found) => needs.extend(found),
            Err(check) => checks.push(check),
        }
    }
    (needs, checks)
}

/// The needs sorted by where they are checked: tools per host, privileges per database, and
/// the failed checks of needs naming a target their plugin is not granted.
#[derive(Default)]
struct Sorted {
    stray: Vec<Check>,
    tools: BTreeMap<String, BTreeMap<String, Vec<Need>>>,
    privileges: BTreeMap<String, Vec<Need>>,
}

fn sort(caps: &Capabilities, scope: &Scope, needs: &[Need]) -> Sorted {
    let inventory = &caps.inventory;
    let mut sorted = Sorted::default();
    for need in needs {
        let is_host = matches!(need.what, What::Tool(_));
        let in_scope = if is_host { scope.hosts.contains(&need.target) } else { scope.databases.contains(&need.target) };
        let known = if is_host { inventory.hosts.contains_key(&need.target) } else { inventory.databases.contains_key(&need.target) };
        if !known || !caps.grants.may_see(&need.plugin, &need.target) {
            sorted.stray.push(Check::failed(
                &need.target,
                &need.what.label(),
                "not the plugin's",
                format!(
                    "plugin {} names {} as {}, which no topology or grant of it covers: not checked",
                    need.plugin,
                    need.target,
                    if is_host { "a host" } else { "a database" }
                ),
            ));
            continue;
        }
        if !in_scope {
            continue;
        }
        match &need.what {
            What::Tool(program) => sorted.tools.entry(need.target.clone()).or_default().entry(program.clone()).or_default().push(need.clone()),
            _ => sorted.privileges.entry(need.target.clone()).or_default().push(need.clone()),
        }
    }
    sorted
}

/// Check everything in `scope`, and each need whose target is in it. A need naming a target the
/// plugin is not granted is a failed check (and is not asked). `needs` may still be coming (the
/// plugins are asked while the hosts and databases are reached): only the tool and privilege
/// checks wait for it, so a host that does not answer costs the doctor one connect timeout.
pub async fn examine(caps: &Capabilities, scope: &Scope, needs: impl Future<Output = Vec<Need>>) -> Vec<Check> {
    let sorted = async { Arc::new(sort(caps, scope, &needs.await)) }.shared();
    let hosts = scope.hosts.iter().map(|host| examine_host(caps, host, sorted.clone()));
    let databases = scope.databases.iter().map(|db| examine_database(caps, db, sorted.clone()));
    let (hosts, databases) = tokio::join!(join_all(hosts), join_all(databases));
    let mut checks = sorted.await.stray.clone();
    checks.extend(hosts.into_iter().flatten());
    checks.extend(databases.into_iter().flatten());
    checks
}

/// Missing programs, one per line: a path must be an executable file, a bare name must be found
/// by the remote non-interactive shell's PATH (the one opsh's steps get).
const FIND_TOOLS: &str = r#"for t; do case $t in */*) [ -f "$t" ] && [ -x "$t" ] ;; *) command -v "$t" >/dev/null 2>&1 ;; esac || printf '%s\n' "$t"; done"#;

async fn examine_host(caps: &Capabilities, host: &str, sorted: impl Future<Output = Arc<Sorted>>) -> Vec<Check> {
    let mut checks = Vec::new();
    let Some(entry) = caps.inventory.host(host) else { return checks };
    let login = entry.ssh.clone().unwrap_or_else(|| entry.address.clone());
    let reached = caps.remote.reach(host).await;
    let sorted = sorted.await;
    let tools = sorted.tools.get(host);
    let tool_checks =
        |why: &str| tools.into_iter().flatten().map(|(program, _)| Check::skipped(host, &What::Tool(program.clone()).label(), why)).collect::<Vec<_>>();
    if let Err(e) = reached {
        let (detail, fix) = match &e {
            CapabilityError::Auth(m) => ("login refused", m.clone()),
            CapabilityError::Unreachable(m) => ("unreachable", m.clone()),
            other => ("failed", other.message().to_string()),
        };
        checks.push(Check::failed(host, "ssh", detail, fix));
        if entry.escalation == Become::Sudo {
            checks.push(Check::skipped(host, "sudo -n", "ssh failed"));
        }
        checks.extend(tool_checks("ssh failed"));
        return checks;
    }
    checks.push(Check::ok(host, "ssh", format!("login {login}")));
    if entry.escalation == Become::Sudo {
        let mut request = ExecRequest::new(vec!["true".into()]);
        request.privileged = true;
        request.timeout = Some(timeout(caps));
        match caps.remote.exec(host, request).await {
            Ok(out) if out.success() => checks.push(Check::ok(host, "sudo -n", "allowed")),
            Ok(out) => checks.push(Check::failed(
                host,
                "sudo -n",
                "refused",
                format!(
                    "host {host}: `sudo -n true` failed ({}); the inventory says become = \"sudo\": allow the ssh login to run commands with sudo without a password (a sudoers rule with NOPASSWD)",
                    first_line(&out.stderr_text())
                ),
            )),
            Err(e) => checks.push(Check::failed(host, "sudo -n", "failed", e.message().to_string())),
        }
    }
    let Some(tools) = tools else { return checks };
    let mut argv = vec!["sh".to_string(), "-c".into(), FIND_TOOLS.into(), "opsh-doctor".into()];
    argv.extend(tools.keys().map(|p| p.to_string()));
    let mut request = ExecRequest::new(argv);
    request.timeout = Some(timeout(caps));
    match caps.remote.exec(host, request).await {
        Ok(out) if out.success() => {
            let missing: BTreeSet<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
            for (program, needs) in tools {
                let label = What::Tool(program.to_string()).label();
                let users: Vec<String> = needs.iter().map(|n| format!("{} {}", n.plugin, n.used_for)).collect();
                if missing.contains(program) {
                    let fix = if program.contains('/') {
                        format!(
                            "host {host}: {program} is not an executable file; it is needed by {} — install it there, or set the bin-dir / installation attribute in the inventory to where it is",
                            users.join("; ")
                        )
                    } else {
                        format!(
                            "host {host}: {program} is not on the PATH of a non-interactive ssh login ({login}); it is needed by {} — add its directory to that PATH, or give its directory as the member's bin-dir attribute",
                            users.join("; ")
                        )
                    };
                    checks.push(Check::failed(host, &label, "missing", fix));
                } else {
                    checks.push(Check::ok(host, &label, "found"));
                }
            }
        }
        Ok(out) => {
            checks.push(Check::failed(host, "tools", "cannot tell", format!("host {host}: looking for the tools failed ({})", first_line(&out.stderr_text()))))
        }
        Err(e) => checks.push(Check::failed(host, "tools", "cannot tell", e.message().to_string())),
    }
    checks
}

/// What one query tells about a login.
const LOGIN_FACTS: &str = "SELECT current_setting('server_version') AS version, r.rolsuper, r.rolreplication, \
     COALESCE((SELECT s.ssl FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()), false) AS ssl \
     FROM pg_roles r WHERE r.rolname = current_user";

async fn examine_database(caps: &Capabilities, name: &str, sorted: impl Future<Output = Arc<Sorted>>) -> Vec<Check> {
    let inventory = &caps.inventory;
    let mut checks = Vec::new();
    let Some(db) = inventory.database(name) else { return checks };
    let login = format!("login {}", db.user);
    let plan_login = async {
        let user = db.plan_user.as_ref()?;
        let check = format!("plan login {user}");
        Some(match sql::open(inventory, name, true, "opsh doctor").await {
            Ok(_) => Check::ok(name, &check, "accepted"),
            Err(e) => login_failure(name, &check, &e),
        })
    };
    let change_login = async {
        let client = sql::open(inventory, name, false, "opsh doctor").await?;
        match tokio::time::timeout(timeout(caps), client.query_opt(LOGIN_FACTS, &[])).await {
            Ok(Ok(row)) => Ok((client, row)),
            Ok(Err(e)) => Err(CapabilityError::Failed(format!("database {name}: reading the login's attributes failed: {e}"))),
            Err(_) => Err(CapabilityError::Unreachable(format!("database {name}: no answer to a one-row query within {} s", timeout(caps).as_secs()))),
        }
    };
    let (plan, change) = tokio::join!(plan_login, change_login);
    let sorted = sorted.await;
    let needs = sorted.privileges.get(name).map(Vec::as_slice).unwrap_or_default();
    let privilege_checks = |why: &str| needs.iter().map(|n| Check::skipped(name, &n.what.label(), why)).collect::<Vec<_>>();
    let (client, row) = match change {
        Ok((client, Some(row))) => (client, row),
        Ok((_, None)) => {
            checks.push(Check::failed(name, &login, "no role row", format!("database {name}: the login {} has no row in pg_roles", db.user)));
            checks.extend(plan);
            return checks;
        }
        Err(e) => {
            checks.push(login_failure(name, &login, &e));
            checks.extend(plan);
            checks.push(Check::skipped(name, "server", "login failed"));
            checks.extend(privilege_checks("login failed"));
            return checks;
        }
    };
    checks.push(Check::ok(name, &login, "accepted"));
    checks.extend(plan);
    let version: String = row.try_get("version").unwrap_or_default();
    let superuser: bool = row.try_get("rolsuper").unwrap_or(false);
    let replication: bool = row.try_get("rolreplication").unwrap_or(false);
    let ssl: bool = row.try_get("ssl").unwrap_or(false);
    checks.push(Check::ok(name, "server", format!("PostgreSQL {version}")));
    checks.push(match (db.sslmode, ssl) {
        (SslMode::Disable, _) => Check::ok(name, "TLS", "off (sslmode disable)"),
        (SslMode::Prefer, true) => Check::ok(name, "TLS", "on (sslmode prefer)"),
        (SslMode::Prefer, false) => Check::ok(name, "TLS", "off: the server offers none (sslmode prefer)"),
        (mode, true) => Check::ok(name, "TLS", format!("on (sslmode {})", mode.name())),
        (mode, false) => Check::failed(name, "TLS", "off", format!("database {name}: sslmode {} but the session is not encrypted", mode.name())),
    });
    for need in needs {
        let label = need.what.label();
        let (held, fix) = match &need.what {
            What::Superuser => (superuser, format!("ALTER ROLE {} SUPERUSER", db.user)),
            What::Replication => (superuser || replication, format!("ALTER ROLE {} REPLICATION", db.user)),
            What::Role(role) => {
                match tokio::time::timeout(timeout(caps), client.query_one("SELECT pg_has_role(current_user, $1, 'member') AS member", &[role])).await {
                    Ok(Ok(row)) => (row.try_get::<_, bool>("member").unwrap_or(false), format!("GRANT {role} TO {}", db.user)),
                    Ok(Err(e)) => {
                        checks.push(Check::failed(name, &label, "cannot tell", format!("database {name}: asking for membership of {role} failed: {e}")));
                        continue;
                    }
                    Err(_) => {
                        checks.push(Check::failed(name, &label, "cannot tell", format!("database {name}: no answer within {} s", timeout(caps).as_secs())));
                        continue;
                    }
                }
            }
            What::Tool(_) => continue,
        };
        if held {
            checks.push(Check::ok(name, &label, "held"));
        } else {
            checks.push(Check::failed(
                name,
                &label,
                "missing",
                format!("database {name}: the login {} lacks it; {} needs it for {} — as a superuser: {fix}", db.user, need.plugin, need.used_for),
            ));
        }
    }
    checks
}

fn login_failure(name: &str, check: &str, e: &CapabilityError) -> Check {
    let detail = match e {
        CapabilityError::Auth(_) => "auth failed",
        CapabilityError::Unreachable(_) => "unreachable",
        CapabilityError::Invalid(_) => "TLS set-up failed",
        _ => "failed",
    };
    Check::failed(name, check, detail, e.message().to_string())
}

/// Each question's bound: the connect timeout, plus a little for the answer to travel.
fn timeout(caps: &Capabilities) -> Duration {
    Duration::from_millis(caps.inventory.defaults.connect_timeout_ms) + Duration::from_secs(2)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("no message").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(columns: &[&str], rows: &[&[&str]]) -> Table {
        Table {
            title: crate::sandbox::bindings::types::Text { en: "Requirements".into(), ja: String::new() },
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: rows.iter().map(|r| r.iter().map(|c| Cell::Plain(c.to_string())).collect()).collect(),
        }
    }

    const COLUMNS: &[&str] = &["target", "kind", "need", "for"];

    #[test]
    fn needs_parse_tools_and_every_privilege_kind() {
        let needs = needs_of(
            "otb",
            &[table(
                COLUMNS,
                &[
                    &["otb1", "tool", "/opt/otb/bin/pg_ctl", "promote"],
                    &["dn01", "privilege", "superuser", "ALTER NODE"],
                    &["dn01", "privilege", "replication", "rebuild"],
                    &["dn01", "privilege", "role:pg_monitor", "status"],
                ],
            )],
        )
        .expect("needs");
        let what: Vec<&What> = needs.iter().map(|n| &n.what).collect();
        assert_eq!(what, [&What::Tool("/opt/otb/bin/pg_ctl".into()), &What::Superuser, &What::Replication, &What::Role("pg_monitor".into())]);
        assert!(needs.iter().all(|n| n.plugin == "otb"));
    }

    #[test]
    fn a_malformed_requirement_is_an_error_naming_the_row_never_a_pass() {
        let unknown = needs_of("x", &[table(COLUMNS, &[&["db", "privilege", "create-anything", "?"]])]).expect_err("unknown privilege");
        assert!(unknown.contains("requirement 1 (db | privilege | create-anything | ?)"), "{unknown}");
        assert!(needs_of("x", &[table(COLUMNS, &[&["h", "tool", "pg_ctl\n rm -rf /", "?"]])]).is_err(), "control characters");
        assert!(needs_of("x", &[table(COLUMNS, &[&["h", "tool"]])]).is_err(), "short row");
        assert!(needs_of("x", &[table(&["host", "tool"], &[])]).is_err(), "other columns");
        assert!(needs_of("x", &[table(COLUMNS, &[&["db", "privilege", "role:", "?"]])]).is_err(), "a role without a name");
    }
}
