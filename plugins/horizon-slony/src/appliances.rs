//! The Horizon deployment as the inventory describes it: appliance pairs (the service provider's
//! and one per tenant organisation), each appliance's databases, and the paths of Horizon's
//! files — plus what each appliance and database is doing right now.

use opsh_plugin_sdk::{CommandError, RowsExt, host, inventory, service, sql, text};

use crate::slony::{self, Role};

const DOCS: &str = "plugins/horizon-slony/README.md";

/// What this plugin runs on an appliance while nothing may change (declared in `describe()`):
/// is it up, and is slon running there.
pub const PROBES: &[&str] = &["true", "sh -c 'pgrep -x slon || true'", "sh -c 'pgrep -a -x slon || true'"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairKind {
    ServiceProvider,
    Tenant(String),
}

/// Appliances that replicate to each other: the primary and its secondaries (any number).
#[derive(Debug, Clone)]
pub struct Pair {
    pub kind: PairKind,
    pub appliances: Vec<String>,
    /// The databases its appliances hold, as the inventory lists them (fdb, edb, avdb first).
    pub dbnames: Vec<String>,
}

impl Pair {
    /// The databases of the pair's appliances: whatever the inventory gives them, never a fixed
    /// list (a tenant may have no avdb, or a database of its own).
    pub fn databases(&self) -> Vec<&str> {
        self.dbnames.iter().map(String::as_str).collect()
    }

    pub fn label(&self) -> String {
        match &self.kind {
            PairKind::ServiceProvider => "service provider".into(),
            PairKind::Tenant(org) => format!("tenant {org}"),
        }
    }

    pub fn others<'a>(&'a self, appliance: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.appliances.iter().filter(move |a| *a != appliance)
    }
}

/// One database of one appliance, by inventory name.
#[derive(Debug, Clone)]
pub struct Database {
    pub name: String,
    pub appliance: String,
    pub dbname: String,
    pub port: String,
    pub user: String,
}

/// Where Horizon keeps its files and what its services are called (the seed's values unless the
/// topology's attributes say otherwise).
#[derive(Debug, Clone)]
pub struct Layout {
    pub conf_dir: String,
    pub scripts_dir: String,
    pub diagnose_properties: String,
    pub services: Vec<String>,
    pub backup_dir: String,
}

impl Layout {
    pub fn properties(&self, db: &str) -> String {
        format!("{}/{db}.properties", self.conf_dir)
    }

    pub fn start_slon(&self, db: &str) -> String {
        format!("{}/start_slon_{db}.sh", self.scripts_dir)
    }

    pub fn av_setup(&self) -> String {
        format!("{}/av-setup", self.scripts_dir)
    }
}

pub struct Horizon {
    pub topology: String,
    pub pairs: Vec<Pair>,
    pub databases: Vec<Database>,
    pub layout: Layout,
}

impl Horizon {
    pub fn load() -> Result<Self, CommandError> {
        let topology = inventory::managed_topology("horizon")?;
        let mut pairs = Vec::new();
        for (key, _) in &topology.attributes {
            let Some(role) = key.strip_prefix("member.") else { continue };
            let kind = match role {
                "service-provider" => PairKind::ServiceProvider,
                "database" => continue,
                _ => match role.strip_prefix("tenant-") {
                    Some(org) if !org.is_empty() => PairKind::Tenant(org.to_string()),
                    _ => {
                        return Err(CommandError::Failed(format!(
                            "topology {}: member role {role:?} is not service-provider, tenant-ORG or database (see {DOCS})",
                            topology.name
                        )));
                    }
                },
            };
            pairs.push(Pair { kind, appliances: inventory::members(&topology, role), dbnames: Vec::new() });
        }
        let mut databases = Vec::new();
        for name in inventory::members(&topology, "database") {
            let info = host::lookup(&name)?;
            databases.push(Database {
                appliance: inventory::need(&info, "host", DOCS)?.to_string(),
                dbname: inventory::need(&info, "dbname", DOCS)?.to_string(),
                port: inventory::need(&info, "port", DOCS)?.to_string(),
                user: inventory::need(&info, "user", DOCS)?.to_string(),
                name,
            });
        }
        for pair in &mut pairs {
            let mut names: Vec<String> = databases.iter().filter(|d| pair.appliances.contains(&d.appliance)).map(|d| d.dbname.clone()).collect();
            let rank = |n: &str| ["fdb", "edb", "avdb"].iter().position(|k| *k == n).unwrap_or(3);
            names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
            names.dedup();
            pair.dbnames = names;
        }
        let get = |key: &str, default: &str| inventory::attr_or(&topology, key, default);
        let layout = Layout {
            conf_dir: get("conf-dir", "/usr/local/desktone/release/active/conf"),
            scripts_dir: get("scripts-dir", "/usr/local/desktone/scripts"),
            diagnose_properties: get("diagnose-properties", "/usr/local/xmpms/diagnose/config/application.properties"),
            services: get("services", "dtService,av-manager,diagnose").split(',').map(str::to_string).collect(),
            backup_dir: get("backup-dir", "/var/tmp"),
        };
        Ok(Self { topology: topology.name, pairs, databases, layout })
    }

    pub fn pair_of(&self, appliance: &str) -> Result<&Pair, CommandError> {
        self.pairs.iter().find(|p| p.appliances.iter().any(|a| a == appliance)).ok_or_else(|| {
            CommandError::Usage(format!("{appliance} is not an appliance of topology {}: its appliances are {}", self.topology, self.appliances().join(", ")))
        })
    }

    pub fn service_provider(&self) -> Result<&Pair, CommandError> {
        self.pairs
            .iter()
            .find(|p| p.kind == PairKind::ServiceProvider)
            .ok_or_else(|| CommandError::Failed(format!("topology {} has no service-provider members", self.topology)))
    }

    pub fn tenant(&self, org: &str) -> Result<&Pair, CommandError> {
        self.pairs.iter().find(|p| p.kind == PairKind::Tenant(org.to_string())).ok_or_else(|| {
            let orgs: Vec<String> = self.pairs.iter().filter_map(|p| if let PairKind::Tenant(o) = &p.kind { Some(o.clone()) } else { None }).collect();
            CommandError::Usage(format!("no tenant organisation {org} in topology {}: its organisations are {}", self.topology, orgs.join(", ")))
        })
    }

    pub fn appliances(&self) -> Vec<String> {
        self.pairs.iter().flat_map(|p| p.appliances.iter().cloned()).collect()
    }

    /// The inventory database holding `dbname` on `appliance`.
    pub fn database(&self, appliance: &str, dbname: &str) -> Result<&Database, CommandError> {
        self.databases.iter().find(|d| d.appliance == appliance && d.dbname == dbname).ok_or_else(|| {
            CommandError::Failed(format!(
                "appliance {appliance} has no database {dbname} among the `database` members of topology {} (see {DOCS})",
                self.topology
            ))
        })
    }

    /// The service-provider appliance that holds the primary fdb now: its own row carries the
    /// primary bits (64 and 128) and its fdb is no Slony subscriber.
    pub fn service_provider_primary(&self) -> Result<String, CommandError> {
        let pair = self.service_provider()?;
        let mut seen = Vec::new();
        for appliance in &pair.appliances {
            let db = self.database(appliance, "fdb")?;
            let bits = sql::query(
                &db.name,
                "SELECT (capabilities & 192) = 192 AS primary_bits FROM appliance WHERE name = $1",
                &[sql::Value::Text(appliance.clone())],
            );
            let role = slony::role(&db.name);
            match (bits, role) {
                (Ok(rows), Ok(role)) if rows.first_bool("primary_bits") == Some(true) && role != Role::Subscriber => return Ok(appliance.clone()),
                (Ok(_), Ok(role)) => seen.push(format!("{appliance}: {}", role.describe())),
                (Err(e), _) | (_, Err(e)) => seen.push(format!("{appliance}: {}", e.message())),
            }
        }
        Err(CommandError::Refused(text(
            &format!("no service-provider appliance holds the primary fdb ({}); promote the service provider first", seen.join("; ")),
            &format!("プライマリ fdb を持つサービス プロバイダ アプライアンスがありません ({})。先にサービス プロバイダを昇格してください", seen.join("; ")),
        )))
    }
}

/// Does the appliance answer over ssh?
pub fn reachable(appliance: &str) -> Result<(), String> {
    opsh_plugin_sdk::reachable(appliance).map_err(|e| e.brief())
}

/// Does the database answer?
pub fn answers(db: &str) -> Result<(), String> {
    sql::query(db, "SELECT 1", &[]).map(|_| ()).map_err(|e| e.brief())
}

/// `running`, `stopped` or `unknown` for each service.
pub fn service_states(appliance: &str, services: &[String]) -> Vec<(String, String)> {
    services
        .iter()
        .map(|s| {
            let state = match service::status(appliance, s) {
                Ok(service::ServiceState::Running) => "running".to_string(),
                Ok(service::ServiceState::Stopped) => "stopped".to_string(),
                Ok(service::ServiceState::Unknown) => "unknown".to_string(),
                Err(e) => format!("? ({})", e.brief()),
            };
            (s.clone(), state)
        })
        .collect()
}

/// How many slon processes run on the appliance (a watchdog and a worker per database).
pub fn slon_processes(appliance: &str) -> Result<usize, String> {
    let out = opsh_plugin_sdk::probe(appliance, &["sh", "-c", "pgrep -x slon || true"], Some(10_000)).map_err(|e| e.message().to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count())
}
