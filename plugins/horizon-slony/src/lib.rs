//! `horizon`: VMware Horizon DaaS (before 9.0.0) database failover on Slony-I, as seeds 000
//! (English) and 001 (Japanese) do it by hand.
//!
//! - `horizon status` — appliances, who holds the primary database, Slony per database, and
//!   which database host every properties file names.
//! - `horizon enable-writes SECONDARY` — the secondary's databases become the primary datasource.
//! - `horizon promote service-provider NEW --old OLD` / `horizon promote tenant NEW --old OLD
//!   --org ID` — the permanent promotions, Slony re-initialised with NEW as origin by slonik.
//! - `horizon reinit-slony APPLIANCE [--db D]` — after the old primary is back.
//! - `horizon requirements` — the programs and scripts on each appliance, the logins' privileges.
//!
//! Step titles carry the seed's step numbers (the Japanese edition's numbering, which the
//! English bullets follow) so an operator can hold the paper runbook next to the plan.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod appliances;
mod plans;
mod slony;
mod steps;

use appliances::Horizon;
use opsh_plugin_sdk::ahead;
use opsh_plugin_sdk::requirements::{self, Privilege, Requirements};
use opsh_plugin_sdk::{
    Args, ChangePlan, CheckResult, CommandError, CommandKind, CommandResult, Completion, Guest, Invocation, PluginInfo, Step, Table, Text, command, text,
};

/// Written for opsh:plugin 0.2 (see `opsh_plugin_sdk::WIT_MINOR`): the host performs every step
/// as declared, except the Slony subscription (see `steps::apply`).
const _: () = assert!(opsh_plugin_sdk::WIT_MINOR == 2, "this plugin is written for opsh:plugin 0.2");

struct HorizonPlugin;

impl Guest for HorizonPlugin {
    fn describe() -> PluginInfo {
        let dbs = || Completion::None;
        PluginInfo {
            name: "horizon".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: text(
                "Horizon DaaS database failover on Slony-I (appliances before 9.0.0)",
                "Horizon DaaS の Slony-I データベース フェイルオーバー (9.0.0 より前のアプライアンス)",
            ),
            capabilities: opsh_plugin_sdk::capabilities(&["sql", "ssh", "file-edit", "service"], appliances::PROBES),
            commands: vec![
                command(
                    "status",
                    CommandKind::Read,
                    text(
                        "Appliances, primary bits, Slony per database, database hosts in the properties files",
                        "アプライアンス、プライマリ ビット、データベースごとの Slony、properties ファイルの DB ホスト",
                    ),
                )
                .example("horizon status", text("Show every appliance and its databases", "全アプライアンスとデータベースを表示"))
                .build(),
                command(
                    "enable-writes",
                    CommandKind::Change,
                    text(
                        "Enable write operations on the secondary database (the primary appliance failed)",
                        "セカンダリ データベースでの書き込み操作を有効化する (プライマリ アプライアンス障害時)",
                    ),
                )
                .positional("secondary", text("the secondary appliance", "セカンダリ アプライアンス"), Completion::Host)
                .example(
                    "horizon enable-writes ta2 --dry-run",
                    text("Preview making ta2's databases the primary datasource", "ta2 のデータベースをマスター データソースにする手順を確認"),
                )
                .build(),
                command(
                    "promote service-provider",
                    CommandKind::Change,
                    text(
                        "Permanently promote the secondary service-provider appliance to primary",
                        "セカンダリ サービス プロバイダ アプライアンスを永続的にプライマリへ昇格",
                    ),
                )
                .positional("new", text("the appliance to promote", "昇格するアプライアンス"), Completion::Host)
                .option("old", true, text("the failed primary appliance", "障害が発生したプライマリ アプライアンス"), Completion::Host)
                .flag(
                    "force",
                    text(
                        "promote although NEW lags behind OLD (the changes it has not received are lost)",
                        "NEW が OLD より遅れていても昇格 (未受信の変更は失われる)",
                    ),
                )
                .example("horizon promote service-provider sp2 --old sp1 --dry-run", text("Preview promoting sp2", "sp2 の昇格を確認"))
                .build(),
                command(
                    "promote tenant",
                    CommandKind::Change,
                    text("Permanently promote the secondary tenant appliance to primary", "セカンダリ テナント アプライアンスを永続的にプライマリへ昇格"),
                )
                .positional("new", text("the appliance to promote", "昇格するアプライアンス"), Completion::Host)
                .option("old", true, text("the failed primary appliance", "障害が発生したプライマリ アプライアンス"), Completion::Host)
                .option("org", true, text("the tenant's organisation id", "テナントの組織 ID"), Completion::None)
                .flag(
                    "force",
                    text(
                        "promote although NEW lags behind OLD (the changes it has not received are lost)",
                        "NEW が OLD より遅れていても昇格 (未受信の変更は失われる)",
                    ),
                )
                .example(
                    "horizon promote tenant ta2 --old ta1 --org 1001 --dry-run",
                    text("Preview promoting ta2 for organisation 1001", "組織 1001 の ta2 の昇格を確認"),
                )
                .build(),
                command(
                    "reinit-slony",
                    CommandKind::Change,
                    text(
                        "Re-initialise Slony after the old primary appliance is restarted (it becomes a subscriber)",
                        "旧プライマリ アプライアンス再起動後に Slony を再初期化 (サブスクライバーになる)",
                    ),
                )
                .positional("appliance", text("the restarted appliance", "再起動したアプライアンス"), Completion::Host)
                .option(
                    "db",
                    false,
                    text("only this database (e.g. fdb, edb or avdb); default: all of the appliance's", "このデータベースのみ (既定: すべて)"),
                    dbs(),
                )
                .option(
                    "origin",
                    false,
                    text(
                        "the appliance whose databases are copied (default: the one other appliance of the pair that takes writes)",
                        "コピー元のアプライアンス (既定: 書き込み可能なもう一方)",
                    ),
                    Completion::Host,
                )
                .flag(
                    "force",
                    text(
                        "re-initialise even when the appliance may hold the newer writes (they are replaced)",
                        "このアプライアンスの方が新しい書き込みを持つ可能性があっても再初期化 (置き換えられる)",
                    ),
                )
                .example(
                    "horizon reinit-slony ta1 --db edb",
                    text("Make the restarted ta1 a subscriber of edb again", "再起動した ta1 を edb のサブスクライバーに戻す"),
                )
                .build(),
                requirements::declaration("horizon"),
            ],
        }
    }

    fn read(call: Invocation) -> CommandResult<Vec<Table>> {
        match call.command.as_str() {
            "status" => ahead::settled(|| plans::status(&Horizon::load()?)),
            requirements::COMMAND => Ok(vec![needs(&Horizon::load()?)]),
            other => Err(CommandError::Usage(format!("horizon has no read command {other}"))),
        }
    }

    fn plan(call: Invocation) -> CommandResult<ChangePlan> {
        let args = Args(&call);
        let horizon = Horizon::load()?;
        match call.command.as_str() {
            "enable-writes" => plans::enable_writes(&horizon, args.required("secondary")?),
            "promote service-provider" => plans::promote(&horizon, args.required("new")?, args.required("old")?, None, args.flag("force")),
            "promote tenant" => plans::promote(&horizon, args.required("new")?, args.required("old")?, Some(args.required("org")?), args.flag("force")),
            "reinit-slony" => plans::reinit(&horizon, args.required("appliance")?, args.get("db"), args.get("origin"), args.flag("force")),
            other => Err(CommandError::Usage(format!("horizon has no command {other}"))),
        }
    }

    fn apply(_call: Invocation, step: Step) -> CommandResult<Text> {
        steps::apply(&step)
    }

    fn check(_call: Invocation, step: Step) -> CommandResult<CheckResult> {
        steps::check(&step)
    }

    fn verify(call: Invocation) -> CommandResult<Vec<Table>> {
        plans::verify(&Horizon::load()?, &call)
    }
}

#[cfg(target_arch = "wasm32")]
opsh_plugin_sdk::export!(HorizonPlugin);

/// What the runbooks run on each appliance (the seed's tools from the remote PATH, Horizon's
/// scripts from the topology's `scripts-dir`) and the privileges of each database's login.
fn needs(horizon: &Horizon) -> Table {
    let mut needs = Requirements::default();
    for pair in &horizon.pairs {
        for appliance in &pair.appliances {
            for program in ["slonik", "pg_dump", "psql", "killall", "pgrep"] {
                needs.tool(appliance, program, "enable-writes, promote, reinit-slony");
            }
            needs.tool(appliance, &horizon.layout.av_setup(), "promote (av-setup)");
            for db in &pair.dbnames {
                needs.tool(appliance, &horizon.layout.start_slon(db), "promote, reinit-slony (start slon)");
            }
        }
    }
    for db in &horizon.databases {
        needs.privilege(&db.name, Privilege::Superuser, "Slony's schema, ALTER DATABASE, pg_terminate_backend()");
    }
    needs.table()
}

/// Plans against a scripted Horizon (see `opsh_plugin_sdk::fake`): service provider sp1/sp2 and
/// tenant 1001 on ta1/ta2, one fdb each.
#[cfg(test)]
mod plan_tests {
    use opsh_plugin_sdk::fake::{World, ids, invocation as call, rows};
    use opsh_plugin_sdk::sql::Value;
    use opsh_plugin_sdk::{CapabilityError, CommandError, Effect, Guest};

    const CONF: &str = "/usr/local/desktone/release/active/conf/fdb.properties";
    const DIAGNOSE: &str = "/usr/local/xmpms/diagnose/config/application.properties";

    fn world() -> World {
        let mut world = World::new().target(
            "topology",
            "horizon",
            &[
                ("plugin", "horizon"),
                ("member.service-provider", "sp1,sp2"),
                ("member.tenant-1001", "ta1,ta2"),
                ("member.database", "sp1-fdb,sp2-fdb,ta1-fdb,ta2-fdb"),
            ],
        );
        for appliance in ["sp1", "sp2", "ta1", "ta2"] {
            world = world.target("database", &format!("{appliance}-fdb"), &[("host", appliance), ("dbname", "fdb"), ("port", "6432"), ("user", "opsh")]);
        }
        world
    }

    /// `db`'s Slony role: origin (node 1), subscriber (node 2) or none.
    fn slony(world: World, db: &str, role: &str) -> World {
        let present = rows(&["present"], vec![vec![Value::Boolean(role != "none")]]);
        let node = |local: i64| rows(&["local_id", "origin", "active"], vec![vec![Value::Int(local), Value::Int(1), Value::Boolean(true)]]);
        let world = world.sql(db, "nspname = '_slony') AS present", present);
        match role {
            "origin" => world.sql(db, "AS local_id", node(1)),
            "subscriber" => world.sql(db, "AS local_id", node(2)),
            _ => world,
        }
    }

    #[test]
    fn enable_writes_with_the_primary_down_drops_slony_on_the_secondary_and_points_it_at_itself() {
        let world = slony(world(), "ta2-fdb", "subscriber")
            .exec("ta2", "true", 0, "")
            .exec_fails("ta1", "true", CapabilityError::Unreachable("host ta1: connection refused".into()))
            .file("ta2", CONF, "fdb.hosts={{addr:ta1}},{{addr:ta2}}\nfdb.port=6432\n")
            .file("ta2", DIAGNOSE, "db.jdbc.url=jdbc:postgresql://{{addr:ta1}}:6432/avdb\ndb.fdb.jdbc.url=jdbc:postgresql://{{addr:ta1}}:6432/fdb\n");
        let (plan, asked) = world.run(|| super::HorizonPlugin::plan(call("enable-writes", &[("secondary", "ta2")])));
        let plan = plan.expect("a plan");
        assert_eq!(
            ids(&plan),
            [
                "stop-services-ta2",
                "stop-slon-ta2",
                "drop-slony-ta2-fdb",
                "edit-fdb-properties-ta2",
                "av-setup-ta2",
                "edit-application-properties-ta2",
                "start-services-ta2"
            ]
        );
        assert!(!asked.iter().any(|a| a.starts_with("exec ta1: killall")), "nothing is asked of the primary that is down: {asked:?}");
        let Effect::File(properties) = &plan.steps[3].effects[0] else { panic!("{:?}", plan.steps[3]) };
        assert_eq!(properties.new_content, "fdb.hosts={{addr:ta2}}\nfdb.port=6432\n");
        let Effect::Exec(av_setup) = &plan.steps[4].effects[0] else { panic!() };
        assert!(
            av_setup.privileged
                && av_setup.env.iter().any(|(k, v)| k == "DB_PASSWORD" && *v == opsh_plugin_sdk::ssh::EnvValue::DatabasePassword("ta2-fdb".into()))
        );
        let Effect::File(diagnose) = &plan.steps[5].effects[0] else { panic!() };
        assert!(!diagnose.new_content.contains("{{addr:ta1}}"), "{}", diagnose.new_content);
        let warned: Vec<&str> = plan.warnings.iter().map(|w| w.en.as_str()).collect();
        assert!(warned.iter().any(|w| w.starts_with("the primary ta1 does not answer")), "{warned:?}");
        assert!(warned.iter().any(|w| w.starts_with("ta1-fdb does not answer")), "nothing to restore from: {warned:?}");
        assert!(plan.steps.iter().all(|s| s.custom.is_none()), "only a subscription is custom, and there is none here");
    }

    #[test]
    fn a_permanent_promotion_is_refused_while_the_old_primary_is_down() {
        let world = world().exec("ta2", "true", 0, "").sql("ta2-fdb", "SELECT 1", rows(&["?column?"], vec![vec![Value::Int(1)]])).exec_fails(
            "ta1",
            "true",
            CapabilityError::Unreachable("host ta1: connection refused".into()),
        );
        let (plan, _) = world.run(|| super::HorizonPlugin::plan(call("promote tenant", &[("new", "ta2"), ("old", "ta1"), ("org", "1001")])));
        assert!(
            matches!(&plan, Err(CommandError::Refused(t)) if t.en.starts_with("ta1 does not answer") && t.en.contains("run `horizon enable-writes ta2`")),
            "{plan:?}"
        );
    }

    #[test]
    fn promote_service_provider_is_refused_unless_the_fabric_has_one_row_for_each_appliance() {
        let mut world = world();
        for sp in ["sp1", "sp2"] {
            world = world.exec(sp, "true", 0, "").sql(&format!("{sp}-fdb"), "SELECT 1", rows(&["?column?"], vec![vec![Value::Int(1)]]));
        }
        // Two rows named sp2 and none named sp1: two rows in all, and still refused.
        let world = world.sql("sp2-fdb", "FROM appliance WHERE name IN ($1, $2)", rows(&["old", "new"], vec![vec![Value::Int(0), Value::Int(2)]]));
        let (plan, _) = world.run(|| super::HorizonPlugin::plan(call("promote service-provider", &[("new", "sp2"), ("old", "sp1")])));
        assert!(
            matches!(&plan, Err(CommandError::Refused(t)) if t.en == "sp2-fdb has 0 appliance row(s) named sp1 and 2 named sp2: the primary bits move between exactly one of each"),
            "{plan:?}"
        );
    }

    #[test]
    fn reinit_slony_never_makes_the_side_with_the_newer_writes_a_subscriber() {
        // ta1 took writes on its own (its Slony schema dropped) while ta2 still holds the old origin.
        let world = slony(slony(world(), "ta1-fdb", "none"), "ta2-fdb", "origin")
            .sql("ta2-fdb", "AS fenced", rows(&["fenced"], vec![vec![Value::Boolean(false)]]))
            .sql("ta1-fdb", "SELECT 1", rows(&["?column?"], vec![vec![Value::Int(1)]]))
            .exec("ta1", "true", 0, "")
            .exec("ta2", "true", 0, "");
        let (plan, _) = world.run(|| super::HorizonPlugin::plan(call("reinit-slony", &[("appliance", "ta1")])));
        assert!(
            matches!(&plan, Err(CommandError::Refused(t)) if t.en.contains("ta1 has the newer writes") && t.en.contains("horizon reinit-slony ta2 --origin ta1")),
            "{plan:?}"
        );
    }
}
