//! EDB xDB Replication Server 6.2 single-master systems in a lab, for any published tables. xDB
//! cannot be installed here; its servers run as lab services and `edb-repcli` is a stand-in
//! (`tests/assets/xdb-repcli`) that does what they do to the data. What the lab builds is the
//! control schema as the 6.2 documentation shows it (EnterpriseDB/docs
//! `product_docs/docs/eprs/6.2/`: `05_smr_operation/02_creating_publication/
//! 04_control_schema_objects_created_for_publication.mdx`, the switchover page
//! `05_smr_operation/06_performing_switchover.mdx`): `_edb_replicator_pub` (`xdb_pub_database`
//! with the host, port, database and user xDB records, `xdb_sub_servers`, `xdb_publications`,
//! `rrep_tables`, a shadow table `rrst_SCHEMA_TABLE` per published table with its columns,
//! `rrep_txset`), `_edb_replicator_sub` (`xdb_sub_database`, `xdb_subscriptions`) and
//! `_edb_scheduler` on the publication database, `_edb_replicator_sub.rrep_txset_health` alone on
//! the subscription database; trigger-based: `rrpi_/rrpu_/rrpd_` capture triggers and their
//! functions per table; log-based: no shadow tables, `rrpt_` triggers with
//! `_edb_replicator_pub.capturetruncateevent`, and a logical slot `xdb_<dboid>_<pubid>`; the xDB
//! Replication Configuration file naming the controller database.
//!
//! Where the documentation shows no columns (`rrep_txset`, `db_password`, `repl_method`), the lab
//! gives the stand-in what it needs, and opsh does not rely on them.

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::lab::{ClusterState, Lab};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdbSpec {
    /// The clusters holding the publication and the subscription database.
    pub publication: String,
    pub subscription: String,
    /// The database (on both clusters).
    pub database: String,
    /// `schema.table` of every published table (they must exist on both sides, with a primary key).
    pub tables: Vec<String>,
    /// `trigger` or `log`.
    #[serde(default = "default_method")]
    pub method: String,
    /// The host running the publication and subscription servers (it has the configuration file
    /// and edb-repcli).
    pub server: String,
    /// The database users xDB records for the publication and the subscription database.
    #[serde(default = "default_user")]
    pub pub_user: String,
    #[serde(default = "default_user")]
    pub sub_user: String,
    /// How the control schema names hosts: `address` (default) or `dns`.
    #[serde(default)]
    pub host_form: Option<String>,
    #[serde(default = "default_publication")]
    pub publication_name: String,
    #[serde(default = "default_subscription")]
    pub subscription_name: String,
    #[serde(default = "default_config")]
    pub config_file: String,
    /// Tables whose capture triggers are `ENABLE ALWAYS` (they fire under
    /// session_replication_role = replica too), as some xDB installations have them.
    #[serde(default)]
    pub enable_always: Vec<String>,
}

fn default_method() -> String {
    "trigger".into()
}
fn default_user() -> String {
    "opsh".into()
}
fn default_publication() -> String {
    "emp_pub".into()
}
fn default_subscription() -> String {
    "emp_sub".into()
}
fn default_config() -> String {
    "/usr/local/etc/edb-repl.conf".into()
}

const REPCLI: &str = include_str!("../assets/xdb-repcli");
/// An encrypted password as xDB writes it (opsh never reads or changes it).
const ENCRYPTED: &str = "ygJ9AxoJEX854elcVIJPTw==";

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Build every xDB system of the topology: users, control schemas, capture, configuration.
pub fn install(lab: &Lab, specs: &[XdbSpec], password: &str) -> Result<()> {
    for spec in specs {
        if !["trigger", "log"].contains(&spec.method.as_str()) {
            bail!("xdb: method must be trigger or log, not {:?}", spec.method);
        }
        let publication = lab.cluster(&spec.publication)?.clone();
        let subscription = lab.cluster(&spec.subscription)?.clone();
        let name = |cluster: &ClusterState| -> Result<String> {
            let host = lab.host(&cluster.host)?;
            Ok(match spec.host_form.as_deref() {
                Some("dns") => host.dns.clone().context("xdb host_form = dns needs hosts with dns = true")?,
                _ => host.address.clone(),
            })
        };
        let server = lab.host(&spec.server)?;
        let server_name = match spec.host_form.as_deref() {
            Some("dns") => server.dns.clone().context("xdb host_form = dns needs hosts with dns = true")?,
            _ => server.address.clone(),
        };
        for user in [&spec.pub_user, &spec.sub_user] {
            if user != "opsh" {
                for cluster in [&publication, &subscription] {
                    crate::lab::add_server_pgpass(lab, cluster, user, password)?;
                    lab.psql_as_admin(
                        cluster,
                        "postgres",
                        &format!("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {0}) THEN CREATE ROLE {1} LOGIN SUPERUSER REPLICATION PASSWORD {2}; END IF; END $$", literal(user), quote(user), literal(password)),
                    )?;
                }
            }
        }
        let log = spec.method == "log";
        let mut sql = String::new();
        sql.push_str("CREATE SCHEMA _edb_replicator_pub;\n");
        sql.push_str("CREATE TABLE _edb_replicator_pub.xdb_pub_database (pub_db_id integer PRIMARY KEY, db_type varchar(30) NOT NULL, db_host varchar(255) NOT NULL, db_port integer NOT NULL, db_name varchar(255) NOT NULL, db_user varchar(255) NOT NULL, db_password varchar(255) NOT NULL, repl_method char(1) NOT NULL);\n");
        sql.push_str(&format!(
            "INSERT INTO _edb_replicator_pub.xdb_pub_database VALUES (1, 'postgresql', {}, {}, {}, {}, '{ENCRYPTED}', '{}');\n",
            literal(&name(&publication)?),
            publication.port,
            literal(&spec.database),
            literal(&spec.pub_user),
            if log { "W" } else { "T" }
        ));
        sql.push_str("CREATE TABLE _edb_replicator_pub.xdb_sub_servers (sub_server_id integer PRIMARY KEY, sub_server_ip varchar(255) NOT NULL, sub_server_port integer NOT NULL);\n");
        sql.push_str(&format!("INSERT INTO _edb_replicator_pub.xdb_sub_servers VALUES (1, {}, 9052);\n", literal(&server_name)));
        sql.push_str(
            "CREATE TABLE _edb_replicator_pub.xdb_publications (pub_id integer PRIMARY KEY, pub_name varchar(255) NOT NULL, pub_db_id integer NOT NULL);\n",
        );
        sql.push_str(&format!("INSERT INTO _edb_replicator_pub.xdb_publications VALUES (1, {}, 1);\n", literal(&spec.publication_name)));
        sql.push_str("CREATE TABLE _edb_replicator_pub.rrep_tables (table_id integer PRIMARY KEY, pub_id integer NOT NULL, table_schema varchar(255) NOT NULL, table_name varchar(255) NOT NULL, shadow_table_name varchar(255));\n");
        sql.push_str("CREATE TABLE _edb_replicator_pub.rrep_txset (set_id bigserial PRIMARY KEY, table_id integer NOT NULL, start_rrep_sync_id bigint NOT NULL, end_rrep_sync_id bigint NOT NULL, status char(1) NOT NULL);\n");
        if log {
            sql.push_str("CREATE TABLE _edb_replicator_pub.rrep_wal_events_queue (event_id bigserial PRIMARY KEY, event_type char(1) NOT NULL, table_name text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());\n");
            sql.push_str("CREATE FUNCTION _edb_replicator_pub.capturetruncateevent() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN INSERT INTO _edb_replicator_pub.rrep_wal_events_queue (event_type, table_name) VALUES ('T', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME); RETURN NULL; END $f$;\n");
        }
        for (i, table) in spec.tables.iter().enumerate() {
            let (schema, relname) = table.split_once('.').with_context(|| format!("xdb: table {table:?} must be schema.table"))?;
            let shadow = format!("rrst_{schema}_{relname}");
            let qualified = format!("{}.{}", quote(schema), quote(relname));
            if log {
                sql.push_str(&format!("INSERT INTO _edb_replicator_pub.rrep_tables VALUES ({}, 1, {}, {}, NULL);\n", i + 1, literal(schema), literal(relname)));
                sql.push_str(&format!(
                    "CREATE TRIGGER {} AFTER TRUNCATE ON {qualified} FOR EACH STATEMENT EXECUTE FUNCTION _edb_replicator_pub.capturetruncateevent();\n",
                    quote(&format!("rrpt_{schema}_{relname}"))
                ));
                continue;
            }
            sql.push_str(&format!(
                "INSERT INTO _edb_replicator_pub.rrep_tables VALUES ({}, 1, {}, {}, {});\n",
                i + 1,
                literal(schema),
                literal(relname),
                literal(&shadow)
            ));
            // The shadow table has the table's columns (nullable) after xDB's own.
            sql.push_str(&format!(
                "DO $do$ DECLARE cols text; vals_new text; vals_old text; names text; BEGIN
  SELECT string_agg(format('%I %s', attname, format_type(atttypid, atttypmod)), ', ' ORDER BY attnum),
         string_agg(format('NEW.%I', attname), ', ' ORDER BY attnum), string_agg(format('OLD.%I', attname), ', ' ORDER BY attnum),
         string_agg(quote_ident(attname), ', ' ORDER BY attnum)
    INTO cols, vals_new, vals_old, names FROM pg_attribute WHERE attrelid = {rel}::regclass AND attnum > 0 AND NOT attisdropped;
  EXECUTE format('CREATE TABLE _edb_replicator_pub.%I (rrep_sync_id bigserial PRIMARY KEY, rrep_operation_type char(1) NOT NULL, rrep_tx_timestamp timestamptz NOT NULL DEFAULT clock_timestamp(), %s)', {shadow}, cols);
  EXECUTE format('CREATE FUNCTION %I.%I() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN INSERT INTO _edb_replicator_pub.%I (rrep_operation_type, %s) VALUES (''I'', %s); RETURN NEW; END $f$', {schema}, {fi}, {shadow}, names, vals_new);
  EXECUTE format('CREATE FUNCTION %I.%I() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN INSERT INTO _edb_replicator_pub.%I (rrep_operation_type, %s) VALUES (''U'', %s); RETURN NEW; END $f$', {schema}, {fu}, {shadow}, names, vals_new);
  EXECUTE format('CREATE FUNCTION %I.%I() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN INSERT INTO _edb_replicator_pub.%I (rrep_operation_type, %s) VALUES (''D'', %s); RETURN OLD; END $f$', {schema}, {fd}, {shadow}, names, vals_old);
END $do$;\n",
                rel = literal(&qualified),
                shadow = literal(&shadow),
                schema = literal(schema),
                fi = literal(&format!("rrpi_{schema}_{relname}_tgfunc")),
                fu = literal(&format!("rrpu_{schema}_{relname}_tgfunc")),
                fd = literal(&format!("rrpd_{schema}_{relname}_tgfunc")),
            ));
            for (kind, event) in [("i", "INSERT"), ("u", "UPDATE"), ("d", "DELETE")] {
                let trigger = quote(&format!("rrp{kind}_{schema}_{relname}"));
                sql.push_str(&format!(
                    "CREATE TRIGGER {trigger} AFTER {event} ON {qualified} FOR EACH ROW EXECUTE FUNCTION {}.{}();\n",
                    quote(schema),
                    quote(&format!("rrp{kind}_{schema}_{relname}_tgfunc"))
                ));
                if spec.enable_always.contains(table) {
                    sql.push_str(&format!("ALTER TABLE {qualified} ENABLE ALWAYS TRIGGER {trigger};\n"));
                }
            }
        }
        sql.push_str("CREATE SCHEMA _edb_replicator_sub;\n");
        sql.push_str("CREATE TABLE _edb_replicator_sub.xdb_sub_database (sub_db_id integer PRIMARY KEY, db_type varchar(30) NOT NULL, db_host varchar(255) NOT NULL, db_port integer NOT NULL, db_name varchar(255) NOT NULL, db_user varchar(255) NOT NULL, db_password varchar(255) NOT NULL);\n");
        sql.push_str(&format!(
            "INSERT INTO _edb_replicator_sub.xdb_sub_database VALUES (1, 'postgresql', {}, {}, {}, {}, '{ENCRYPTED}');\n",
            literal(&name(&subscription)?),
            subscription.port,
            literal(&spec.database),
            literal(&spec.sub_user)
        ));
        sql.push_str("CREATE TABLE _edb_replicator_sub.xdb_subscriptions (sub_id integer PRIMARY KEY, sub_name varchar(255) NOT NULL, pub_name varchar(255) NOT NULL, sub_db_id integer NOT NULL, pub_server_ip varchar(255) NOT NULL, pub_server_port integer NOT NULL);\n");
        sql.push_str(&format!(
            "INSERT INTO _edb_replicator_sub.xdb_subscriptions VALUES (1, {}, {}, 1, {}, 9051);\n",
            literal(&spec.subscription_name),
            literal(&spec.publication_name),
            literal(&server_name)
        ));
        sql.push_str("CREATE SCHEMA _edb_scheduler;\n");
        sql.push_str("CREATE TABLE _edb_scheduler.sch_pub_job_details (job_name varchar(200) PRIMARY KEY, job_group varchar(200) NOT NULL, job_class_name varchar(250) NOT NULL);\n");
        sql.push_str(&format!(
            "INSERT INTO _edb_scheduler.sch_pub_job_details VALUES ({}, 'xdb', 'ShadowTableCleanupJob');\n",
            literal(&format!("{}_cleanup", spec.publication_name))
        ));
        sql.push_str("CREATE TABLE _edb_scheduler.sch_sub_job_details (job_name varchar(200) PRIMARY KEY, job_group varchar(200) NOT NULL, job_class_name varchar(250) NOT NULL);\n");
        sql.push_str(&format!(
            "INSERT INTO _edb_scheduler.sch_sub_job_details VALUES ({}, 'xdb', 'SynchronizeJob');\n",
            literal(&format!("{}_sync", spec.subscription_name))
        ));
        if log {
            // xDB names its slot after the database's OID and the publication's id.
            sql.push_str("SELECT 1 FROM pg_create_logical_replication_slot(format('xdb_%s_1', (SELECT oid FROM pg_database WHERE datname = current_database())), 'test_decoding');\n");
        }
        lab.psql_as_admin(&publication, &spec.database, &sql).with_context(|| format!("installing xDB's control schema on {}", publication.name))?;
        lab.psql_as_admin(
            &subscription,
            &spec.database,
            "CREATE SCHEMA _edb_replicator_sub;\nCREATE TABLE _edb_replicator_sub.rrep_txset_health (set_id bigint, status char(1), checked_at timestamptz);\n",
        )
        .with_context(|| format!("installing xDB's subscription schema on {}", subscription.name))?;
        // The xDB Replication Configuration file on the servers' host, naming the controller
        // (the publication database) as xDB writes it, and edb-repcli.
        let conf = format!(
            "#xDB Replication Server Configuration Properties\n#Fri Jan 30 17:34:06 GMT-05:00 2015\nport={}\nadmin_password=ygJ9AxoJEX854elcVIJPTw\\=\\=\nuser={}\nadmin_user={}\ntype=postgresql\ndatabase={}\npassword=ygJ9AxoJEX854elcVIJPTw\\=\\=\nhost={}\n",
            publication.port,
            spec.pub_user,
            spec.pub_user,
            spec.database,
            name(&publication)?
        );
        write_host_file(lab, &spec.server, &spec.config_file, &conf, 0o644)?;
        let repcli = REPCLI.replace("${XDB_REPL_CONF:-/usr/local/etc/edb-repl.conf}", &format!("${{XDB_REPL_CONF:-{}}}", spec.config_file));
        write_host_file(lab, &spec.server, "/usr/local/xdb/bin/edb-repcli", &repcli, 0o755)?;
    }
    Ok(())
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn write_host_file(lab: &Lab, host: &str, path: &str, content: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !path.starts_with("/usr/local/") {
        bail!("xdb: {path}: lab host files live under /usr/local");
    }
    let target = lab.host_file(host, path);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&target, content)?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
    let (uid, gid) = crate::lab::lab_ids()?;
    std::os::unix::fs::chown(&target, Some(uid), Some(gid))?;
    Ok(())
}
