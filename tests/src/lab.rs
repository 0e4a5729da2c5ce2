//! The lab: a disposable topology of lab hosts on loopback, built from real parts.
//!
//! Each lab host is an `sshd` (key-only login as the lab user) in its own mount namespace, with
//! its own `/usr/local` (a bind mount of `DIR/hosts/HOST/usr-local`) and its own address
//! `127.42.BLOCK.N`. Its PostgreSQL clusters and lab services are started inside that namespace,
//! so "every process of host X" is exactly the namespace's processes: that is what `crash`, `cut`
//! (SIGSTOP: the host hangs, as a partitioned or frozen machine does) and `down` act on, by PID.
//! Lab databases require scram-sha-256 passwords over TLS (a lab CA), so opsh's secret handling
//! and TLS verification run for real. Everything is torn down by PID, also after a crash.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::procs;
use crate::topology::Topology;

pub const LAB_USER: &str = "opshlab";
pub const SSH_PORT: u16 = 2222;
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const LABSVC: &str = include_str!("../assets/labsvc");
const OTB_PG_CTL: &str = include_str!("../assets/otb-pg_ctl");
const OTB_GTM_CTL: &str = include_str!("../assets/otb-gtm_ctl");
const OTB_GTM: &str = include_str!("../assets/otb-gtm");
const OTB_PG_REWIND: &str = include_str!("../assets/otb-pg_rewind");
/// The domain of the lab's DNS names (RFC 2606: never resolves outside this machine).
pub const DNS_DOMAIN: &str = "opsh-lab.test";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostState {
    pub name: String,
    pub address: String,
    /// The host's anchor process (`unshare`, parent of its sshd): in the host's mount namespace.
    pub sshd_pid: u32,
    pub sshd_started: u64,
    /// PID 1 of the host's own PID namespace (its sshd), for entering the host.
    #[serde(default)]
    pub init_pid: u32,
    pub namespace: String,
    pub services: Vec<String>,
    /// The host's DNS name when the topology reaches it by name (an entry of the lab's block in
    /// /etc/hosts).
    #[serde(default)]
    pub dns: Option<String>,
}

impl HostState {
    /// How the inventory and clients reach the host: its DNS name if it has one, else its address.
    pub fn reach(&self) -> &str {
        self.dns.as_deref().unwrap_or(&self.address)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterState {
    pub name: String,
    pub host: String,
    pub address: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub databases: Vec<String>,
    pub standby_of: Option<String>,
    /// The data directory as the host sees it (what `pg_ctl -D` is given on the host).
    #[serde(default)]
    pub host_data_dir: String,
    /// OpenTenBase node name and type when the cluster is a coordinator or datanode.
    #[serde(default)]
    pub pgxc: Option<(String, String)>,
    /// Where its OpenTenBase tools are on the host (none: on the PATH).
    #[serde(default)]
    pub bin_dir: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub topology: String,
    pub block: u8,
    pub dir: PathBuf,
    pub hosts: Vec<HostState>,
    pub clusters: Vec<ClusterState>,
    #[serde(default)]
    pub cut: Vec<String>,
}

impl HostState {
    /// `nsenter` arguments that put a command inside this host: its mounts and its processes.
    pub fn enter(&self) -> Vec<String> {
        let mut args = vec!["-t".to_string()];
        if self.init_pid != 0 {
            args.extend([self.init_pid.to_string(), "-m".into(), "-p".into()]);
        } else {
            args.extend([self.sshd_pid.to_string(), "-m".into()]);
        }
        args.push("--".into());
        args
    }
}

/// A running lab. Dropping a lab made by [`Lab::up`] tears it down unless [`Lab::keep`] was called.
pub struct Lab {
    pub state: LabState,
    teardown_on_drop: bool,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.teardown_on_drop {
            let _ = Lab::down(&self.state.dir);
        }
    }
}

impl Lab {
    /// Build `topology` in `dir` on addresses `127.42.block.*`, replacing any earlier lab there.
    pub fn up(topology: &Topology, dir: &Path, block: u8) -> Result<Lab> {
        require_root()?;
        if block == 0 || block == 255 {
            bail!("--block must be 1 to 254");
        }
        Lab::down(dir).context("cleaning up the previous lab in this directory")?;
        let (uid, gid) = ensure_lab_user()?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        blocks::claim(block, &dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        for sub in ["ssh", "secrets", "tls", "hosts"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::set_permissions(dir.join("secrets"), fs::Permissions::from_mode(0o700))?;
        let password = random_token(24)?;
        write_private(&dir.join("secrets/db-password"), &format!("{password}\n"))?;
        let mut lab = Lab {
            state: LabState { topology: topology.name.clone(), block, dir: dir.clone(), hosts: Vec::new(), clusters: Vec::new(), cut: Vec::new() },
            teardown_on_drop: true,
        };
        let build = lab.build(topology, uid, gid, &password);
        if let Err(e) = build {
            lab.save().ok();
            return Err(e.context(format!("building lab {} in {}", topology.name, dir.display())));
        }
        lab.save()?;
        lab.write_inventory(topology)?;
        Ok(lab)
    }

    fn build(&mut self, topology: &Topology, uid: u32, gid: u32, password: &str) -> Result<()> {
        let dir = self.state.dir.clone();
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "opsh-lab-client", "-f"]).arg(dir.join("ssh/id_ed25519")))?;
        fs::copy(dir.join("ssh/id_ed25519.pub"), dir.join("ssh/authorized_keys"))?;
        make_ca(&dir.join("tls"))?;
        let mut known_hosts = String::new();
        let names: Vec<(String, String)> = topology
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.dns)
            .map(|(i, h)| (format!("127.42.{}.{}", self.state.block, 10 + i), dns_name(&h.name, self.state.block)))
            .collect();
        hosts_file::set_block(self.state.block, &dir, &names).context("adding the lab's names to /etc/hosts")?;
        for (i, spec) in topology.hosts.iter().enumerate() {
            let address = format!("127.42.{}.{}", self.state.block, 10 + i);
            let dns = spec.dns.then(|| dns_name(&spec.name, self.state.block));
            let host_dir = dir.join("hosts").join(&spec.name);
            let local = host_dir.join("usr-local");
            for sub in ["bin", "etc/labsvc", "var/run/labsvc", "var/log", "var/lib"] {
                fs::create_dir_all(local.join(sub))?;
            }
            fs::write(local.join("bin/labsvc"), LABSVC)?;
            fs::set_permissions(local.join("bin/labsvc"), fs::Permissions::from_mode(0o755))?;
            for service in &spec.services {
                fs::write(local.join("etc/labsvc").join(service), format!("# lab service {service}\nexec sleep 2147483647\n"))?;
            }
            for bin_dir in otb_bin_dirs(topology, &spec.name) {
                // OpenTenBase's tools as stand-ins (pg_ctl, pg_rewind, gtm_ctl, gtm) and the
                // PostgreSQL tools it ships, in each bin dir its members name (/usr/local/bin,
                // on the PATH, for members that name none).
                let bin = local.join(bin_dir.trim_start_matches("/usr/local/"));
                fs::create_dir_all(&bin)?;
                for (name, script) in [("pg_ctl", OTB_PG_CTL), ("gtm_ctl", OTB_GTM_CTL), ("gtm", OTB_GTM), ("pg_rewind", OTB_PG_REWIND)] {
                    fs::write(bin.join(name), script)?;
                    fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755))?;
                }
                for tool in ["pg_basebackup", "pg_controldata", "psql"] {
                    std::os::unix::fs::symlink(format!("{PG_BIN}/{tool}"), bin.join(tool))?;
                }
            }
            let shared = topology.files.iter().filter(|set| set.hosts.contains(&spec.name)).flat_map(|set| set.files.iter());
            for (path, content) in spec.files.iter().chain(shared) {
                let target = local.join(path.trim_start_matches("/usr/local/"));
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::write(&target, render(content, &spec.name, topology, self.state.block))?;
                if content.starts_with("#!") {
                    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
                }
            }
            for sub in ["pg", "run", "log"] {
                fs::create_dir_all(host_dir.join(sub))?;
            }
            chown_tree(&host_dir, uid, gid)?;
            fs::set_permissions(host_dir.join("run"), fs::Permissions::from_mode(0o700))?;
            make_server_cert(&dir.join("tls"), &spec.name, &address, dns.as_deref())?;

            let sshd_dir = host_dir.join("sshd");
            fs::create_dir_all(&sshd_dir)?;
            run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", &spec.name, "-f"]).arg(sshd_dir.join("host_ed25519")))?;
            let config = sshd_dir.join("sshd_config");
            fs::write(
                &config,
                format!(
                    "ListenAddress {address}:{SSH_PORT}\nHostKey {key}\nPidFile {pid}\nAuthorizedKeysFile {auth}\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin no\nAllowUsers {LAB_USER}\nStrictModes no\nSetEnv LAB_HOST={name}\nLogLevel ERROR\nMaxStartups 100:30:200\nMaxSessions 100\n",
                    key = sshd_dir.join("host_ed25519").display(),
                    pid = sshd_dir.join("sshd.pid").display(),
                    auth = dir.join("ssh/authorized_keys").display(),
                    name = spec.name,
                ),
            )?;
            fs::create_dir_all("/run/sshd")?;
            let log = fs::File::create(host_dir.join("log/sshd.log"))?;
            // A Tungsten host also has its own /opt (the seed's installation paths).
            let opt = match &topology.tungsten {
                Some(tungsten) => {
                    let opt = host_dir.join("opt");
                    let site = tungsten.services.iter().find(|(_, hosts)| hosts.contains(&spec.name)).map(|(s, _)| s.clone()).unwrap_or_default();
                    let (cluster_home, cross_site_home) = tungsten.homes_of(&site);
                    crate::tungsten::install(&opt, &cluster_home, &cross_site_home, &spec.name, &dir)?;
                    chown_tree(&opt, uid, gid)?;
                    format!("mkdir -p /opt && mount --bind {} /opt && ", shell_quote(&opt.display().to_string()))
                }
                None => String::new(),
            };
            let script = format!(
                "mount --bind {local} /usr/local && {opt}exec /usr/sbin/sshd -D -e -f {config}",
                local = shell_quote(&local.display().to_string()),
                config = shell_quote(&config.display().to_string()),
            );
            // Own mount namespace (its /usr/local) and own PID namespace (its `ps`, its `killall`).
            let mut child = Command::new("setsid")
                .args(["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private", "--", "/bin/sh", "-c", &script])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting sshd in its own mount namespace (needs unshare and root)")?;
            let pid = child.id();
            // Reap it when it exits so that a dead sshd never lingers as a zombie of this process.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            wait_for_ssh(&address, SSH_PORT, &host_dir.join("log/sshd.log"))?;
            let started = procs::start_time(pid).context("sshd exited right after starting")?;
            let namespace = procs::mount_ns(pid).context("reading sshd's mount namespace")?;
            let init_pid = procs::children(pid).first().copied().context("the host's sshd (its PID 1) is missing")?;
            if Some(&namespace) == procs::mount_ns(std::process::id()).as_ref() {
                bail!("sshd for host {} did not get its own mount namespace", spec.name);
            }
            let host_key = fs::read_to_string(sshd_dir.join("host_ed25519.pub"))?;
            let mut key_fields = host_key.split_whitespace();
            let (kind, key) = (key_fields.next().unwrap_or_default(), key_fields.next().unwrap_or_default());
            for name in std::iter::once(&address).chain(dns.as_ref()) {
                known_hosts.push_str(&format!("[{name}]:{SSH_PORT} {kind} {key}\n"));
            }
            self.state.hosts.push(HostState {
                name: spec.name.clone(),
                address,
                sshd_pid: pid,
                sshd_started: started,
                init_pid,
                namespace,
                services: spec.services.clone(),
                dns,
            });
            self.save()?;
        }
        fs::write(dir.join("ssh/known_hosts"), known_hosts)?;
        if let Some(tungsten) = &topology.tungsten {
            let layout =
                crate::tungsten::Layout { services: &tungsten.services, drifted: &tungsten.drifted, names: &tungsten.names, masters: &tungsten.masters };
            crate::tungsten::World::create(&dir.join("tungsten"), &layout)?;
            chown_tree(&dir.join("tungsten"), uid, gid)?;
        }
        fs::write(
            dir.join("ssh/config"),
            format!(
                "# opsh lab: key-only login as {LAB_USER}, host keys checked strictly against the lab's known_hosts\nHost *\n  User {LAB_USER}\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n",
                key = dir.join("ssh/id_ed25519").display(),
                known = dir.join("ssh/known_hosts").display(),
            ),
        )?;

        // Primaries first, then their standbys, then standbys of standbys (cascading).
        let mut ordered: Vec<_> = topology.clusters.iter().collect();
        ordered.sort_by_key(|c| topology.upstream_chain(c).len());
        let cascading = topology.clusters.iter().any(|c| topology.upstream_chain(c).len() > 1);
        for spec in ordered {
            self.start_cluster(spec, cascading, uid, gid, password)?;
            self.save()?;
        }
        for spec in &topology.clusters {
            for (db, sql) in &spec.sql {
                let cluster = self.cluster(&spec.name)?.clone();
                self.psql_as_admin(&cluster, db, &render(sql, &spec.host, topology, self.state.block))
                    .with_context(|| format!("running the topology's SQL in {db} of cluster {}", spec.name))?;
            }
        }
        self.install_pgxc_catalog(topology)?;
        self.write_server_pgpass(password, uid, gid)?;
        crate::xdb::install(self, &topology.xdb, password).context("setting up xDB replication")?;
        crate::slony::replicate(self, &topology.slony).context("setting up Slony-I replication")?;
        let gtm_master = topology.gtms.iter().find(|g| g.role == "master");
        for gtm in &topology.gtms {
            let dir = self.host_file(&gtm.host, &gtm.data_dir);
            fs::create_dir_all(&dir)?;
            // gtm.conf as OpenTenBase's gtm reads it (src/gtm/main/gtm.conf.sample).
            let mut conf = format!("nodename = '{}'\nlisten_addresses = '*'\nport = {}\n", gtm.node, gtm.port);
            match (gtm.role.as_str(), gtm_master) {
                ("standby", Some(master)) => {
                    let host = self.host(&master.host)?;
                    conf.push_str(&format!("startup = STANDBY\nactive_host = '{}'\nactive_port = {}\n", host.reach(), master.port));
                }
                _ => conf.push_str("startup = ACT\n"),
            }
            fs::write(dir.join("gtm.conf"), conf)?;
            chown_tree(&self.state.dir.join("hosts").join(&gtm.host).join("usr-local"), uid, gid)?;
            let gtm_ctl = format!("{}/gtm_ctl", gtm.bin_dir.as_deref().unwrap_or("/usr/local/bin"));
            let output = self.host_exec(&gtm.host, &[&gtm_ctl, "-Z", "gtm", "-D", &gtm.data_dir, "-w", "start"])?;
            check(&output, &format!("starting the GTM on {}", gtm.host))?;
        }
        for host in &self.state.hosts {
            for service in &host.services {
                let output = self.host_exec(&host.name, &["/usr/local/bin/labsvc", "start", service])?;
                if !output.status.success() {
                    bail!("starting lab service {service} on {}: {}", host.name, String::from_utf8_lossy(&output.stderr));
                }
            }
        }
        Ok(())
    }

    fn start_cluster(&mut self, spec: &crate::topology::ClusterSpec, cascading: bool, uid: u32, gid: u32, password: &str) -> Result<()> {
        let host = self.host(&spec.host)?.clone();
        let host_dir = self.state.dir.join("hosts").join(&host.name);
        let (data_dir, host_data_dir) = match &spec.data_dir {
            Some(path) => (self.host_file(&host.name, path), path.clone()),
            None => {
                let dir = host_dir.join("pg").join(&spec.name);
                let shown = dir.display().to_string();
                (dir, shown)
            }
        };
        if let Some(parent) = data_dir.parent() {
            fs::create_dir_all(parent)?;
            chown(parent, uid, gid)?;
            if let Some(grand) = parent.parent() {
                chown(grand, uid, gid)?;
            }
        }
        let socket_dir = host_dir.join("run");
        let tls = self.state.dir.join("tls");
        // The server key must belong to the server's user and be private.
        let key = host_dir.join("pg").join(format!("{}.key", spec.name));
        let cert = host_dir.join("pg").join(format!("{}.crt", spec.name));
        fs::copy(tls.join(format!("{}.key", host.name)), &key)?;
        fs::copy(tls.join(format!("{}.crt", host.name)), &cert)?;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
        chown(&key, uid, gid)?;
        chown(&cert, uid, gid)?;
        let passfile = host_dir.join("pg/.pgpass");
        let mut lines = fs::read_to_string(&passfile).unwrap_or_default();
        for other in &self.state.clusters {
            lines.push_str(&format!("{}:{}:*:opsh:{password}\n", other.address, other.port));
        }
        lines.push_str(&format!("*:*:*:opsh:{password}\n"));
        fs::write(&passfile, lines)?;
        fs::set_permissions(&passfile, fs::Permissions::from_mode(0o600))?;
        chown(&passfile, uid, gid)?;

        // An OpenTenBase node listens on its socket only: the node proxy owns address:port.
        let listen = if spec.pgxc.is_some() { String::new() } else { host.address.clone() };
        let own_settings = format!(
            "\n# opsh lab: cluster {name} on host {host}\nlisten_addresses = '{listen}'\nport = {port}\nunix_socket_directories = '{socket}'\nssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n",
            name = spec.name,
            host = host.name,
            port = spec.port,
            socket = socket_dir.display(),
            cert = cert.display(),
            key = key.display(),
        );
        match &spec.standby_of {
            None => {
                let output = as_lab_user(
                    None,
                    &format!("{PG_BIN}/initdb"),
                    &[
                        "-D",
                        &data_dir.display().to_string(),
                        "-U",
                        LAB_USER,
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C",
                        "--no-sync",
                        "--no-instructions",
                    ],
                )?;
                check(&output, &format!("initdb of cluster {}", spec.name))?;
                let mut conf = fs::OpenOptions::new().append(true).open(data_dir.join("postgresql.conf"))?;
                write!(
                    conf,
                    "{own_settings}wal_level = {wal}\nmax_wal_senders = 10\nmax_replication_slots = 10\nwal_keep_size = '128MB'\nhot_standby = on\nwal_retrieve_retry_interval = '200ms'\nfsync = off\nfull_page_writes = {fpw}\nshared_buffers = '16MB'\nlogging_collector = off\nlog_min_messages = warning\npassword_encryption = 'scram-sha-256'\n",
                    wal = spec.wal_level,
                    // A backup taken from a standby (for a cascading one) needs full-page writes.
                    fpw = if cascading { "on" } else { "off" },
                )?;
                fs::write(
                    data_dir.join("pg_hba.conf"),
                    "# opsh lab: passwords (scram-sha-256) for everyone but the lab's own administration on the private socket\nlocal all opshlab trust\nlocal all all scram-sha-256\nlocal replication all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n",
                )?;
            }
            Some(primary_name) => {
                let primary = self.cluster(primary_name)?.clone();
                let slot = format!("standby_{}", spec.name.replace('-', "_"));
                let output = as_lab_user(
                    Some(&passfile),
                    &format!("{PG_BIN}/pg_basebackup"),
                    &[
                        "-h",
                        &primary.address,
                        "-p",
                        &primary.port.to_string(),
                        "-U",
                        "opsh",
                        "-D",
                        &data_dir.display().to_string(),
                        "-R",
                        "-X",
                        "stream",
                        "-c",
                        "fast",
                        "-C",
                        "-S",
                        &slot,
                        "--no-sync",
                    ],
                )?;
                check(&output, &format!("pg_basebackup of standby {} from {}", spec.name, primary.name))?;
                let mut conf = fs::OpenOptions::new().append(true).open(data_dir.join("postgresql.conf"))?;
                write!(conf, "{own_settings}")?;
            }
        }
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))?;
        let log = host_dir.join("log").join(format!("{}.log", spec.name));
        let output =
            self.host_exec(&host.name, &[&format!("{PG_BIN}/pg_ctl"), "-D", &host_data_dir, "-l", &log.display().to_string(), "-w", "-t", "60", "start"])?;
        check(&output, &format!("starting cluster {} on host {}", spec.name, host.name))?;
        if spec.pgxc.is_some() {
            self.start_node_proxy(&host, spec.port, &socket_dir.join(format!(".s.PGSQL.{}", spec.port)))?;
        }
        let cluster = ClusterState {
            name: spec.name.clone(),
            host: host.name.clone(),
            address: host.address.clone(),
            port: spec.port,
            data_dir,
            socket_dir,
            databases: spec.databases.clone(),
            standby_of: spec.standby_of.clone(),
            host_data_dir,
            pgxc: spec.pgxc.as_ref().map(|p| (p.node.clone(), p.node_type.clone())),
            bin_dir: spec.bin_dir.clone(),
        };
        if spec.standby_of.is_none() {
            let mut sql = format!("CREATE ROLE opsh LOGIN SUPERUSER REPLICATION PASSWORD '{password}';\n");
            for db in &spec.databases {
                sql.push_str(&format!("CREATE DATABASE \"{db}\" OWNER opsh;\n"));
            }
            self.psql_as_admin(&cluster, "postgres", &sql)?;
        }
        self.state.clusters.push(cluster);
        Ok(())
    }

    /// The OpenTenBase node proxy for a cluster: in the host's namespace, on its address and port.
    fn start_node_proxy(&self, host: &HostState, port: u16, backend: &Path) -> Result<()> {
        let helper = helper_binary()?;
        let log = fs::OpenOptions::new().create(true).append(true).open(self.state.dir.join("hosts").join(&host.name).join("log/node-proxy.log"))?;
        let listen = format!("{}:{port}", host.address);
        let mut child = Command::new("nsenter")
            .args(host.enter())
            .arg("setsid")
            .arg(&helper)
            .args(["otb-proxy", "--listen", &listen, "--backend"])
            .arg(backend)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the node proxy {}", helper.display()))?;
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&listen.parse()?, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                bail!("the node proxy on {listen} did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// pgxc_node on every coordinator and datanode primary: every node at its master's address,
    /// and the GTM master.
    fn install_pgxc_catalog(&self, topology: &Topology) -> Result<()> {
        let primaries: Vec<&ClusterState> = self.state.clusters.iter().filter(|c| c.pgxc.is_some() && c.standby_of.is_none()).collect();
        if primaries.is_empty() {
            return Ok(());
        }
        let by_dns = topology.pgxc_host_form.as_deref() == Some("dns");
        let host_of = |name: &str| -> Result<String> {
            let host = self.host(name)?;
            Ok(if by_dns { host.reach().to_string() } else { host.address.clone() })
        };
        let mut rows = Vec::new();
        for (id, cluster) in primaries.iter().enumerate() {
            let (node, node_type) = cluster.pgxc.clone().unwrap_or_default();
            let kind = if node_type == "coordinator" { "C" } else { "D" };
            rows.push(format!("('{node}', '{kind}', {}, 0, '{}', false, false, {}, 'local', 0)", cluster.port, host_of(&cluster.host)?, id + 1));
        }
        for gtm in topology.gtms.iter().filter(|g| g.role == "master") {
            rows.push(format!("('{}', 'G', {}, 0, '{}', true, false, {}, 'local', 0)", gtm.node, gtm.port, host_of(&gtm.host)?, rows.len() + 1));
        }
        let sql = format!("{}\nINSERT INTO public.pgxc_node VALUES {};\n", crate::otb_proxy::CATALOG_SQL, rows.join(", "));
        for cluster in primaries {
            self.psql_as_admin(cluster, "postgres", &sql)?;
        }
        Ok(())
    }

    /// The lab user's ~/.pgpass, as a DBA sets it up for replication: a standby rebuilt by opsh
    /// authenticates to its master with it, and so do slon and slonik (opsh never writes
    /// passwords into data directories or scripts).
    /// Lines of other labs (other address blocks) are kept.
    fn write_server_pgpass(&self, password: &str, uid: u32, gid: u32) -> Result<()> {
        let prefix = format!("127.42.{}.", self.state.block);
        let dns_suffix = format!(".b{}.{DNS_DOMAIN}:", self.state.block);
        let mut ours = Vec::new();
        for cluster in &self.state.clusters {
            ours.push(format!("{}:{}:*:opsh:{password}", cluster.address, cluster.port));
            // libpq matches the host as the connection names it: a DNS name needs its own line.
            if let Some(dns) = self.host(&cluster.host).ok().and_then(|h| h.dns.clone()) {
                ours.push(format!("{dns}:{}:*:opsh:{password}", cluster.port));
            }
        }
        edit_server_pgpass(uid, gid, |text| {
            let mut lines: Vec<String> = text
                .lines()
                .filter(|l| !l.starts_with(&prefix) && !l.split(':').next().is_some_and(|h| format!("{h}:").ends_with(&dns_suffix)))
                .map(str::to_string)
                .collect();
            lines.extend(ours);
            lines.join("\n") + "\n"
        })
    }

    /// Start a stopped (crashed) cluster again.
    pub fn start(&self, target: &str) -> Result<String> {
        let cluster = self.cluster(target)?;
        let log = self.state.dir.join("hosts").join(&cluster.host).join("log").join(format!("{}.log", cluster.name));
        let output = self.host_exec(
            &cluster.host,
            &[&format!("{PG_BIN}/pg_ctl"), "-D", &cluster.host_data_dir, "-l", &log.display().to_string(), "-w", "-t", "60", "start"],
        )?;
        check(&output, &format!("starting cluster {}", cluster.name))?;
        Ok(format!("cluster {} on {} started", cluster.name, cluster.host))
    }

    /// Run SQL as the cluster's superuser through its private socket (lab administration and
    /// test assertions; opsh itself always goes over TCP with a password).
    pub fn psql_as_admin(&self, cluster: &ClusterState, db: &str, sql: &str) -> Result<String> {
        let mut child = Command::new("setpriv")
            .args(["--reuid", LAB_USER, "--regid", LAB_USER, "--init-groups", "--"])
            .arg(format!("{PG_BIN}/psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&cluster.socket_dir)
            .args(["-p", &cluster.port.to_string(), "-U", LAB_USER, "-d", db])
            .env("HOME", "/tmp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running psql")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!("psql on cluster {} db {db}: {}", cluster.name, String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Run a command on a lab host as the lab user, inside the host's namespace (as ssh would,
    /// without ssh: for the lab's own administration and for test assertions).
    pub fn host_exec(&self, host: &str, argv: &[&str]) -> Result<Output> {
        let host = self.host(host)?;
        let output = Command::new("nsenter")
            .args(host.enter())
            .args(["setpriv", "--reuid", LAB_USER, "--regid", LAB_USER, "--init-groups", "--"])
            .args(argv)
            .env("HOME", format!("/home/{LAB_USER}"))
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {argv:?} on lab host {}", host.name))?;
        Ok(output)
    }

    pub fn host(&self, name: &str) -> Result<&HostState> {
        self.state.hosts.iter().find(|h| h.name == name).with_context(|| {
            let names: Vec<&str> = self.state.hosts.iter().map(|h| h.name.as_str()).collect();
            format!("no lab host {name:?}; hosts: {}", names.join(", "))
        })
    }

    pub fn cluster(&self, name: &str) -> Result<&ClusterState> {
        self.state.clusters.iter().find(|c| c.name == name).with_context(|| {
            let names: Vec<&str> = self.state.clusters.iter().map(|c| c.name.as_str()).collect();
            format!("no lab cluster {name:?}; clusters: {}", names.join(", "))
        })
    }

    /// The primary cluster on `host` that holds database `db`.
    pub fn cluster_with(&self, host: &str, db: &str) -> Result<&ClusterState> {
        self.state
            .clusters
            .iter()
            .find(|c| c.host == host && c.standby_of.is_none() && c.databases.iter().any(|d| d == db))
            .with_context(|| format!("host {host} has no cluster with database {db}"))
    }

    /// Every live process of the lab's hosts, as (PID, start time): what `down` must stop.
    pub fn processes(&self) -> Vec<(u32, u64)> {
        self.state.hosts.iter().flat_map(|h| procs::in_namespace(&h.namespace)).filter_map(|pid| procs::start_time(pid).map(|s| (pid, s))).collect()
    }

    /// Where `/usr/local/…` of a lab host lives on this machine.
    pub fn host_file(&self, host: &str, path: &str) -> PathBuf {
        self.state.dir.join("hosts").join(host).join("usr-local").join(path.trim_start_matches("/usr/local/"))
    }

    pub fn inventory_path(&self) -> PathBuf {
        self.state.dir.join("inventory.toml")
    }

    pub fn password(&self) -> Result<String> {
        Ok(fs::read_to_string(self.state.dir.join("secrets/db-password"))?.trim().to_string())
    }

    /// Keep the lab running after this value is dropped (the `up` command does this).
    pub fn keep(mut self) -> LabState {
        self.teardown_on_drop = false;
        self.state.clone()
    }

    pub fn open(dir: &Path) -> Result<Lab> {
        let path = dir.join("lab.json");
        let text = fs::read_to_string(&path).with_context(|| format!("no lab in {} (run `scripts/lab up basic` first)", dir.display()))?;
        let state: LabState = serde_json::from_str(&text).with_context(|| format!("{} is malformed", path.display()))?;
        Ok(Lab { state, teardown_on_drop: false })
    }

    fn save(&self) -> Result<()> {
        let path = self.state.dir.join("lab.json");
        let tmp = self.state.dir.join("lab.json.tmp");
        fs::write(&tmp, serde_json::to_string_pretty(&self.state)?)?;
        fs::rename(tmp, path)?;
        Ok(())
    }

    fn write_inventory(&self, topology: &Topology) -> Result<()> {
        let dir = &self.state.dir;
        let mut inventory = toml::Table::new();
        let mut defaults = toml::Table::new();
        defaults.insert("connect-timeout-ms".into(), 3000.into());
        defaults.insert("statement-timeout-ms".into(), 30_000.into());
        defaults.insert("command-timeout-ms".into(), 60_000.into());
        inventory.insert("defaults".into(), defaults.into());
        let mut ssh = toml::Table::new();
        ssh.insert("config".into(), dir.join("ssh/config").display().to_string().into());
        inventory.insert("ssh".into(), ssh.into());
        let mut hosts = toml::Table::new();
        for host in &self.state.hosts {
            let mut entry = toml::Table::new();
            entry.insert("address".into(), host.reach().into());
            let mut aliases = toml::Table::new();
            if host.dns.is_some() {
                aliases.insert("ip".into(), host.address.clone().into());
            }
            // A Tungsten name of its own (tpm's member name) is one more name of the host.
            if let Some(name) = topology.tungsten.as_ref().and_then(|t| t.names.get(&host.name)).filter(|n| *n != host.reach() && **n != host.address) {
                aliases.insert("tungsten".into(), name.clone().into());
            }
            if !aliases.is_empty() {
                entry.insert("aliases".into(), aliases.into());
            }
            entry.insert("ssh".into(), format!("{LAB_USER}@{}", host.reach()).into());
            entry.insert("ssh-port".into(), i64::from(SSH_PORT).into());
            let mut manager = toml::Table::new();
            manager.insert("command".into(), "/usr/local/bin/labsvc {action} {service}".into());
            entry.insert("service-manager".into(), manager.into());
            hosts.insert(host.name.clone(), entry.into());
        }
        inventory.insert("hosts".into(), hosts.into());
        let mut databases = toml::Table::new();
        for cluster in &self.state.clusters {
            let names: Vec<String> = match &cluster.standby_of {
                None => cluster.databases.clone(),
                Some(primary) => self.cluster(primary)?.databases.clone(),
            };
            let entries: Vec<(String, &str)> = if cluster.pgxc.is_some() {
                vec![(cluster.name.clone(), "postgres")]
            } else {
                names.iter().map(String::as_str).chain(["postgres"]).map(|db| (format!("{}-{db}", cluster.name), db)).collect()
            };
            for (entry_name, db) in entries {
                let mut entry = toml::Table::new();
                entry.insert("host".into(), cluster.host.clone().into());
                entry.insert("port".into(), i64::from(cluster.port).into());
                entry.insert("dbname".into(), db.into());
                entry.insert("user".into(), "opsh".into());
                let mut password = toml::Table::new();
                password.insert("file".into(), dir.join("secrets/db-password").display().to_string().into());
                entry.insert("password".into(), password.into());
                let mut attributes = toml::Table::new();
                attributes.insert("cluster".into(), cluster.name.clone().into());
                attributes.insert("data-dir".into(), cluster.host_data_dir.clone().into());
                if let Some(bin_dir) = &cluster.bin_dir {
                    attributes.insert("bin-dir".into(), bin_dir.clone().into());
                }
                match &cluster.pgxc {
                    Some((node, node_type)) => {
                        // The node proxy does not do TLS (as OpenTenBase setups often do not).
                        entry.insert("sslmode".into(), "disable".into());
                        attributes.insert("otb-node".into(), node.clone().into());
                        attributes.insert("otb-type".into(), node_type.clone().into());
                    }
                    None => {
                        entry.insert("sslmode".into(), "verify-full".into());
                        entry.insert("sslrootcert".into(), dir.join("tls/ca.crt").display().to_string().into());
                    }
                }
                entry.insert("attributes".into(), attributes.into());
                databases.insert(entry_name, entry.into());
            }
        }
        inventory.insert("databases".into(), databases.into());
        if let Some(extra) = &topology.inventory {
            merge(&mut inventory, extra);
        }
        let header = format!(
            "# opsh inventory written by `scripts/lab up {}` for the lab in {}.\n# Passwords are not in this file: each database names the file its password comes from.\n\n",
            topology.name,
            dir.display()
        );
        fs::write(dir.join("inventory.toml"), header + &toml::to_string_pretty(&inventory)?)?;
        Ok(())
    }

    /// Stop every process of the lab in `dir` (by PID and mount namespace) and remove the directory.
    pub fn down(dir: &Path) -> Result<()> {
        let state = match fs::read_to_string(dir.join("lab.json")) {
            Ok(text) => serde_json::from_str::<LabState>(&text).ok(),
            Err(_) => None,
        };
        if let Some(state) = &state {
            for host in &state.hosts {
                if procs::alive(host.sshd_pid, host.sshd_started) {
                    for pid in procs::in_namespace(&host.namespace) {
                        procs::signal(pid, libc::SIGCONT);
                    }
                }
            }
            for cluster in &state.clusters {
                let Some(host) = state.hosts.iter().find(|h| h.name == cluster.host) else { continue };
                if let Some(pid) = procs::postmaster(&cluster.data_dir, &host.namespace) {
                    // SIGQUIT is pg_ctl's immediate shutdown: the postmaster still releases its
                    // shared memory.
                    if let Some(started) = procs::start_time(pid) {
                        procs::signal(pid, libc::SIGQUIT);
                        let deadline = Instant::now() + Duration::from_secs(5);
                        while procs::alive(pid, started) && Instant::now() < deadline {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        procs::stop_all(&[(pid, started)], Duration::from_secs(2));
                    }
                }
            }
            for host in &state.hosts {
                if procs::alive(host.sshd_pid, host.sshd_started) {
                    let pids: Vec<(u32, u64)> =
                        procs::in_namespace(&host.namespace).into_iter().filter_map(|pid| procs::start_time(pid).map(|s| (pid, s))).collect();
                    procs::stop_all(&pids, Duration::from_secs(3));
                    procs::stop_all(&[(host.sshd_pid, host.sshd_started)], Duration::from_secs(2));
                }
            }
        }
        if let Some(state) = &state {
            hosts_file::remove_block(state.block, &state.dir).context("removing the lab's names from /etc/hosts")?;
            blocks::release(state.block, &state.dir);
        }
        if dir.exists() {
            if state.is_none() && dir.join("hosts").exists() {
                bail!("{} looks like a lab directory without lab.json; remove it by hand after checking nothing runs from it", dir.display());
            }
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }

    /// Stop a database hard (`pg_ctl stop -m immediate`, as a crash) or kill a service (`HOST:SERVICE`, SIGKILL).
    pub fn crash(&self, target: &str) -> Result<String> {
        if let Some((host, service)) = target.split_once(':') {
            self.host(host)?;
            let pidfile = self.host_file(host, &format!("/usr/local/var/run/labsvc/{service}.pid"));
            let pid: u32 = fs::read_to_string(&pidfile)
                .with_context(|| format!("service {service} on {host} has no pid file: is it running?"))?
                .trim()
                .parse()
                .context("malformed pid file")?;
            let namespace = &self.host(host)?.namespace;
            let global = procs::from_host(namespace, pid).with_context(|| format!("service {service} on {host} is not running (pid {pid} is gone)"))?;
            procs::signal(global, libc::SIGKILL);
            return Ok(format!("killed service {service} on {host} (pid {pid} on the host, SIGKILL)"));
        }
        let cluster = match self.cluster(target) {
            Ok(cluster) => cluster,
            Err(_) => self
                .state
                .clusters
                .iter()
                .find(|c| target.strip_prefix(&format!("{}-", c.name)).is_some())
                .with_context(|| format!("no cluster, database or HOST:SERVICE named {target:?}"))?,
        };
        let output = self.host_exec(&cluster.host, &[&format!("{PG_BIN}/pg_ctl"), "-D", &cluster.host_data_dir, "-m", "immediate", "-w", "stop"])?;
        check(&output, &format!("crashing cluster {}", cluster.name))?;
        Ok(format!("cluster {} on {} stopped hard (pg_ctl stop -m immediate)", cluster.name, cluster.host))
    }

    /// Make a host unreachable: every process of it (sshd, PostgreSQL, services) is frozen, so
    /// connections hang as they do to a partitioned or hung machine.
    pub fn cut(&mut self, host: &str) -> Result<String> {
        let state = self.host(host)?.clone();
        let pids = procs::in_namespace(&state.namespace);
        for pid in &pids {
            procs::signal(*pid, libc::SIGSTOP);
        }
        if !self.state.cut.iter().any(|h| h == host) {
            self.state.cut.push(host.to_string());
        }
        self.save()?;
        Ok(format!("host {host} cut off ({} processes frozen)", pids.len()))
    }

    pub fn heal(&mut self, host: &str) -> Result<String> {
        let state = self.host(host)?.clone();
        let pids = procs::in_namespace(&state.namespace);
        for pid in &pids {
            procs::signal(*pid, libc::SIGCONT);
        }
        self.state.cut.retain(|h| h != host);
        self.save()?;
        Ok(format!("host {host} reachable again"))
    }

    /// Does any of its hosts still run?
    pub fn running(&self) -> bool {
        self.state.hosts.iter().any(|h| procs::alive(h.sshd_pid, h.sshd_started))
    }

    pub fn status(&self) -> Vec<String> {
        let mut lines = vec![format!("lab {} in {} (block 127.42.{}.0/24)", self.state.topology, self.state.dir.display(), self.state.block)];
        for host in &self.state.hosts {
            let up = procs::alive(host.sshd_pid, host.sshd_started);
            let cut = self.state.cut.contains(&host.name);
            lines.push(format!(
                "host {:<10} {:<14} sshd {}{}",
                host.name,
                host.address,
                if up { "up" } else { "DOWN" },
                if cut { " (CUT: unreachable)" } else { "" }
            ));
            for service in &host.services {
                let pidfile = self.host_file(&host.name, &format!("/usr/local/var/run/labsvc/{service}.pid"));
                let running = fs::read_to_string(pidfile)
                    .ok()
                    .and_then(|p| p.trim().parse::<u32>().ok())
                    .and_then(|pid| procs::from_host(&host.namespace, pid))
                    .is_some();
                lines.push(format!("  service {service}: {}", if running { "running" } else { "stopped" }));
            }
            for cluster in self.state.clusters.iter().filter(|c| c.host == host.name) {
                let running = procs::postmaster(&cluster.data_dir, &host.namespace).is_some();
                let role = if cluster.data_dir.join("standby.signal").exists() { "standby" } else { "primary" };
                lines.push(format!("  postgres {} port {}: {} ({role})", cluster.name, cluster.port, if running { "running" } else { "stopped" }));
            }
        }
        lines
    }
}

/// The `opsh-lab` binary (it also serves the node proxy): this program when it is `opsh-lab`,
/// otherwise the one beside the running executable (tests run from target/debug/deps).
pub fn helper_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    if exe.file_name().is_some_and(|n| n == "opsh-lab") {
        return Ok(exe);
    }
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("opsh-lab");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("cannot find the opsh-lab binary next to {}; build it with `cargo build -p opsh-lab`", exe.display())
}

/// A lab file's content for `host`: `{{self}}` is the host's name, `{{addr:NAME}}` a lab host's
/// address and `{{dns:NAME}}` its DNS name (see [`dns_name`]), `{{addr:self}}` / `{{dns:self}}` its own
/// address (hosts get `127.42.BLOCK.10`, `.11`, … in topology order).
fn render(content: &str, host: &str, topology: &Topology, block: u8) -> String {
    let mut out =
        content.replace("{{addr:self}}", &format!("{{{{addr:{host}}}}}")).replace("{{dns:self}}", &format!("{{{{dns:{host}}}}}")).replace("{{self}}", host);
    for (i, spec) in topology.hosts.iter().enumerate() {
        out = out.replace(&format!("{{{{addr:{}}}}}", spec.name), &format!("127.42.{block}.{}", 10 + i));
        out = out.replace(&format!("{{{{dns:{}}}}}", spec.name), &dns_name(&spec.name, block));
    }
    out
}

fn merge(into: &mut toml::Table, extra: &toml::Table) {
    for (key, value) in extra {
        match (into.get_mut(key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(more)) => merge(existing, more),
            _ => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

fn require_root() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if fs::metadata("/proc/self")?.uid() != 0 {
        bail!("the lab needs root: it creates the lab user, binds sshd and makes mount namespaces (run as root, e.g. in CI or a VM)");
    }
    Ok(())
}

/// The lab user's uid and gid.
pub fn lab_ids() -> Result<(u32, u32)> {
    let uid = String::from_utf8(run(Command::new("id").args(["-u", LAB_USER]))?.stdout)?.trim().parse()?;
    let gid = String::from_utf8(run(Command::new("id").args(["-g", LAB_USER]))?.stdout)?.trim().parse()?;
    Ok((uid, gid))
}

/// A line for the lab user's ~/.pgpass (another database user than opsh, e.g. the ones xDB
/// records), by address and by DNS name; lines of other labs are kept.
pub fn add_server_pgpass(lab: &Lab, cluster: &ClusterState, user: &str, password: &str) -> Result<()> {
    let mut names = vec![cluster.address.clone()];
    names.extend(lab.host(&cluster.host)?.dns.clone());
    let (uid, gid) = lab_ids()?;
    edit_server_pgpass(uid, gid, |text| {
        let mut text = text.to_string();
        for name in names {
            text.push_str(&format!("{name}:{}:*:{user}:{password}\n", cluster.port));
        }
        text
    })
}

/// The lab user's ~/.pgpass is shared by every lab on the machine: it is read and rewritten
/// under a lock, or two labs starting at once lose each other's lines (slonik then finds no
/// password).
fn edit_server_pgpass(uid: u32, gid: u32, change: impl FnOnce(&str) -> String) -> Result<()> {
    const LOCK: &str = "/run/opsh-lab-pgpass.lock";
    let path = PathBuf::from(format!("/home/{LAB_USER}/.pgpass"));
    let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(LOCK).with_context(|| format!("opening {LOCK}"))?;
    lock.lock()?;
    if let Some(home) = path.parent() {
        fs::create_dir_all(home)?;
    }
    let text = fs::read_to_string(&path).unwrap_or_default();
    write_private(&path, &change(&text))?;
    chown(&path, uid, gid)
}

fn ensure_lab_user() -> Result<(u32, u32)> {
    let exists = Command::new("id").args(["-u", LAB_USER]).stdout(Stdio::null()).stderr(Stdio::null()).status()?.success();
    if !exists {
        // Two labs may race to create the user: accept "already exists".
        let _ = Command::new("useradd").args(["--create-home", "--shell", "/bin/sh", LAB_USER]).output()?;
    }
    // useradd leaves the account locked ('!'); with UsePAM no that blocks key login.
    run(Command::new("usermod").args(["-p", "*", LAB_USER]))?;
    let uid = String::from_utf8(run(Command::new("id").args(["-u", LAB_USER]))?.stdout)?.trim().parse()?;
    let gid = String::from_utf8(run(Command::new("id").args(["-g", LAB_USER]))?.stdout)?.trim().parse()?;
    Ok((uid, gid))
}

fn as_lab_user(passfile: Option<&Path>, program: &str, args: &[&str]) -> Result<Output> {
    let mut command = Command::new("setpriv");
    command.args(["--reuid", LAB_USER, "--regid", LAB_USER, "--init-groups", "--", program]).args(args).env("HOME", "/tmp").stdin(Stdio::null());
    if let Some(passfile) = passfile {
        command.env("PGPASSFILE", passfile);
    }
    command.output().with_context(|| format!("running {program} as {LAB_USER}"))
}

fn run(command: &mut Command) -> Result<Output> {
    let output = command.stdin(Stdio::null()).output().with_context(|| format!("running {command:?}"))?;
    check(&output, &format!("{command:?}"))?;
    Ok(output)
}

pub(crate) fn check(output: &Output, what: &str) -> Result<()> {
    if !output.status.success() {
        bail!("{what} failed: {}{}", String::from_utf8_lossy(&output.stderr).trim(), String::from_utf8_lossy(&output.stdout).trim());
    }
    Ok(())
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).with_context(|| format!("chown {}", path.display()))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    chown(path, uid, gid)?;
    if path.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn write_private(path: &Path, content: &str) -> Result<()> {
    fs::write(path, content)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn random_token(len: usize) -> Result<String> {
    let mut bytes = vec![0u8; len];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    Ok(bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn make_ca(dir: &Path) -> Result<()> {
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30", "-subj", "/CN=opsh lab CA", "-keyout"])
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(dir.join("ca.crt")))?;
    Ok(())
}

fn make_server_cert(dir: &Path, name: &str, address: &str, dns: Option<&str>) -> Result<()> {
    let ext = dir.join(format!("{name}.ext"));
    let dns = dns.map(|d| format!(",DNS:{d}")).unwrap_or_default();
    fs::write(&ext, format!("subjectAltName=IP:{address}{dns}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n"))?;
    run(Command::new("openssl")
        .args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", &format!("/CN={address}"), "-keyout"])
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.csr"))))?;
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-in"])
        .arg(dir.join(format!("{name}.csr")))
        .arg("-CA")
        .arg(dir.join("ca.crt"))
        .arg("-CAkey")
        .arg(dir.join("ca.key"))
        .arg("-CAcreateserial")
        .arg("-out")
        .arg(dir.join(format!("{name}.crt")))
        .arg("-extfile")
        .arg(&ext))?;
    Ok(())
}

fn wait_for_ssh(address: &str, port: u16, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect_timeout(&format!("{address}:{port}").parse()?, Duration::from_millis(200)) {
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut banner = [0u8; 8];
            if stream.read_exact(&mut banner).is_ok() && banner.starts_with(b"SSH-") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("sshd on {address}:{port} did not start: {}", fs::read_to_string(log).unwrap_or_default().trim())
}

/// Which lab directory holds which address block, machine-wide (`/run/opsh-lab/blocks/N`
/// holds the directory): two labs on one block would share addresses, and the second one's
/// hosts fail to start in ways that do not say why.
pub mod blocks {
    use std::fs;
    use std::path::{Path, PathBuf};

    use anyhow::{Context, Result, bail};

    const DIR: &str = "/run/opsh-lab/blocks";

    fn file(block: u8) -> PathBuf {
        Path::new(DIR).join(block.to_string())
    }

    /// The directory of the lab that holds `block`, if it still runs.
    pub fn holder(block: u8) -> Option<PathBuf> {
        let dir = PathBuf::from(fs::read_to_string(file(block)).ok()?.trim());
        super::Lab::open(&dir).ok().filter(|lab| lab.running()).map(|_| dir)
    }

    /// Take `block` for the lab in `dir`, or say which running lab has it.
    pub fn claim(block: u8, dir: &Path) -> Result<()> {
        if let Some(other) = holder(block).filter(|other| other != dir) {
            bail!(
                "address block 127.42.{block}.0/24 is in use by the lab in {} — stop it (scripts/lab down --dir {}) or choose another --block",
                other.display(),
                other.display()
            );
        }
        fs::create_dir_all(DIR).with_context(|| format!("creating {DIR}"))?;
        fs::write(file(block), dir.display().to_string()).with_context(|| format!("writing {}", file(block).display()))
    }

    /// Give `block` back (only if `dir` holds it).
    pub fn release(block: u8, dir: &Path) {
        if fs::read_to_string(file(block)).is_ok_and(|held| Path::new(held.trim()) == dir) {
            let _ = fs::remove_file(file(block));
        }
    }

    /// Every running lab: (block, directory).
    pub fn all() -> Vec<(u8, PathBuf)> {
        let Ok(entries) = fs::read_dir(DIR) else { return Vec::new() };
        let mut labs: Vec<(u8, PathBuf)> =
            entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u8>().ok()).filter_map(|block| Some((block, holder(block)?))).collect();
        labs.sort();
        labs
    }
}

/// A lab host's DNS name: unique per address block, in a domain that never resolves elsewhere.
pub fn dns_name(host: &str, block: u8) -> String {
    format!("{host}.b{block}.{DNS_DOMAIN}")
}

/// The bin dirs of a host's OpenTenBase members (`/usr/local/bin` for those that name none).
fn otb_bin_dirs(topology: &Topology, host: &str) -> Vec<String> {
    let otb = topology.clusters.iter().any(|c| c.pgxc.is_some()) || !topology.gtms.is_empty();
    if !otb {
        return Vec::new();
    }
    let mut dirs: Vec<String> = topology
        .clusters
        .iter()
        .filter(|c| c.host == host && c.pgxc.is_some())
        .map(|c| c.bin_dir.clone())
        .chain(topology.gtms.iter().filter(|g| g.host == host).map(|g| g.bin_dir.clone()))
        .map(|d| d.unwrap_or_else(|| "/usr/local/bin".into()))
        .collect();
    if dirs.is_empty() {
        // A server of the cluster with no member of its own still has the tools on its PATH.
        dirs.push("/usr/local/bin".into());
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

/// The lab's names in /etc/hosts: one marked block per address block, written and removed under
/// a lock (several labs may start at once), every other line left as it is.
pub mod hosts_file {
    use std::fs;
    use std::path::Path;

    use anyhow::{Context, Result};

    const PATH: &str = "/etc/hosts";
    const LOCK: &str = "/run/opsh-lab-hosts.lock";

    fn begin(block: u8) -> String {
        format!("# BEGIN opsh-lab block {block}")
    }

    fn end(block: u8) -> String {
        format!("# END opsh-lab block {block}")
    }

    fn without_block(text: &str, block: u8) -> String {
        let mut out = String::new();
        let mut inside = false;
        for line in text.lines() {
            if line.starts_with(&begin(block)) {
                inside = true;
            } else if line == end(block) {
                inside = false;
            } else if !inside {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn edit(change: impl FnOnce(&str) -> String) -> Result<()> {
        let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(LOCK).with_context(|| format!("opening {LOCK}"))?;
        lock.lock()?;
        let text = fs::read_to_string(PATH).with_context(|| format!("reading {PATH}"))?;
        let new = change(&text);
        if new != text {
            // In place: /etc/hosts is often a bind mount that a rename cannot replace.
            fs::write(PATH, new).with_context(|| format!("writing {PATH}"))?;
        }
        Ok(())
    }

    /// (address, name) entries of the lab in `dir` on block `block`; none removes the block.
    pub fn set_block(block: u8, dir: &Path, entries: &[(String, String)]) -> Result<()> {
        edit(|text| {
            let mut out = without_block(text, block);
            if !entries.is_empty() {
                out.push_str(&format!("{} ({})\n", begin(block), dir.display()));
                for (address, name) in entries {
                    out.push_str(&format!("{address} {name}\n"));
                }
                out.push_str(&end(block));
                out.push('\n');
            }
            out
        })
    }

    pub fn remove_block(block: u8, dir: &Path) -> Result<()> {
        set_block(block, dir, &[])
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn a_block_is_replaced_and_removed_and_nothing_else_changes() {
            let base = "127.0.0.1 localhost\n";
            let with = format!(
                "{base}# BEGIN opsh-lab block 7 (/tmp/x)\n127.42.7.10 a.b7.opsh-lab.test\n# END opsh-lab block 7\n# BEGIN opsh-lab block 8 (/tmp/y)\n127.42.8.10 a.b8.opsh-lab.test\n# END opsh-lab block 8\n"
            );
            assert_eq!(
                super::without_block(&with, 7),
                format!("{base}# BEGIN opsh-lab block 8 (/tmp/y)\n127.42.8.10 a.b8.opsh-lab.test\n# END opsh-lab block 8\n")
            );
            assert_eq!(super::without_block(&super::without_block(&with, 7), 8), base);
        }
    }
}
