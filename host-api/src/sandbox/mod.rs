//! The plugin sandbox: wasmtime components with nothing from WASI (no preopened directories, no
//! sockets, no environment), a CPU budget per call enforced by epoch interruption, a memory
//! limit, and a fresh `Store` per call (a trap poisons a store; a new one costs ~20 µs).
//! Compiled components are cached on disk, so a warm start does not recompile.

pub mod bindings;
pub mod ctx;
mod output;
pub(crate) mod size;

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use self::bindings::runbook::{CheckResult, CommandError, Invocation, PluginInfo, Table, Text};
use self::bindings::{Plugin, PluginPre};
pub use self::ctx::{CallCtx, Events};
use self::output::GuestOutput;
use crate::capability::{Capabilities, Phase};
use crate::grants::Capability;
use crate::plan::{Plan, Step as PlanStep};
use crate::probe::{self, ProbePattern};

/// One epoch tick.
const TICK: Duration = Duration::from_millis(10);
/// How long a guest computes at most before it yields to the runtime (see `store`).
const YIELD_EVERY: Duration = Duration::from_millis(100);
/// `describe()` runs at every start for a plugin not in the describe cache: it must be quick.
const DESCRIBE_DEADLINE: Duration = Duration::from_secs(2);
/// How long a failed `describe()` is remembered.
const FAILED_DESCRIBE_KEPT: Duration = Duration::from_secs(600);
/// How much of a guest's stdout/stderr is kept for crash messages (its last bytes).
const GUEST_OUTPUT_KEPT: usize = 64 * 1024;
/// The most data a guest may pass to the host at once — in one capability call (SQL text, a
/// file's new content, argv …) or as one call's result — counted by wasmtime as it copies: above
/// the largest file a plugin may write, far below what would strain the host.
const HOSTCALL_FUEL: usize = 40 << 20;

#[derive(Debug, Clone)]
pub struct Limits {
    /// CPU time the guest may use in one call; time spent in capability calls does not count.
    pub cpu_per_call: Duration,
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { cpu_per_call: Duration::from_secs(5), memory_bytes: 256 << 20 }
    }
}

impl Limits {
    /// The defaults, overridden by `OPSH_PLUGIN_CPU_MS` and `OPSH_PLUGIN_MEMORY_MB` when set.
    pub fn from_env() -> Self {
        let mut limits = Self::default();
        let number = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()).filter(|n| *n > 0);
        if let Some(ms) = number("OPSH_PLUGIN_CPU_MS") {
            limits.cpu_per_call = Duration::from_millis(ms);
        }
        if let Some(mb) = number("OPSH_PLUGIN_MEMORY_MB") {
            limits.memory_bytes = (mb as usize) << 20;
        }
        limits
    }
}

/// Where a plugin came from.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "path")]
pub enum Origin {
    Bundled,
    File(PathBuf),
}

pub struct LoadedPlugin {
    pub info: PluginInfo,
    pub origin: Origin,
    /// Hex SHA-256 of the component's bytes: with its name, the plugin's identity (a grant can
    /// be pinned to it).
    pub sha256: String,
    /// What it declared in `describe()`, enforced on every call.
    pub declared: Arc<Declared>,
    pre: Pre,
}

/// A plugin ready to instantiate, by the WIT version it was built against.
enum Pre {
    V1(PluginPre<CallCtx>),
    V2(bindings::v2::PluginPre<CallCtx>),
}

impl LoadedPlugin {
    /// The opsh:plugin version it was built against.
    pub fn wit_version(&self) -> &'static str {
        match self.pre {
            Pre::V1(_) => "0.1",
            Pre::V2(_) => "0.2",
        }
    }
}

/// What a plugin declares in `describe().capabilities`, and the host holds it to: a capability
/// it did not declare is denied, and its declared probes are what a topology that names it lets
/// it run while nothing may change.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    pub capabilities: BTreeSet<Capability>,
    pub probes: Vec<ProbePattern>,
}

impl Declared {
    fn parse(entries: &[String]) -> Result<Self, String> {
        let mut declared = Self { probes: probe::declared(entries)?, ..Self::default() };
        for entry in entries.iter().filter(|e| !e.starts_with(probe::DECLARED_PREFIX)) {
            let capability = Capability::from_key(entry)
                .ok_or_else(|| format!("declares the capability {entry:?}; opsh:plugin@0.1.0 has sql, ssh, file-edit, service and probe:PATTERN"))?;
            declared.capabilities.insert(capability);
        }
        Ok(declared)
    }

    /// The `capabilities` entries that are not probes, for `opsh plugins`.
    pub fn capability_names(&self) -> Vec<String> {
        self.capabilities.iter().map(ToString::to_string).collect()
    }
}

impl LoadedPlugin {
    pub fn name(&self) -> &str {
        &self.info.name
    }
}

/// A plugin call that did not return normally: the guest trapped, ran out of CPU or memory,
/// or could not be instantiated. The shell goes on; the message says what happened.
#[derive(Debug, Clone)]
pub struct PluginCrash {
    pub plugin: String,
    pub message: String,
}

impl std::fmt::Display for PluginCrash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plugin {} failed: {}", self.plugin, self.message)
    }
}

impl std::error::Error for PluginCrash {}

/// What a read command returned, and whether anything it asked answered at all.
pub struct Reading {
    pub tables: Vec<Table>,
    /// It asked, and not one target answered: which and why.
    pub none_answered: Option<String>,
}

/// What a plugin's command call came back with.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The plugin said no (usage error, refused pre-check, capability failure …).
    Command(CommandError),
    Crash(PluginCrash),
}

pub struct Sandbox {
    engine: Engine,
    linker: Linker<CallCtx>,
    cache_dir: PathBuf,
    pub limits: Limits,
}

impl Sandbox {
    /// The engine every plugin runs on (benches compile with the same one).
    pub fn engine_config() -> Config {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        config
    }

    pub fn new(cache_dir: PathBuf, limits: Limits) -> Result<Self> {
        let engine = Engine::new(&Self::engine_config()).map_err(|e| anyhow::anyhow!("starting the wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |ctx| ctx).map_err(|e| anyhow::anyhow!("linking the opsh API: {e}"))?;
        bindings::v2::gather::add_to_linker::<_, HasSelf<_>>(&mut linker, |ctx| ctx).map_err(|e| anyhow::anyhow!("linking opsh:plugin/gather: {e}"))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("opsh-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .context("starting the plugin deadline ticker")?;
        Ok(Self { engine, linker, cache_dir, limits })
    }

    /// Compile (or load from the cache) and describe a plugin component.
    pub async fn load(&self, bytes: &[u8], origin: Origin, caps: &Arc<Capabilities>, events: &Arc<dyn Events>) -> Result<LoadedPlugin> {
        let where_ = match &origin {
            Origin::Bundled => "bundled plugin".to_string(),
            Origin::File(path) => format!("plugin file {}", path.display()),
        };
        let sha256 = hex::encode(Sha256::digest(bytes));
        let component = self.compile(bytes, &sha256).with_context(|| format!("{where_} is not a valid opsh plugin component"))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow::anyhow!("{where_} needs imports this opsh does not provide ({e}); it was built for another opsh:plugin version"))?;
        // The newest version it exports, then the older ones.
        let pre = match bindings::v2::PluginPre::new(pre.clone()) {
            Ok(v2) => Pre::V2(v2),
            Err(e2) => Pre::V1(
                PluginPre::new(pre)
                    .map_err(|e1| anyhow::anyhow!("{where_} exports neither opsh:plugin/runbook@0.2 ({e2}) nor opsh:plugin/runbook@0.1.0 ({e1})"))?,
            ),
        };
        let cached = self.cache_dir.join(format!("{sha256}-{}.describe.json", env!("CARGO_PKG_VERSION")));
        // A failed describe() is remembered for a while (a stalling one would cost every start
        // its deadline), not for ever (it may have failed on a machine under load).
        let failed = cached.with_extension("failed");
        let recent = std::fs::metadata(&failed).and_then(|m| m.modified()).ok().and_then(|at| at.elapsed().ok()).is_some_and(|age| age < FAILED_DESCRIBE_KEPT);
        if recent && let Ok(message) = std::fs::read_to_string(&failed) {
            anyhow::bail!(
                "{where_}: describe() failed: {message} (at an earlier start: opsh remembers it by the component's hash for {} minutes; delete {} to try again now)",
                FAILED_DESCRIBE_KEPT.as_secs() / 60,
                failed.display()
            );
        }
        let mut plugin = LoadedPlugin { info: placeholder_info(), origin, sha256, declared: Arc::default(), pre };
        // What describe() returns depends on the component's bytes alone (it may use no
        // capability): a warm start reads it from the cache and runs no plugin code at all —
        // nor does it run a describe() that failed before.
        let info = match std::fs::read(&cached).ok().and_then(|bytes| serde_json::from_slice::<PluginInfo>(&bytes).ok()) {
            Some(info) => info,
            None => {
                let info = match self.describe(&plugin, caps, events).await {
                    Ok(info) => info,
                    Err(crash) => {
                        if std::fs::create_dir_all(&self.cache_dir).is_ok() {
                            let _ = std::fs::write(&failed, &crash.message);
                        }
                        anyhow::bail!("{where_}: describe() failed: {}", crash.message);
                    }
                };
                if let Ok(json) = serde_json::to_vec(&info) {
                    let tmp = cached.with_extension(format!("{}.tmp", std::process::id()));
                    if std::fs::create_dir_all(&self.cache_dir).is_ok() && std::fs::write(&tmp, json).is_ok() {
                        let _ = std::fs::rename(&tmp, &cached);
                    }
                }
                info
            }
        };
        if info.name.is_empty() || !info.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            anyhow::bail!("{where_} calls itself {:?}; a plugin name is letters, digits and '-'", info.name);
        }
        check_described(&info).map_err(|problem| anyhow::anyhow!("{where_} (plugin {}): describe() {problem}", info.name))?;
        let declared = Declared::parse(&info.capabilities).map_err(|problem| anyhow::anyhow!("{where_} (plugin {}): describe() {problem}", info.name))?;
        plugin.declared = Arc::new(declared);
        plugin.info = info;
        Ok(plugin)
    }

    fn compile(&self, bytes: &[u8], sha256: &str) -> Result<Component> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        let key = format!("{}-{:016x}", &sha256[..32.min(sha256.len())], hasher.finish());
        let path = self.cache_dir.join(format!("{key}.cwasm"));
        if path.exists() {
            match load_cached(&self.engine, &path) {
                Ok(component) => return Ok(component),
                Err(_) => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        // The cache is an optimisation: failing to write it only costs the next start a compile.
        if let Ok(serialized) = component.serialize() {
            let _ = std::fs::create_dir_all(&self.cache_dir);
            let tmp = self.cache_dir.join(format!(".{key}.{}.tmp", std::process::id()));
            if std::fs::write(&tmp, serialized).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
        Ok(component)
    }

    fn store(
        &self,
        plugin: &LoadedPlugin,
        phase: Phase,
        caps: &Arc<Capabilities>,
        events: &Arc<dyn Events>,
        locale: &str,
        stderr: GuestOutput,
    ) -> Store<CallCtx> {
        let name = if plugin.info.name.is_empty() { "(loading)" } else { plugin.info.name.as_str() };
        let defaults = &caps.inventory.defaults;
        let wall_limit = match phase {
            Phase::Describe => (DESCRIBE_DEADLINE, "describe() may take no longer"),
            Phase::Apply => (Duration::from_millis(defaults.apply_timeout_ms), "inventory [defaults] apply-timeout-ms"),
            _ => (Duration::from_millis(defaults.call_timeout_ms), "inventory [defaults] call-timeout-ms"),
        };
        let wasi = WasiCtxBuilder::new().stdout(stderr.clone()).stderr(stderr).build();
        let limits = StoreLimitsBuilder::new().memory_size(self.limits.memory_bytes).trap_on_grow_failure(true).build();
        let ctx = CallCtx {
            plugin: name.to_string(),
            declared: plugin.declared.clone(),
            phase,
            caps: caps.clone(),
            events: events.clone(),
            locale: locale.to_string(),
            wasi,
            table: ResourceTable::new(),
            limits,
            started: Instant::now(),
            host_time: Duration::ZERO,
            cpu_budget: self.limits.cpu_per_call,
            ran_out_of_cpu: false,
            deadline: Instant::now() + wall_limit.0,
            wall_limit,
            past_deadline: false,
            logged: Default::default(),
            approved: None,
            told_of_secret: Default::default(),
            outages: Default::default(),
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|ctx| &mut ctx.limits);
        store.set_hostcall_fuel(HOSTCALL_FUEL);
        // The guest is looked at whenever its CPU budget or its wall-clock deadline could be up,
        // and at least every YIELD_EVERY it yields to the runtime: a Ctrl-C that cancels a read
        // or a plan is seen at once, even while the guest only computes.
        store.set_epoch_deadline(ticks(self.limits.cpu_per_call.min(wall_limit.0).min(YIELD_EVERY)));
        store.epoch_deadline_callback(move |mut ctx| {
            let data = ctx.data_mut();
            let used = data.guest_time();
            let wall_left = data.deadline.saturating_duration_since(Instant::now());
            if wall_left.is_zero() {
                data.past_deadline = true;
                Ok(UpdateDeadline::Interrupt)
            } else if used >= data.cpu_budget {
                data.ran_out_of_cpu = true;
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(ticks((data.cpu_budget - used).min(wall_left).min(YIELD_EVERY)).max(1)))
            }
        });
        store
    }

    /// A fresh store and instance for one call of a plugin export.
    async fn instance(
        &self,
        plugin: &LoadedPlugin,
        phase: Phase,
        caps: &Arc<Capabilities>,
        events: &Arc<dyn Events>,
        locale: &str,
    ) -> Result<Call, PluginCrash> {
        let name = if plugin.info.name.is_empty() { "(loading)" } else { plugin.info.name.as_str() };
        let stderr = GuestOutput::new(GUEST_OUTPUT_KEPT);
        let mut store = self.store(plugin, phase, caps, events, locale, stderr.clone());
        let instance = match &plugin.pre {
            Pre::V1(pre) => pre.instantiate_async(&mut store).await.map(Instance::V1),
            Pre::V2(pre) => pre.instantiate_async(&mut store).await.map(Instance::V2),
        };
        match instance {
            Ok(instance) => Ok(Call { instance, store, stderr }),
            Err(e) => Err(PluginCrash { plugin: name.to_string(), message: describe_crash(&store, &e, &stderr, &self.limits) }),
        }
    }

    fn crash(&self, call: &Call, error: wasmtime::Error) -> PluginCrash {
        PluginCrash { plugin: call.store.data().plugin.clone(), message: describe_crash(&call.store, &error, &call.stderr, &self.limits) }
    }

    async fn describe(&self, plugin: &LoadedPlugin, caps: &Arc<Capabilities>, events: &Arc<dyn Events>) -> Result<PluginInfo, PluginCrash> {
        let mut call = self.instance(plugin, Phase::Describe, caps, events, "en").await?;
        let result = match &call.instance {
            Instance::V1(i) => i.opsh_plugin0_1_0_runbook().call_describe(&mut call.store).await,
            Instance::V2(i) => i.opsh_plugin0_2_1_runbook().call_describe(&mut call.store).await.and_then(|info| same_shape(&info)),
        };
        result.map_err(|e| self.crash(&call, e))
    }

    pub async fn read(
        &self,
        plugin: &LoadedPlugin,
        invocation: &Invocation,
        caps: &Arc<Capabilities>,
        events: &Arc<dyn Events>,
        locale: &str,
    ) -> Result<Reading, CallError> {
        let mut call = self.instance(plugin, Phase::Read, caps, events, locale).await.map_err(CallError::Crash)?;
        reach_ahead(&mut call, plugin, caps).await;
        let result = match &call.instance {
            Instance::V1(i) => i.opsh_plugin0_1_0_runbook().call_read(&mut call.store, invocation).await,
            Instance::V2(i) => from_v2(i.opsh_plugin0_2_1_runbook().call_read(&mut call.store, &v2_call(invocation)).await),
        };
        let tables = within(&call, flatten(result.map_err(|e| self.crash(&call, e))), |t| size::tables(t))?;
        Ok(Reading { tables, none_answered: call.store.data().outages.none_answered() })
    }

    /// The plan, as opsh keeps it whatever WIT version the plugin was built against (a 0.1
    /// plugin's steps are its own to apply; a 0.2 plugin's are the host's unless custom).
    pub async fn plan(
        &self,
        plugin: &LoadedPlugin,
        invocation: &Invocation,
        caps: &Arc<Capabilities>,
        events: &Arc<dyn Events>,
        locale: &str,
    ) -> Result<Plan, CallError> {
        let mut call = self.instance(plugin, Phase::Plan, caps, events, locale).await.map_err(CallError::Crash)?;
        reach_ahead(&mut call, plugin, caps).await;
        let result = match &call.instance {
            Instance::V1(i) => i.opsh_plugin0_1_0_runbook().call_plan(&mut call.store, invocation).await.map(|r| r.map(|p| Plan::from(&p))),
            Instance::V2(i) => from_v2(i.opsh_plugin0_2_1_runbook().call_plan(&mut call.store, &v2_call(invocation)).await.map(|r| r.map(|p| Plan::from(&p)))),
        };
        within(&call, flatten(result.map_err(|e| self.crash(&call, e))), size::plan)
    }

    pub async fn apply(
        &self,
        plugin: &LoadedPlugin,
        invocation: &Invocation,
        step: &PlanStep,
        caps: &Arc<Capabilities>,
        events: &Arc<dyn Events>,
        locale: &str,
    ) -> Result<Text, CallError> {
        let mut call = self.instance(plugin, Phase::Apply, caps, events, locale).await.map_err(CallError::Crash)?;
        if let crate::plan::Runner::Custom(_) = &step.runs {
            call.store.data_mut().approved = Some(ctx::Approved::new(step.effects.clone()));
        }
        let result = match &call.instance {
            Instance::V1(i) => i.opsh_plugin0_1_0_runbook().call_apply(&mut call.store, invocation, &step.into()).await,
            Instance::V2(i) => from_v2(i.opsh_plugin0_2_1_runbook().call_apply(&mut call.store, &v2_call(invocation), &step.into()).await),
        };
        within(&call, flatten(result.map_err(|e| self.crash(&call, e))), size::note)
    }

    pub async fn check(
        &self,
        plugin: &LoadedPlugin,
        invocation: &Invocation,
        step: &PlanStep,
        caps: &Arc<Capabilities>,
        events: &Arc<dyn Events>,
        locale: &str,
    ) -> Result<CheckResult, CallError> {
        let mut call = self.instance(plugin, Phase::Verify, caps, events, locale).await.map_err(CallError::Crash)?;
        let result = match &call.instance {
            Instance::V1(i) => i.opsh_plugin0_1_0_runbook().call_check(&mut call.store, invocation, &step.into()).await,
            Instance::V2(i) => from_v2(i.opsh_plugin0_2_1_runbook().call_check(&mut call.store, &v2_call(invocation), &step.into()).await),
        };
        within(&call, flatten(result.map_err(|e| self.crash(&call, e))), |c| size::note(&c.detail))
    }

    pub async fn verify(
        &self,
        plugin: &LoadedPlugin,
        invocation: &Invocation,
        caps: &Arc<Capabilities>,
        events: &Arc<dyn Events>,
        locale: &str,
    ) -> Result<Vec<Table>, CallError> {
        let mut call = self.instance(plugin, Phase::Verify, caps, events, locale).await.map_err(CallError::Crash)?;
        reach_ahead(&mut call, plugin, caps).await;
        let result = match &call.instance {
            Instance::V1(i) => i.opsh_plugin0_1_0_runbook().call_verify(&mut call.store, invocation).await,
            Instance::V2(i) => from_v2(i.opsh_plugin0_2_1_runbook().call_verify(&mut call.store, &v2_call(invocation)).await),
        };
        within(&call, flatten(result.map_err(|e| self.crash(&call, e))), |t| size::tables(t))
    }
}

/// Before a reading call (not a step's check, polled many times while applying): reach every
/// target the plugin could touch at once, so that what does not answer costs the call one
/// connect timeout in all (`capability::reach`). The time is the host's, not the guest's CPU.
async fn reach_ahead(call: &mut Call, plugin: &LoadedPlugin, caps: &Arc<Capabilities>) {
    let started = Instant::now();
    let outages = caps.reach_ahead(&plugin.info.name, &plugin.declared.capabilities).await;
    let data = call.store.data_mut();
    data.outages = Arc::new(outages);
    data.host_time += started.elapsed();
}

/// 0.2's describe, invocation, table, check and error types are 0.1's in shape (the same names
/// and fields): serde carries a value from one version's type to the other's.
fn same_shape<A: serde::Serialize, B: serde::de::DeserializeOwned>(value: &A) -> wasmtime::Result<B> {
    serde_json::to_value(value).and_then(serde_json::from_value).map_err(|e| wasmtime::Error::msg(format!("converting between opsh:plugin versions: {e}")))
}

fn from_v2<T2: serde::Serialize, T1: serde::de::DeserializeOwned>(
    result: wasmtime::Result<Result<T2, bindings::v2::runbook::CommandError>>,
) -> wasmtime::Result<Result<T1, CommandError>> {
    match result? {
        Ok(value) => Ok(Ok(same_shape(&value)?)),
        Err(error) => Ok(Err(same_shape(&error)?)),
    }
}

fn v2_call(invocation: &Invocation) -> bindings::v2::runbook::Invocation {
    (&crate::plan::Invocation::from(invocation)).into()
}

/// The plugin's instance, by the WIT version it was built against.
enum Instance {
    V1(Plugin),
    V2(bindings::v2::Plugin),
}

/// One plugin call in progress.
struct Call {
    instance: Instance,
    store: Store<CallCtx>,
    stderr: GuestOutput,
}

/// A result the host can show: within its bounds, and an error message of a sane length.
fn within<T>(call: &Call, result: Result<T, CallError>, bound: impl Fn(&T) -> Result<(), String>) -> Result<T, CallError> {
    let crash = |message| CallError::Crash(PluginCrash { plugin: call.store.data().plugin.clone(), message });
    match result {
        Ok(value) => bound(&value).map(|()| value).map_err(crash),
        Err(CallError::Command(error)) => Err(CallError::Command(size::error(error))),
        Err(other) => Err(other),
    }
}

fn flatten<T>(result: Result<Result<T, CommandError>, PluginCrash>) -> Result<T, CallError> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(CallError::Command(e)),
        Err(crash) => Err(CallError::Crash(crash)),
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_millis() / TICK.as_millis()).max(1) as u64
}

#[allow(unsafe_code)]
fn load_cached(engine: &Engine, path: &Path) -> Result<Component> {
    // SAFETY: only files this host wrote into its own cache directory are loaded, keyed by the
    // component's hash and the engine's compatibility hash; wasmtime checks the header too.
    unsafe { Component::deserialize_file(engine, path) }.map_err(|e| anyhow::anyhow!("{e}"))
}

fn describe_crash(store: &Store<CallCtx>, error: &wasmtime::Error, stderr: &GuestOutput, limits: &Limits) -> String {
    let guest_output = String::from_utf8_lossy(&stderr.tail().0).trim().to_string();
    let data = store.data();
    let mut message = if data.past_deadline {
        format!(
            "it ran past its deadline of {:.0} s for one {} call ({}) and was stopped (a plugin that waits without end?)",
            data.wall_limit.0.as_secs_f32(),
            data.phase.name(),
            data.wall_limit.1
        )
    } else if data.ran_out_of_cpu {
        format!("it used more than {:.1} s of CPU in one call and was stopped (a runaway loop?)", limits.cpu_per_call.as_secs_f32())
    } else if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        match trap {
            wasmtime::Trap::UnreachableCodeReached if guest_output.contains("panicked") => "it panicked".to_string(),
            wasmtime::Trap::UnreachableCodeReached => "it aborted (trap: unreachable)".to_string(),
            other => format!("it trapped ({other})"),
        }
    } else {
        let root = format!("{}", error.root_cause());
        if root.contains("fuel allocated for hostcalls") {
            format!("it tried to pass more than {} MiB to opsh at once (in one capability call or one result) and was stopped", HOSTCALL_FUEL >> 20)
        } else if root.contains("memory") || root.contains("grow") {
            format!("it ran out of memory (limit {} MiB): {root}", limits.memory_bytes >> 20)
        } else {
            root
        }
    };
    if !guest_output.is_empty() {
        // Its last lines, each cut short: what a panic says fits in them.
        let tail: Vec<String> = guest_output
            .lines()
            .rev()
            .take(8)
            .map(|line| match line.char_indices().nth(300) {
                Some((at, _)) => format!("{} …", &line[..at]),
                None => line.to_string(),
            })
            .collect();
        message.push_str("; its output: ");
        message.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join(" | "));
    }
    message
}

/// What `describe()` returns is shown in completion menus, help and prompts: names are plain
/// words, completion choices carry no control characters or spaces.
fn check_described(info: &PluginInfo) -> Result<(), String> {
    use self::bindings::runbook::Completion;
    let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    let inert = |s: &str| {
        !s.is_empty() && !s.chars().any(|c| c.is_control() || c.is_whitespace() || matches!(c as u32, 0x200e | 0x200f | 0x202a..=0x202e | 0x2066..=0x2069))
    };
    if !info.version.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!("gives version {:?}: printable ASCII only", info.version));
    }
    for command in &info.commands {
        if !command.name.split(' ').all(word) {
            return Err(format!("names a command {:?}: words of a-z, 0-9, '-' and '_', one space apart", command.name));
        }
        for arg in &command.args {
            if !word(&arg.name) {
                return Err(format!("command {}: names an argument {:?}: a-z, 0-9, '-' and '_' only", command.name, arg.name));
            }
            if let Completion::Choices(choices) = &arg.completion
                && let Some(bad) = choices.iter().find(|c| !inert(c))
            {
                return Err(format!("command {} --{}: offers the completion {bad:?}, with spaces or control characters", command.name, arg.name));
            }
        }
    }
    Ok(())
}

fn placeholder_info() -> PluginInfo {
    PluginInfo {
        name: String::new(),
        version: String::new(),
        summary: Text { en: String::new(), ja: String::new() },
        commands: Vec::new(),
        capabilities: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::bindings::runbook::{ArgInfo, ArgKind, CommandInfo, CommandKind, Completion};
    use super::*;

    fn info(command: &str, arg: &str, choice: &str) -> PluginInfo {
        let t = || Text { en: "x".into(), ja: String::new() };
        PluginInfo {
            name: "p".into(),
            version: "1.0".into(),
            summary: t(),
            capabilities: vec![],
            commands: vec![CommandInfo {
                name: command.into(),
                kind: CommandKind::Read,
                summary: t(),
                help: t(),
                args: vec![ArgInfo {
                    name: arg.into(),
                    kind: ArgKind::Option,
                    required: false,
                    help: t(),
                    completion: Completion::Choices(vec![choice.into()]),
                }],
                examples: vec![],
            }],
        }
    }

    #[test]
    fn describe_names_are_plain_words_and_choices_inert() {
        assert!(check_described(&info("promote service-provider", "to", "fast")).is_ok());
        assert!(check_described(&info("promote\x1b[2K", "to", "fast")).is_err());
        assert!(check_described(&info("status", "to\r", "fast")).is_err());
        assert!(check_described(&info("status", "to", "fast\u{202e}")).is_err());
        assert!(check_described(&info("status", "to", "two words")).is_err());
    }
}
