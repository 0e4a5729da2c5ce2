//! `opsh inventory import`: a first inventory from a cluster's own description, in the real
//! formats (tests/fixtures/import: a pgxc_ctl.conf in the shape of OpenTenBase's
//! contrib/pgxc_ctl/pgxc_ctl_conf_part_full, an Ansible inventory in INI and in YAML, an ssh_config). The TOML
//! it prints is then read back by `opsh inventory`, which validates it.

use std::path::{Path, PathBuf};

use crate::support::{Run, opsh_at as opsh};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/import").join(name)
}

/// Import, write the TOML, and have `opsh inventory` validate it; the parsed TOML.
fn import(home: &Path, format: &str, file: &str) -> (Run, toml::Table) {
    let run = opsh(home, &["inventory", "import", format, fixture(file).to_str().expect("utf-8")]);
    assert_eq!(run.code, 0, "{run:?}");
    let path = home.join(format!("{format}.toml"));
    std::fs::write(&path, &run.stdout).expect("write");
    let shown = opsh(home, &["--inventory", path.to_str().expect("utf-8"), "inventory"]);
    assert_eq!(shown.code, 0, "the imported inventory is valid: {shown:?}\n{}", run.stdout);
    let doc = run.stdout.parse().expect("TOML");
    (run, doc)
}

fn get<'a>(doc: &'a toml::Table, path: &str) -> &'a toml::Value {
    let mut value: Option<&toml::Value> = None;
    let mut table = Some(doc);
    for key in path.split('/') {
        value = table.and_then(|t| t.get(key));
        table = value.and_then(toml::Value::as_table);
    }
    value.unwrap_or_else(|| panic!("no {path} in {doc:#?}"))
}

#[test]
fn a_pgxc_ctl_conf_becomes_an_otb_topology_with_every_member_and_no_secret() {
    let home = tempfile::tempdir().expect("home");
    let (run, doc) = import(home.path(), "pgxc_ctl", "pgxc_ctl.conf");
    let hosts: Vec<&String> = get(&doc, "hosts").as_table().expect("hosts").keys().collect();
    assert_eq!(hosts, ["db-a.example.internal", "db-b.example.internal"]);
    assert_eq!(get(&doc, "hosts/db-a.example.internal/ssh").as_str(), Some("opentenbase@db-a.example.internal"));
    // cn001 has a slave, cn002 has none; each datanode has one, on the other server.
    let members = get(&doc, "topologies/opentenbase/members");
    let names = |role: &str| members[role].as_array().expect("role").iter().filter_map(|v| v.as_str()).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(names("coordinator"), ["cn001-db-a.example.internal", "cn001-db-b.example.internal", "cn002-db-b.example.internal"]);
    assert_eq!(names("datanode"), ["dn001-db-a.example.internal", "dn001-db-b.example.internal", "dn002-db-b.example.internal", "dn002-db-a.example.internal"]);
    assert_eq!(get(&doc, "topologies/opentenbase/plugin").as_str(), Some("otb"));
    let slave = get(&doc, "databases/cn001-db-b.example.internal");
    assert_eq!(slave["port"].as_integer(), Some(30005), "the slave's own port");
    assert_eq!(slave["attributes"]["data-dir"].as_str(), Some("/data/opentenbase/data/coord_slave"), "$coordSlaveDir expanded");
    assert_eq!(slave["attributes"]["otb-node"].as_str(), Some("cn001"));
    assert_eq!(slave["attributes"]["bin-dir"].as_str(), Some("/usr/local/opentenbase/bin"), "from pgxcInstallDir");
    assert_eq!(slave["password"]["env"].as_str(), Some("OPSH_OTB_PASSWORD"), "a placeholder source, never a password");
    let gtm = get(&doc, "topologies/opentenbase/attributes");
    assert_eq!(gtm["gtm.hosts"].as_str(), Some("db-a.example.internal,db-b.example.internal"));
    assert_eq!(gtm["gtm.db-b.example.internal.port"].as_str(), Some("50002"), "each GTM server's own port");
    // What the file leaves to the servers' environment is said, not guessed.
    assert_eq!(get(&doc, "databases/dn001-db-a.example.internal/attributes/data-dir").as_str(), Some("$HOME/pgxc/nodes/dn_master"));
    assert!(run.stderr.contains("uses $HOME from the servers' environment"), "{run:?}");
    assert!(!run.stdout.contains("max_connections"), "a heredoc's lines are not assignments");
}

#[test]
fn an_ansible_inventory_and_an_ssh_config_become_hosts() {
    let home = tempfile::tempdir().expect("home");
    let (run, doc) = import(home.path(), "ansible", "hosts.ini");
    let db1 = get(&doc, "hosts/db1.example.internal");
    assert_eq!(db1["address"].as_str(), Some("10.20.0.11"));
    assert_eq!(db1["ssh"].as_str(), Some("postgres@10.20.0.11"), "ansible_user from the group's vars");
    assert_eq!(db1["ssh-port"].as_integer(), Some(2222));
    assert_eq!(db1["become"].as_str(), Some("sudo"));
    assert_eq!(get(&doc, "hosts/db2.example.internal/attributes/ansible-groups").as_str(), Some("dbservers,replicas"));
    assert!(run.stderr.contains("web[01:04].example.internal is not expanded"), "{run:?}");

    let (run, doc) = import(home.path(), "ansible", "hosts.yml");
    let db1 = get(&doc, "hosts/db1.example.internal");
    assert_eq!(db1["ssh"].as_str(), Some("postgres@10.20.0.11"), "ansible_user from all's vars");
    assert_eq!(db1["ssh-port"].as_integer(), Some(2222));
    assert_eq!(db1["become"].as_str(), Some("sudo"), "ansible_become from the parent group dbservers");
    assert_eq!(db1["identity-file"].as_str(), Some("~/.ssh/id_db"));
    let db2 = get(&doc, "hosts/db2.example.internal");
    assert_eq!(db2["ssh"].as_str(), Some("replicator@10.20.0.12"), "the nearer group's user wins over all's");
    assert_eq!(get(&doc, "hosts/db2.example.internal/attributes/ansible-groups").as_str(), Some("monitoring,replicas"));
    assert_eq!(get(&doc, "hosts/backup.example.internal/address").as_str(), Some("10.20.0.30"));
    assert_eq!(get(&doc, "hosts/backup.example.internal").get("become"), None, "dbservers' vars are not all's");
    assert!(run.stderr.contains("all.children.dbservers.children.replicas.hosts: the host range db[03:04].example.internal is not expanded"), "{run:?}");

    let (run, doc) = import(home.path(), "ssh-config", "ssh_config");
    let hosts: Vec<&String> = get(&doc, "hosts").as_table().expect("hosts").keys().collect();
    assert_eq!(hosts, ["bastion", "db1", "db2"], "patterns are no hosts; one Host line is one host");
    assert_eq!(get(&doc, "hosts/db2/aliases/ssh-alias-1").as_str(), Some("db2-alt"), "its other name kept");
    assert_eq!(get(&doc, "hosts/db1/address").as_str(), Some("10.20.0.11"));
    assert_eq!(get(&doc, "hosts/db1/ssh").as_str(), Some("db1"), "the alias, so the ssh config still applies");
    assert!(run.stderr.contains("host db2 is reached through a jump host"), "{run:?}");
}

#[test]
fn an_unknown_format_or_a_file_that_is_not_one_is_a_clear_error() {
    let home = tempfile::tempdir().expect("home");
    let run = opsh(home.path(), &["inventory", "import", "terraform", "x.tf"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("inventory import FORMAT FILE") && run.stderr.contains("pgxc_ctl, ansible, ssh-config"), "{run:?}");
    let run = opsh(home.path(), &["inventory", "import", "pgxc_ctl", fixture("hosts.ini").to_str().expect("utf-8")]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("no coordNames: is it an OpenTenBase / Postgres-XL pgxc_ctl.conf?"), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
}
