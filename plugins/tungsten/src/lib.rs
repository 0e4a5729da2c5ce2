//! `tungsten`: re-provision a failed dataservice of a multi-site active/active Tungsten Cluster
//! from the definitive one, as seed 004 orders it — and so that it cannot leave a dataservice
//! half-reset: MAINTENANCE first, AUTOMATIC last, and AUTOMATIC only once every replicator of the
//! dataservice is back online.
//!
//! - `tungsten status` — dataservices (policy, coordinator, connectors) and every replicator of
//!   every host (both installations), parsed from cctrl's and trepctl's own output.
//! - `tungsten reprovision FAILED --from SOURCE_HOST`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod cluster;

use cluster::{Deployment, Install, field, overview, replicator_state, trepctl_status, tungsten_name};
use opsh_plugin_sdk::ahead;
use opsh_plugin_sdk::invariants::{Invariants, Seen};
use opsh_plugin_sdk::requirements::{self, Requirements};
use opsh_plugin_sdk::{
    Args, ChangePlan, CheckResult, CheckState, CommandError, CommandKind, CommandResult, Completion, Guest, Invocation, PluginInfo, Step, Table, Text, bad,
    command, good, plain, refused, step, table, text, titled, warn,
};

/// Written for opsh:plugin 0.2 (see `opsh_plugin_sdk::WIT_MINOR`): the host performs every
/// step as declared; the plugin applies none.
const _: () = assert!(opsh_plugin_sdk::WIT_MINOR == 2, "this plugin is written for opsh:plugin 0.2");

struct Tungsten;

impl Guest for Tungsten {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "tungsten".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: text(
                "Tungsten Cluster multi-site active/active: status and re-provisioning of a failed dataservice",
                "Tungsten Cluster マルチサイト アクティブ/アクティブ: 状態表示と障害データサービスの再プロビジョニング",
            ),
            capabilities: opsh_plugin_sdk::capabilities(&["ssh"], cluster::PROBES),
            commands: vec![
                command(
                    "status",
                    CommandKind::Read,
                    text(
                        "Dataservices (policy, connectors) and every replicator on every host",
                        "データサービス (ポリシー・コネクタ) と全ホストの全レプリケータ",
                    ),
                )
                .example("tungsten status", text("Show both dataservices", "両方のデータサービスを表示"))
                .build(),
                command(
                    "reprovision",
                    CommandKind::Change,
                    text(
                        "Re-provision every host of a failed dataservice from a host of the definitive one",
                        "障害データサービスの全ホストを正とするデータサービスのホストから再プロビジョニング",
                    ),
                )
                .positional(
                    "failed",
                    text("the dataservice whose data is replaced", "データを置き換えるデータサービス"),
                    // Its dataservices are the member roles of the inventory's topology.
                    Completion::Choices(vec!["@members".into()]),
                )
                .option(
                    "from",
                    true,
                    text("the host of the definitive dataservice to copy from", "コピー元 (正とするデータサービスのホスト)"),
                    Completion::Host,
                )
                .example(
                    "tungsten reprovision east --from west1 --dry-run",
                    text("Preview re-provisioning east from west1", "west1 から east を再プロビジョニングする手順を確認"),
                )
                .build(),
                requirements::declaration("tungsten"),
            ],
        }
    }

    fn read(call: Invocation) -> CommandResult<Vec<Table>> {
        match call.command.as_str() {
            "status" => ahead::settled(|| status(&Deployment::load()?)),
            requirements::COMMAND => needs(&Deployment::load()?).map(|t| vec![t]),
            other => Err(CommandError::Usage(format!("tungsten has no read command {other}"))),
        }
    }

    fn plan(call: Invocation) -> CommandResult<ChangePlan> {
        let args = Args(&call);
        match call.command.as_str() {
            "reprovision" => plan_reprovision(&Deployment::load()?, args.required("failed")?, args.required("from")?),
            other => Err(CommandError::Usage(format!("tungsten has no command {other}"))),
        }
    }

    /// Every step is declared: the host performs it.
    fn apply(_call: Invocation, step: Step) -> CommandResult<Text> {
        Err(CommandError::Failed(format!("tungsten applies no step itself; step {} is the host's", step.id)))
    }

    fn check(_call: Invocation, step: Step) -> CommandResult<CheckResult> {
        check_step(&opsh_plugin_sdk::data::kind_of(&step)?)
    }

    fn verify(call: Invocation) -> CommandResult<Vec<Table>> {
        let deployment = Deployment::load()?;
        let failed = Args(&call).required("failed")?;
        let problems = not_back(&deployment, failed)?;
        if !problems.is_empty() {
            return Err(CommandError::Failed(format!("{failed} is not fully back: {}", problems.join("; "))));
        }
        let cctrl_path = deployment.tool(failed, Install::Cluster, "cctrl")?;
        let view = deployment
            .hosts(failed)?
            .iter()
            .find_map(|h| overview(h, &cctrl_path).ok())
            .ok_or_else(|| CommandError::Failed(format!("no cctrl of {failed} answers after the run")))?;
        if view.policy != "AUTOMATIC" || view.routers.iter().any(|(_, s)| s != "ONLINE") {
            return Err(CommandError::Failed(format!("{failed}: policy {} and connectors {:?} after the run", view.policy, view.routers)));
        }
        let (report, tables) = survey(&deployment)?;
        let mut out = vec![report.verified()?];
        out.extend(tables);
        Ok(out)
    }
}

fn status(deployment: &Deployment) -> CommandResult<Vec<Table>> {
    let (report, tables) = survey(deployment)?;
    let mut out = vec![report.table()];
    out.extend(tables);
    Ok(out)
}

/// Every dataservice from its cctrl and every replicator of every installation from trepctl,
/// with the invariants: at most one master per dataservice, every replicator ONLINE.
fn survey(deployment: &Deployment) -> CommandResult<(Invariants, Vec<Table>)> {
    let mut report = Invariants::new();
    let mut services = table(text("Dataservices", "データサービス"), &["dataservice", "coordinator", "policy", "connectors", "datasources"]);
    let mut replicators = table(text("Replicators", "レプリケータ"), &["host", "site", "installation", "service", "state", "role", "applied seqno", "latency"]);
    let mut online: Vec<(String, Vec<(String, Seen)>)> = deployment.names().into_iter().map(|s| (s, Vec::new())).collect();
    let mut note = |service: &str, who: String, seen: Seen| {
        if let Some((_, items)) = online.iter_mut().find(|(s, _)| s == service) {
            items.push((who, seen));
        }
    };
    for (service, hosts) in &deployment.services {
        let cctrl_path = deployment.tool(service, Install::Cluster, "cctrl")?;
        let mut errors = Vec::new();
        let view = hosts.iter().find_map(|h| overview(h, &cctrl_path).map_err(|e| errors.push(e)).ok());
        match view {
            Some(view) => {
                let show = |name: &str| cluster::inventory_host(name, hosts).unwrap_or_else(|| name.to_string());
                let routers = view.routers.iter().map(|(h, s)| format!("{} {s}", show(h))).collect::<Vec<_>>().join(", ");
                let sources = view.datasources.iter().map(|d| format!("{} {} {}", show(&d.name), d.role, d.state)).collect::<Vec<_>>().join(", ");
                let all_online = view.routers.iter().all(|(_, s)| s == "ONLINE");
                services.push(vec![
                    plain(service.as_str()),
                    plain(show(&view.coordinator)),
                    if view.policy == "AUTOMATIC" { good(view.policy.clone()) } else { warn(view.policy.clone()) },
                    if all_online { good(routers) } else { warn(routers) },
                    plain(sources),
                ]);
                let masters: Vec<(String, Seen)> =
                    view.datasources.iter().map(|d| (show(&d.name), if d.role == "master" { Seen::Yes } else { Seen::No })).collect();
                report.at_most_one(text("at most one master", "マスターは最大 1 つ"), service, &masters);
            }
            None => {
                services.push(vec![plain(service.as_str()), bad(format!("no cctrl answered: {}", errors.join("; "))), plain("?"), plain("?"), plain("?")]);
                report.at_most_one(text("at most one master", "マスターは最大 1 つ"), service, &[(service.clone(), Seen::Unknown("no cctrl answered".into()))]);
            }
        }
        for host in hosts {
            let mut installs = vec![(Install::Cluster, "cluster", service.clone())];
            installs.extend(deployment.others(service).into_iter().map(|other| (Install::CrossSite, "cross-site", other)));
            for (install, label, replicated) in installs {
                let trepctl = deployment.tool(service, install, "trepctl")?;
                match trepctl_status(host, &trepctl, &replicated) {
                    Ok(fields) => {
                        let state = field(&fields, "state").to_string();
                        note(&replicated, format!("{host} ({label})"), if state == "ONLINE" { Seen::Yes } else { Seen::No });
                        replicators.push(vec![
                            plain(host.as_str()),
                            plain(service.as_str()),
                            plain(label),
                            plain(replicated.as_str()),
                            if state == "ONLINE" { good(state) } else { bad(state) },
                            plain(field(&fields, "role")),
                            plain(field(&fields, "appliedLastSeqno")),
                            plain(field(&fields, "appliedLatency")),
                        ]);
                    }
                    Err(e) => {
                        let seen = if e.starts_with("Connection failed") { Seen::No } else { Seen::Unknown(e.clone()) };
                        note(&replicated, format!("{host} ({label})"), seen);
                        replicators.push(vec![
                            plain(host.as_str()),
                            plain(service.as_str()),
                            plain(label),
                            plain(replicated.as_str()),
                            bad(e),
                            plain(""),
                            plain(""),
                            plain(""),
                        ]);
                    }
                }
            }
        }
    }
    for (service, items) in &online {
        report.all(text("every replicator is ONLINE", "全レプリケータが ONLINE"), service, items);
    }
    Ok((report, vec![services.build(), replicators.build()]))
}

fn plan_reprovision(deployment: &Deployment, failed: &str, source: &str) -> CommandResult<ChangePlan> {
    let failed_hosts = deployment.hosts(failed)?.to_vec();
    let others = deployment.others(failed);
    let other_hosts = || -> CommandResult<Vec<String>> { others.iter().map(|s| deployment.hosts(s).map(|h| h.join(", "))).collect() };
    let definitive = match deployment.service_of(source) {
        Some(s) if s != failed => s.to_string(),
        Some(_) => {
            return Err(CommandError::Usage(format!(
                "--from {source} is a host of {failed} itself: copy from a host of a definitive dataservice ({}: {})",
                others.join(", "),
                other_hosts()?.join("; ")
            )));
        }
        None => {
            return Err(CommandError::Usage(format!(
                "--from {source} is not a host of topology {}: the hosts of the other dataservices are {}",
                deployment.topology,
                other_hosts()?.join("; ")
            )));
        }
    };
    let definitive_hosts = deployment.hosts(&definitive)?.to_vec();
    // Every host of every dataservice must answer: a reprovisioning that cannot reach one of
    // them would leave the dataservice half-reset.
    let all_hosts: Vec<String> = deployment.services.iter().flat_map(|(_, h)| h.clone()).collect();
    for host in &all_hosts {
        opsh_plugin_sdk::reachable(host).map_err(|e| {
            refused(
                format!(
                    "{host} does not answer ({}): re-provisioning must reach every host of every dataservice, or it would leave {failed} half-reset",
                    e.brief()
                ),
                format!("{host} が応答しません。全ホストに到達できないと {failed} が中途半端にリセットされます"),
            )
        })?;
    }
    let source_trepctl = deployment.tool(&definitive, Install::Cluster, "trepctl")?;
    let (source_state, _) = replicator_state(source, &source_trepctl, &definitive).map_err(CommandError::Failed)?;
    if source_state != "ONLINE" {
        return Err(refused(
            format!(
                "{source}'s {definitive} replicator is {source_state}: a source must be healthy and online; bring it online or pick another host of {definitive}"
            ),
            format!("{source} の {definitive} レプリケータは {source_state} です。正常でオンラインのホストを指定してください"),
        ));
    }
    // tungsten_provision_slave reaches the source by its Tungsten name.
    let source_name = tungsten_name(source, &source_trepctl, &definitive, &all_hosts).map_err(|e| refused(e.clone(), e))?;
    let mut warnings = vec![text(
        &format!("{definitive} is taken as the definitive copy: the data of every {failed} host ({}) is REPLACED by {source}'s", failed_hosts.join(", ")),
        &format!("{definitive} を正とします: {failed} の全ホスト ({}) のデータは {source} のデータで置き換えられます", failed_hosts.join(", ")),
    )];
    let definitive_view = definitive_hosts.iter().find_map(|h| overview(h, &deployment.tool(&definitive, Install::Cluster, "cctrl").ok()?).ok());
    match definitive_view {
        Some(view) => {
            let down: Vec<String> = view
                .datasources
                .iter()
                .filter(|d| d.state != "ONLINE" || d.replicator != "ONLINE")
                .map(|d| format!("{} {} (replicator {})", d.name, d.state, d.replicator))
                .collect();
            if !down.is_empty() {
                warnings.push(text(
                    &format!("{definitive} is not fully healthy: {}", down.join(", ")),
                    &format!("{definitive} は完全には正常ではありません: {}", down.join(", ")),
                ));
            }
        }
        None => {
            return Err(refused(format!("no cctrl of {definitive} answers: its health cannot be confirmed"), format!("{definitive} の cctrl が応答しません")));
        }
    }
    let cctrl_path = deployment.tool(failed, Install::Cluster, "cctrl")?;
    let (cctrl_host, failed_view) = failed_hosts.iter().find_map(|h| overview(h, &cctrl_path).ok().map(|v| (h.clone(), v))).ok_or_else(|| {
        refused(
            format!("no cctrl of {failed} answers: its policy cannot be set to MAINTENANCE, so nothing is started"),
            format!("{failed} の cctrl が応答しません"),
        )
    })?;
    if failed_view.policy == "MAINTENANCE" {
        warnings.push(text(&format!("{failed} is already in MAINTENANCE (an earlier attempt?)"), &format!("{failed} は既に MAINTENANCE です")));
    }

    let on = |host: &str, kind: Kind| On { host: host.to_string(), service: failed.to_string(), kind };
    let mut steps = Vec::new();
    // cctrl answers a command it refuses with an ERROR line: the step fails on it.
    let cctrl_step = |id: String, seed: &str, command: String, kind: Kind| {
        step(&id, titled(seed, &format!("cctrl [{failed}]> {command}"), &format!("cctrl [{failed}]> {command}")), &cctrl_host)
            .exec(&cctrl_host, &["sh", "-c", CCTRL, "cctrl", &cctrl_path, &command])
            .timeout_ms(120_000)
            .idempotent()
            .kind(&on(&cctrl_host, kind))
            .build()
    };
    let policy = |mode: &str, seed: &str| {
        let kind = Kind::Policy { cctrl: cctrl_path.clone(), automatic: mode == "automatic" };
        cctrl_step(format!("set-policy-{mode}"), seed, format!("set policy {mode}"), kind)
    };
    let routers = |state: &str, seed: &str| {
        let kind = Kind::Routers { cctrl: cctrl_path.clone(), online: state == "online" };
        cctrl_step(format!("routers-{state}"), seed, format!("router * {state}"), kind)
    };
    steps.push(policy("maintenance", "1"));
    steps.push(routers("offline", "2"));
    // Every other site replicates FAILED into itself: its cross-site service FAILED, on every
    // one of its hosts, is taken offline and reset (and back online at the end).
    let mut cross_hosts: Vec<(String, String)> = Vec::new();
    for site in &others {
        let trepctl = deployment.tool(site, Install::CrossSite, "trepctl")?;
        for host in deployment.hosts(site)? {
            cross_hosts.push((host.clone(), trepctl.clone()));
        }
    }
    // Each of them must answer now: one that is stopped cannot be reset, and the run would stop
    // half-way with FAILED in MAINTENANCE.
    let mut silent = Vec::new();
    for (host, cross_trepctl) in &cross_hosts {
        match replicator_state(host, cross_trepctl, failed) {
            Ok((state, _)) if state != "STOPPED" => {}
            Ok((state, _)) => silent.push(format!("{host}'s cross-site {failed} replicator is {state}")),
            Err(e) => silent.push(format!("{host}'s cross-site {failed} replicator cannot be asked ({e})")),
        }
    }
    if !silent.is_empty() {
        return Err(refused(
            format!(
                "{}: re-provisioning resets every cross-site {failed} replicator; start them first (`replicator start` in their installation)",
                silent.join("; ")
            ),
            format!("{}: 先にクロスサイト レプリケータを起動してください", silent.join("; ")),
        ));
    }
    for (verb, group) in [("offline", "cross-site-offline"), ("reset", "cross-site-reset")] {
        for (host, cross_trepctl) in &cross_hosts {
            let argv: Vec<&str> = if verb == "reset" {
                vec![cross_trepctl, "-service", failed, "reset", "-all", "-y"]
            } else {
                vec![cross_trepctl, "-service", failed, "offline"]
            };
            let kind = Kind::Trepctl { trepctl: cross_trepctl.clone(), verb: if verb == "reset" { Verb::Reset } else { Verb::Offline } };
            let builder = step(
                &format!("{verb}-{failed}-on-{host}"),
                titled(
                    "3",
                    &format!("{host}: trepctl -service {failed} {}", if verb == "reset" { "reset -all -y" } else { "offline" }),
                    &format!("{host}: trepctl -service {failed} {verb}"),
                ),
                host,
            )
            .exec(host, &argv)
            .timeout_ms(120_000);
            // Offline it must stay: a manager in AUTOMATIC policy would put it back.
            let builder = if verb == "offline" {
                builder.wait_until(text(&format!("{host}'s cross-site {failed} replicator is OFFLINE"), ""), 500, 30_000)
            } else {
                builder
            };
            steps.push(builder.group(group).idempotent().kind(&on(host, kind)).build());
        }
    }
    let replicator = deployment.tool(failed, Install::Cluster, "replicator")?;
    let tpm = deployment.tool(failed, Install::Cluster, "tpm")?;
    let trepctl = deployment.tool(failed, Install::Cluster, "trepctl")?;
    for (kind, group) in [("stop", "replicator-stop"), ("tpm-reset", "tpm-reset"), ("start", "replicator-start")] {
        for host in &failed_hosts {
            let (argv, title): (Vec<&str>, String) = match kind {
                "tpm-reset" => (vec![&tpm, "reset", failed], format!("{host}: tpm reset {failed}")),
                verb => (vec![&replicator, verb], format!("{host}: replicator {verb}")),
            };
            let checked = if kind == "tpm-reset" { Kind::TpmReset } else { Kind::Replicator { replicator: replicator.clone(), start: kind == "start" } };
            let builder = step(&format!("{kind}-{host}"), titled("4", &title, &title), host).exec(host, &argv).timeout_ms(300_000);
            // tungsten_provision_slave needs the replicator running (the seed starts it right before).
            let builder = if kind == "start" {
                builder.wait_until(text(&format!("{host}'s replicator runs"), &format!("{host} のレプリケータが稼働")), 500, 60_000)
            } else {
                builder
            };
            steps.push(builder.group(group).idempotent().kind(&on(host, checked)).build());
        }
    }
    let provision = deployment.tool(failed, Install::Cluster, "tungsten_provision_slave")?;
    let source_arg = format!("--source={source_name}");
    for host in &failed_hosts {
        steps.push(
            step(
                &format!("provision-{host}"),
                titled("5", &format!("{host}: tungsten_provision_slave --direct --source={source}"), &format!("{host}: {source} からプロビジョニング")),
                host,
            )
            .exec(host, &[&provision, "--direct", &source_arg])
            .timeout_ms(3_600_000)
            .group("provision")
            .kind(&on(host, Kind::Provision { trepctl: trepctl.clone() }))
            .build(),
        );
    }
    for (host, cross_trepctl) in &cross_hosts {
        steps.push(
            step(
                &format!("online-{failed}-on-{host}"),
                titled("6", &format!("{host}: trepctl -service {failed} online"), &format!("{host}: trepctl -service {failed} online")),
                host,
            )
            .exec(host, &[cross_trepctl, "-service", failed, "online"])
            .timeout_ms(120_000)
            .group("cross-site-online")
            .idempotent()
            .kind(&on(host, Kind::Trepctl { trepctl: cross_trepctl.clone(), verb: Verb::Online }))
            .build(),
        );
    }
    // Connectors online and AUTOMATIC only once every replicator of FAILED is back (checked
    // before each: one may go in between): a stopped one is found here, before cctrl would
    // refuse (or, worse, accept) it.
    let gate = |id: String, title: Text, then: String| {
        step(&id, title, &cctrl_host)
            .wait_until(text(&format!("every {failed} replicator is ONLINE"), &format!("{failed} の全レプリケータが ONLINE")), 1_000, 120_000)
            .idempotent()
            .kind(&on(&cctrl_host, Kind::Back { then }))
            .build()
    };
    steps.push(gate(
        format!("{failed}-back-online"),
        titled("7", &format!("Every {failed} replicator is ONLINE (its hosts and the cross-site ones)"), &format!("{failed} の全レプリケータが ONLINE")),
        format!("put {failed}'s connectors online"),
    ));
    steps.push(routers("online", "7"));
    steps.push(gate(
        format!("{failed}-still-online"),
        titled("8", &format!("Every {failed} replicator is still ONLINE"), &format!("{failed} の全レプリケータが引き続き ONLINE")),
        format!("set {failed} back to AUTOMATIC"),
    ));
    steps.push(policy("automatic", "8"));
    Ok(ChangePlan {
        summary: text(
            &format!("Re-provision {failed} ({}) from {source}: {failed} in MAINTENANCE first, AUTOMATIC last", failed_hosts.join(", ")),
            &format!("{source} から {failed} ({}) を再プロビジョニング: 最初に MAINTENANCE、最後に AUTOMATIC", failed_hosts.join(", ")),
        ),
        steps,
        warnings,
        if_stopped: vec![text(
            &format!("{failed} stays in MAINTENANCE policy (no automatic recovery), its connectors offline"),
            &format!("{failed} は MAINTENANCE ポリシー (自動復旧なし) のまま、コネクタはオフラインのままです"),
        )],
    })
}

/// `sh -c CCTRL cctrl PATH COMMAND`: COMMAND to cctrl; it prints its refusals as ERROR lines
/// (the documented output, whatever its exit status), which fail the step.
const CCTRL: &str = r#"out=$(printf "%s\n" "$2" | "$1") || { printf "%s\n" "$out" >&2; exit 1; }
printf "%s\n" "$out"
if printf "%s\n" "$out" | grep "^ERROR" >&2; then exit 1; fi
"#;

/// Everything that must be ONLINE before the connectors, and then AUTOMATIC, may return: the
/// failed dataservice's replicators on its hosts, and its cross-site replicators on the hosts
/// of every other dataservice.
fn not_back(deployment: &Deployment, failed: &str) -> Result<Vec<String>, CommandError> {
    let mut problems = Vec::new();
    let mut checks = vec![(failed.to_string(), Install::Cluster)];
    checks.extend(deployment.others(failed).into_iter().map(|s| (s, Install::CrossSite)));
    for (site, install) in checks {
        let site = site.as_str();
        let trepctl = deployment.tool(site, install, "trepctl")?;
        for host in deployment.hosts(site)? {
            match replicator_state(host, &trepctl, failed) {
                Ok((state, _)) if state == "ONLINE" => {}
                Ok((state, _)) => problems.push(format!("{host}'s {failed} replicator is {state}")),
                Err(e) => problems.push(format!("{host}: {e}")),
            }
        }
    }
    Ok(problems)
}

/// A step of the plan: where `check` asks, for which dataservice, and what.
#[derive(serde::Serialize, serde::Deserialize)]
struct On {
    host: String,
    /// The failed dataservice.
    service: String,
    kind: Kind,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
enum Kind {
    Policy {
        cctrl: String,
        automatic: bool,
    },
    Routers {
        cctrl: String,
        online: bool,
    },
    /// Every replicator of the dataservice is back, before the step that would `then`.
    Back {
        then: String,
    },
    Trepctl {
        trepctl: String,
        verb: Verb,
    },
    Replicator {
        replicator: String,
        start: bool,
    },
    TpmReset,
    Provision {
        trepctl: String,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Verb {
    Offline,
    Reset,
    Online,
}

fn check_step(step: &On) -> CommandResult<CheckResult> {
    let (host, service) = (step.host.as_str(), step.service.as_str());
    let done = |yes: bool, detail: String| CheckResult { state: if yes { CheckState::Done } else { CheckState::NotDone }, detail: text(&detail, "") };
    let unknown = |detail: String| CheckResult { state: CheckState::Unknown, detail: text(&detail, "") };
    Ok(match &step.kind {
        Kind::Policy { cctrl, automatic } => match overview(host, cctrl) {
            Ok(view) => {
                // Never AUTOMATIC with a replicator not back (also when retried or resumed).
                match if *automatic { back_before(service, &format!("set {service} back to AUTOMATIC"), true)? } else { None } {
                    Some(refusal) => refusal,
                    None => done(view.policy.eq_ignore_ascii_case(if *automatic { "automatic" } else { "maintenance" }), format!("policy {}", view.policy)),
                }
            }
            Err(e) => unknown(e),
        },
        Kind::Routers { cctrl, online } => match overview(host, cctrl) {
            Ok(view) => {
                let want = if *online { "ONLINE" } else { "OFFLINE" };
                let detail = format!("connectors {:?}", view.routers);
                // Never connectors online with a replicator not back (also on retry or resume).
                match if *online { back_before(service, &format!("put {service}'s connectors online"), true)? } else { None } {
                    Some(refusal) => refusal,
                    None => done(!view.routers.is_empty() && view.routers.iter().all(|(_, s)| s == want), detail),
                }
            }
            Err(e) => unknown(e),
        },
        Kind::Back { then } => back_before(service, then, false)?.unwrap_or_else(|| done(true, format!("every {service} replicator is ONLINE"))),
        Kind::Trepctl { trepctl, verb } => match replicator_state(host, trepctl, service) {
            Ok((state, seqno)) => match verb {
                Verb::Offline if state.starts_with("OFFLINE") => done(true, state),
                Verb::Offline => done(false, format!("{state} (taken offline, it came back: a manager in AUTOMATIC policy?)")),
                Verb::Reset => done(state.starts_with("OFFLINE") && seqno == -1, format!("{state}, applied seqno {seqno}")),
                Verb::Online => done(state == "ONLINE", state),
            },
            Err(e) => unknown(e),
        },
        Kind::Replicator { replicator, start } => match opsh_plugin_sdk::probe(host, &[replicator, "status"], Some(30_000)) {
            Ok(out) => {
                let running = out.status == Some(0);
                done(running == *start, String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
            Err(e) => unknown(e.brief()),
        },
        Kind::TpmReset => unknown("tpm reset leaves nothing to read while the replicator is stopped; running it again is harmless".into()),
        Kind::Provision { trepctl } => match replicator_state(host, trepctl, service) {
            Ok((state, seqno)) => done(state == "ONLINE" && seqno >= 0, format!("{state}, applied seqno {seqno}")),
            Err(e) => unknown(e),
        },
    })
}

/// Unless every replicator of `service` is back, what a step that would `what` must say: stale
/// when one is stopped or cannot be asked (it will not come back by itself, so opsh does not go
/// on) or when the step is `strict` (it must not run at all then), not yet otherwise. `None`:
/// they are all back.
fn back_before(service: &str, what: &str, strict: bool) -> CommandResult<Option<CheckResult>> {
    let problems = not_back(&Deployment::load()?, service)?;
    if problems.is_empty() {
        return Ok(None);
    }
    let blocked = strict || problems.iter().any(|p| p.ends_with("is STOPPED") || !p.contains(" replicator is "));
    let en = format!("opsh does not {what} while its replicators are not ({})", problems.join("; "));
    let ja = format!("レプリケータがオンラインでないため続行しません ({})", problems.join("; "));
    Ok(Some(CheckResult { state: if blocked { CheckState::Stale } else { CheckState::NotDone }, detail: text(&en, &ja) }))
}

#[cfg(target_arch = "wasm32")]
opsh_plugin_sdk::export!(Tungsten);

/// The tools the runbooks run on each host, from both of its installations.
fn needs(deployment: &Deployment) -> CommandResult<Table> {
    let mut needs = Requirements::default();
    for (service, hosts) in &deployment.services {
        for host in hosts {
            for tool in ["cctrl", "trepctl", "replicator", "tpm", "tungsten_provision_slave"] {
                needs.tool(host, &deployment.tool(service, Install::Cluster, tool)?, "status, reprovision");
            }
            needs.tool(host, &deployment.tool(service, Install::CrossSite, "trepctl")?, "status, reprovision (the cross-site replicator)");
        }
    }
    Ok(needs.table())
}

#[cfg(test)]
mod tests {
    use opsh_plugin_sdk::fake::{World, ids, invocation};
    use opsh_plugin_sdk::{CommandError, Effect, Guest, Invocation};

    const HOME: &str = "/opt/continuent/tungsten";
    const CROSS: &str = "/opt/replicator/tungsten";

    fn ls(service: &str, hosts: &[&str], policy: &str) -> String {
        let sources: String = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let role = if i == 0 { "master" } else { "slave" };
                format!("|{h}({role}:ONLINE)   |\n+---+\n|  MANAGER(state=ONLINE)   |\n|  REPLICATOR(role={role}, state=ONLINE)   |\n+---+\n")
            })
            .collect();
        format!(
            "COORDINATOR[{}:{policy}:ONLINE]\n\nROUTERS:\n+---+\n|connector@{}[8805](ONLINE, created=0, active=0)   |\n+---+\n\nDATASOURCES:\n+---+\n{sources}",
            hosts[0], hosts[0]
        )
        .replace("{service}", service)
    }

    fn status(state: &str, host: &str) -> String {
        format!("NAME              VALUE\n----              -----\nappliedLastSeqno  : 1042\nhost              : {host}\nstate             : {state}\n")
    }

    /// Two dataservices of two hosts each, every replicator ONLINE but west1's (`source_state`).
    fn world(source_state: &str) -> World {
        world_where(source_state, "ONLINE")
    }

    /// … and west2's cross-site replicator of east in `cross_west2`.
    fn world_where(source_state: &str, cross_west2: &str) -> World {
        let mut world = World::new().target(
            "topology",
            "sites",
            &[("plugin", "tungsten"), ("member.east", "east1,east2"), ("member.west", "west1,west2"), ("cluster-home", HOME), ("cross-site-home", CROSS)],
        );
        for host in ["east1", "east2", "west1", "west2"] {
            let site = &host[..4];
            let (service, hosts) = if site == "east" { ("east", ["east1", "east2"]) } else { ("west", ["west1", "west2"]) };
            let own = if host == "west1" { source_state } else { "ONLINE" };
            world = world
                .exec(host, &format!("{HOME}/tungsten-manager/bin/cctrl"), 0, &ls(service, &hosts, "AUTOMATIC"))
                .exec(host, &format!("{HOME}/tungsten-replicator/bin/trepctl -service {service} status"), 0, &status(own, host))
                .exec(
                    host,
                    &format!("{CROSS}/tungsten-replicator/bin/trepctl -service east status"),
                    0,
                    &status(if host == "west2" { cross_west2 } else { "ONLINE" }, host),
                )
                .exec(host, "true", 0, "");
        }
        world
    }

    fn reprovision(failed: &str, from: &str) -> Invocation {
        invocation("reprovision", &[("failed", failed), ("from", from)])
    }

    #[test]
    fn reprovision_follows_the_seed_maintenance_first_and_automatic_only_once_every_replicator_is_back() {
        let (plan, _) = world("ONLINE").run(|| super::Tungsten::plan(reprovision("east", "west1")));
        let plan = plan.expect("a plan");
        assert_eq!(
            ids(&plan),
            [
                "set-policy-maintenance",
                "routers-offline",
                "offline-east-on-west1",
                "offline-east-on-west2",
                "reset-east-on-west1",
                "reset-east-on-west2",
                "stop-east1",
                "stop-east2",
                "tpm-reset-east1",
                "tpm-reset-east2",
                "start-east1",
                "start-east2",
                "provision-east1",
                "provision-east2",
                "online-east-on-west1",
                "online-east-on-west2",
                "east-back-online",
                "routers-online",
                "east-still-online",
                "set-policy-automatic",
            ]
        );
        let Effect::Exec(provision) = &plan.steps[12].effects[0] else { panic!("{:?}", plan.steps[12]) };
        assert_eq!(provision.argv, [format!("{HOME}/tungsten-replicator/scripts/tungsten_provision_slave"), "--direct".into(), "--source=west1".into()]);
        let Effect::Exec(policy) = &plan.steps[0].effects[0] else { panic!() };
        assert_eq!(policy.argv[4..], [format!("{HOME}/tungsten-manager/bin/cctrl"), "set policy maintenance".into()]);
        assert!(matches!(&plan.steps[16].effects[..], [Effect::Wait(_)]), "a gate that only waits");
        assert!(plan.steps.iter().all(|s| s.custom.is_none()), "the host performs every step");
        assert_eq!(plan.if_stopped[0].en, "east stays in MAINTENANCE policy (no automatic recovery), its connectors offline");
        assert!(plan.warnings[0].en.contains("REPLACED by west1's"), "{:?}", plan.warnings);
    }

    /// A retry or resume asks the step's check first: connectors online and AUTOMATIC are refused
    /// (stale) while a replicator is not back, even one that is merely OFFLINE.
    #[test]
    fn connectors_and_automatic_are_refused_on_a_retry_while_a_replicator_is_not_back() {
        let (plan, _) = world("ONLINE").run(|| super::Tungsten::plan(reprovision("east", "west1")));
        let plan = plan.expect("a plan");
        for id in ["routers-online", "set-policy-automatic"] {
            let step = plan.steps.iter().find(|s| s.id == id).expect("step").clone();
            let (check, _) = world_where("ONLINE", "OFFLINE:NORMAL").run(|| super::Tungsten::check(reprovision("east", "west1"), step));
            let check = check.expect("a check");
            assert_eq!(check.state, opsh_plugin_sdk::CheckState::Stale, "{id}: {:?}", check.detail);
            assert!(check.detail.en.contains("west2's east replicator is OFFLINE:NORMAL"), "{id}: {}", check.detail.en);
        }
        let gate = plan.steps.iter().find(|s| s.id == "east-back-online").expect("gate").clone();
        let (check, _) = world_where("ONLINE", "OFFLINE:NORMAL").run(|| super::Tungsten::check(reprovision("east", "west1"), gate));
        assert_eq!(check.expect("a check").state, opsh_plugin_sdk::CheckState::NotDone, "the gate itself waits for an OFFLINE one to come back");
    }

    #[test]
    fn a_source_whose_replicator_is_not_online_is_refused() {
        let (plan, _) = world("OFFLINE:NORMAL").run(|| super::Tungsten::plan(reprovision("east", "west1")));
        assert!(
            matches!(&plan, Err(CommandError::Refused(t)) if t.en.starts_with("west1's west replicator is OFFLINE:NORMAL: a source must be healthy")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_source_in_the_failed_dataservice_is_a_usage_error() {
        let (plan, _) = world("ONLINE").run(|| super::Tungsten::plan(reprovision("east", "east2")));
        assert!(matches!(&plan, Err(CommandError::Usage(m)) if m.contains("is a host of east itself")), "{plan:?}");
    }
}
