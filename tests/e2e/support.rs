//! The test world: a lab, an opsh home (config, data, cache dirs) with the probe fixture plugin
//! installed as a third-party plugin, and helpers to run opsh and inspect the lab directly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use opsh_lab::{Lab, Topology};

/// The address blocks this test process's labs hold.
static IN_USE: std::sync::Mutex<std::collections::BTreeSet<u8>> = std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A lab address block, held until its World is gone (after its lab is down): far more labs run
/// in one test process than there are blocks. A block another lab still claims is never taken
/// (block 90 and below 2 are left to the drills and `scripts/lab`).
pub struct Block(pub u8);

impl Block {
    fn take() -> Block {
        loop {
            let mut used = IN_USE.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(block) = (100..=254).chain(2..=89).find(|b| !used.contains(b) && opsh_lab::lab::blocks::holder(*b).is_none()) {
                used.insert(block);
                return Block(block);
            }
            drop(used);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        IN_USE.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.0);
    }
}

pub struct World {
    pub lab: Lab,
    pub home: tempfile::TempDir,
    pub inventory: PathBuf,
    /// Last: given back once the lab is down.
    pub _block: Block,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // stderr first: it says what failed, and a long plan on stdout must not push it out of a cut log.
        write!(f, "exit {}\n--- stderr\n{}\n--- stdout\n{}", self.code, self.stderr, self.stdout)
    }
}

/// The grants the probe fixture gets on top of the lab's inventory. `ghost-db` is granted but
/// not in the inventory, to reach the "unknown target" path past the grant check.
pub const PROBE_GRANTS: &str = r#"
[grants.probe]
sql = ["alpha-app", "beta-app", "ghost-db"]
ssh = ["alpha", "beta", "ghost-host"]
file-edit = ["alpha:/usr/local/*", "beta:/usr/local/*"]
service = ["*:app"]
# The fixture runs what a test asks, as a probe: approved here for the tests' hosts only.
probes = ["sh -c *", "grep -c * *", "test -e *"]
"#;

pub fn target_dir() -> PathBuf {
    // target/debug/deps/e2e-HASH → target/debug
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/debug").to_path_buf()
}

/// `opsh ARGS…` with no lab and no inventory, its directories under `home`.
pub fn opsh_at(home: &Path, args: &[&str]) -> Run {
    Command::new(opsh_bin())
        .env("OPSH_CONFIG_DIR", home.join("config"))
        .env("OPSH_DATA_DIR", home.join("data"))
        .env("OPSH_CACHE_DIR", home.join("cache"))
        .env("NO_COLOR", "1")
        .env_remove("OPSH_INVENTORY")
        .stdin(Stdio::null())
        .args(args)
        .output()
        .map(run_of)
        .expect("run opsh")
}

pub fn opsh_bin() -> PathBuf {
    target_dir().join("opsh")
}

pub fn probe_wasm() -> PathBuf {
    target_dir().parent().expect("target").join("wasm-plugins/wasm32-wasip2/plugin/opsh_probe_plugin.wasm")
}

pub fn hostile_wasm() -> PathBuf {
    target_dir().parent().expect("target").join("wasm-plugins/wasm32-wasip2/plugin/opsh_hostile_plugin.wasm")
}

impl World {
    /// Install the hostile fixture plugin as FILE (under the data dir's plugins), optionally with
    /// its name patched in the component's bytes to another seven-letter name, and add
    /// `grants` (TOML) to the inventory.
    pub fn install_hostile(&self, file: &str, rename: Option<&str>, grants: &str) -> PathBuf {
        let mut bytes =
            std::fs::read(hostile_wasm()).unwrap_or_else(|e| panic!("the hostile fixture plugin was not built at {}: {e}", hostile_wasm().display()));
        if let Some(name) = rename {
            assert_eq!(name.len(), 7, "the patched name must be as long as `hostile`");
            let mut at = 0;
            while let Some(found) = bytes[at..].windows(7).position(|w| w == b"hostile") {
                bytes[at + found..at + found + 7].copy_from_slice(name.as_bytes());
                at += found + 7;
            }
        }
        let path = self.home.path().join("data/plugins").join(file);
        std::fs::write(&path, bytes).expect("install the hostile plugin");
        let mut inventory = std::fs::read_to_string(&self.inventory).expect("inventory");
        inventory.push_str(grants);
        std::fs::write(&self.inventory, inventory).expect("write inventory");
        path
    }

    pub fn new() -> World {
        Self::with_topology("basic")
    }

    pub fn with_topology(name: &str) -> World {
        let lease = Block::take();
        let block = lease.0;
        let dir = PathBuf::from(format!("/tmp/opsh-e2e/lab-{block}"));
        let topology = Topology::find(name).expect("topology");
        let lab = Lab::up(&topology, &dir, block).expect("lab up");
        let home = tempfile::Builder::new().prefix("opsh-e2e-home").tempdir().expect("home");
        std::fs::create_dir_all(home.path().join("data/plugins")).expect("plugin dir");
        assert!(probe_wasm().exists(), "the probe fixture plugin was not built at {}", probe_wasm().display());
        std::fs::copy(probe_wasm(), home.path().join("data/plugins/probe.wasm")).expect("install probe plugin");
        let inventory = home.path().join("inventory.toml");
        let mut text = std::fs::read_to_string(lab.inventory_path()).expect("lab inventory");
        text.push_str(PROBE_GRANTS);
        std::fs::write(&inventory, text).expect("write inventory");
        World { lab, home, inventory, _block: lease }
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(opsh_bin());
        command
            .env("OPSH_CONFIG_DIR", self.home.path().join("config"))
            .env("OPSH_DATA_DIR", self.home.path().join("data"))
            .env("OPSH_CACHE_DIR", self.home.path().join("cache"))
            .env("OPSH_PLUGIN_CPU_MS", "1000")
            .env("NO_COLOR", "1")
            .env_remove("OPSH_INVENTORY")
            .stdin(Stdio::null());
        command
    }

    /// `opsh --inventory INV ARGS…`, without a terminal.
    pub fn opsh(&self, args: &[&str]) -> Run {
        let output = self.command().arg("--inventory").arg(&self.inventory).args(args).output().expect("run opsh");
        run_of(output)
    }

    pub fn sql(&self, cluster: &str, db: &str, query: &str) -> String {
        let cluster = self.lab.cluster(cluster).expect("cluster").clone();
        self.lab.psql_as_admin(&cluster, db, query).expect("psql")
    }

    /// The password the lab gave its databases (to check it never shows up).
    pub fn password(&self) -> String {
        self.lab.password().expect("lab password")
    }

    /// Every file opsh wrote under its home, read as text.
    pub fn home_files(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        walk(self.home.path(), &mut out);
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, String::from_utf8_lossy(&bytes).to_string()));
        }
    }
}

pub fn run_of(output: Output) -> Run {
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
    }
}

/// The value in `column` of the first data row of the first table in JSON output.
pub fn json_cell(run: &Run, column: &str) -> String {
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"));
    let table = &doc["tables"][0];
    let index = table["columns"].as_array().and_then(|c| c.iter().position(|c| c == column)).unwrap_or_else(|| panic!("no column {column}: {run:?}"));
    table["rows"][0][index]["text"].as_str().unwrap_or_default().to_string()
}

pub fn sha256_hex(text: &str) -> String {
    sha256_hex_bytes(text.as_bytes())
}

pub fn sha256_hex_bytes(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

impl World {
    pub fn journal_dir(&self) -> PathBuf {
        self.home.path().join("data/journal")
    }

    /// Run ids in the journal, oldest first.
    pub fn runs(&self) -> Vec<String> {
        let mut runs: Vec<String> = std::fs::read_dir(self.journal_dir())
            .map(|entries| entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".jsonl")).map(str::to_string)).collect())
            .unwrap_or_default();
        runs.sort();
        runs
    }

    /// The complete records of a run's journal (a torn last line is skipped).
    pub fn records(&self, run: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.journal_dir().join(format!("{run}.jsonl"))).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Start opsh without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command().arg("--inventory").arg(&self.inventory).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn opsh")
    }
}

/// Poll until `ready` gives a value (or panic after `seconds`).
pub fn wait_for<T>(seconds: u64, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

pub fn signal(child: &std::process::Child, signal: i32) {
    opsh_lab::procs::signal(child.id(), signal);
}

impl World {
    /// Drive the interactive shell through a real terminal (script(1) gives it a pty): write each
    /// input, wait its pause, and return everything the terminal showed.
    pub fn repl(&self, inputs: &[(&[u8], u64)]) -> String {
        self.repl_in(inputs, false)
    }

    /// `repl` on a colour terminal (`TERM=xterm-256color`, no `NO_COLOR`).
    pub fn repl_in(&self, inputs: &[(&[u8], u64)], colour: bool) -> String {
        let output = self
            .terminal(colour)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                let mut stdin = child.stdin.take().expect("stdin");
                for (input, pause_ms) in inputs {
                    stdin.write_all(input)?;
                    std::thread::sleep(std::time::Duration::from_millis(*pause_ms));
                }
                drop(stdin);
                child.wait_with_output()
            })
            .expect("run the shell under script(1)");
        String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr)
    }
}

/// Wait for a spawned opsh and collect what it printed.
pub fn finish(mut child: std::process::Child) -> Run {
    let _ = child.wait();
    run_of(child.wait_with_output().expect("output"))
}

/// The newest run that is not one of `before`.
pub fn new_run(world: &World, before: &[String]) -> String {
    wait_for(20, "a new run in the journal", || world.runs().into_iter().find(|r| !before.contains(r)))
}

pub fn has(world: &World, run: &str, record: &str, index: usize) -> bool {
    world.records(run).iter().any(|r| r["record"] == record && r["index"] == index)
}

/// What the journal of `run` says the host sent equals, step by step and in order, what the
/// `--dry-run` JSON `planned` of the same command showed: byte for byte after address reveal
/// (a file edit by host and path: the preview shows its diff, the journal its hash). Every
/// step the host performs ran all of its effects. Returns how many effects were compared.
pub fn performed_as_shown(world: &World, planned: &serde_json::Value, run: &str) -> usize {
    let records = world.records(run);
    let steps = planned["steps"].as_array().unwrap_or_else(|| panic!("no steps in the planned JSON: {planned}"));
    let mut compared = 0;
    for (index, step) in steps.iter().enumerate() {
        let performed: Vec<&serde_json::Value> = records.iter().filter(|r| r["record"] == "performed" && r["index"] == index).map(|r| &r["effect"]).collect();
        if step["runs"] != "host" {
            assert!(performed.is_empty(), "step {} is not the host's, yet the host performed {performed:?}", step["id"]);
            continue;
        }
        let shown: Vec<&serde_json::Value> = step["effects"].as_array().into_iter().flatten().filter(|e| e["kind"] != "wait").collect();
        assert_eq!(performed.len(), shown.len(), "step {}: performed {performed:#?}\nshown {shown:#?}", step["id"]);
        for (done, said) in performed.iter().zip(&shown) {
            if said["kind"] == "file" {
                assert_eq!((&done["host"], &done["path"]), (&said["host"], &said["path"]), "step {}", step["id"]);
            } else {
                assert_eq!(*done, *said, "step {}: what was sent differs from what was shown", step["id"]);
            }
            compared += 1;
        }
    }
    compared
}

/// The interactive shell on a real terminal (script(1)), driven line by line: the test acts on
/// the lab between lines and waits for what the shell shows.
pub struct Shell {
    child: std::process::Child,
    input: std::process::ChildStdin,
    shown: std::sync::Arc<std::sync::Mutex<String>>,
}

impl World {
    /// The shell on a terminal (script(1)), with the plugins already compiled: a cold start
    /// under load can take longer than a test's first pause, and keys typed before the shell
    /// listens are not its test.
    fn terminal(&self, colour: bool) -> Command {
        let warm = self.opsh(&["plugins"]);
        assert_eq!(warm.code, 0, "{warm:?}");
        let command = format!("{} --inventory {}", opsh_bin().display(), self.inventory.display());
        let mut script = Command::new("script");
        script
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .env("OPSH_CONFIG_DIR", self.home.path().join("config"))
            .env("OPSH_DATA_DIR", self.home.path().join("data"))
            .env("OPSH_CACHE_DIR", self.home.path().join("cache"))
            .env("NO_COLOR", if colour { "" } else { "1" })
            .env("TERM", if colour { "xterm-256color" } else { "dumb" });
        script
    }

    pub fn shell(&self) -> Shell {
        let mut child = self.terminal(false).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("run the shell under script(1)");
        let input = child.stdin.take().expect("stdin");
        let mut output = child.stdout.take().expect("stdout");
        let shown = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = shown.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = output.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap_or_else(|p| p.into_inner()).push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Shell { child, input, shown }
    }
}

impl Shell {
    /// Type `line` and wait (at most `seconds`) until the shell has shown `until` once more than
    /// before it; what it showed for this line, and how long that took.
    pub fn run(&mut self, line: &str, until: &str, seconds: u64) -> (String, std::time::Duration) {
        self.keys(format!("{line}\n").as_bytes(), until, seconds)
    }

    /// Type `keys` (0x03 is Ctrl-C) without waiting for anything.
    pub fn type_keys(&mut self, keys: &[u8]) {
        use std::io::Write;
        self.input.write_all(keys).expect("type into the shell");
    }

    /// Type `keys`, then wait as `run` does.
    pub fn keys(&mut self, keys: &[u8], until: &str, seconds: u64) -> (String, std::time::Duration) {
        let (before, seen) = {
            let shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
            (shown.len(), shown.matches(until).count())
        };
        let started = std::time::Instant::now();
        self.type_keys(keys);
        wait_for(seconds, &format!("`{until}` after typing {:?}", String::from_utf8_lossy(keys)), || {
            let shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
            (shown.matches(until).count() > seen).then_some(())
        });
        let took = started.elapsed();
        // The rest of what this line shows (the tables after the marker).
        std::thread::sleep(std::time::Duration::from_millis(300));
        let shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        (shown[before..].to_string(), took)
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = self.input.write_all(b"exit\n");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
