//! Builds the plugins for `wasm32-wasip2` with a nested cargo (its own target directory: sharing
//! the outer one would deadlock on cargo's lock) and embeds the bundled ones in `opsh`.
//! The test fixture plugin is built alongside (one cargo run compiles the SDK once) but never
//! embedded.

use std::path::PathBuf;
use std::process::Command;

/// Crates embedded in the binary, by package name, with the name each plugin's describe() gives
/// itself: a one-shot `opsh otb status` compiles only the component named `otb` (the host
/// refuses a bundled plugin whose describe() says otherwise, so a wrong name here cannot route a
/// command to another plugin).
const BUNDLED: &[(&str, &str)] = &[
    ("opsh-plugin-pg", "pg"),
    ("opsh-plugin-opentenbase", "otb"),
    ("opsh-plugin-horizon-slony", "horizon"),
    ("opsh-plugin-tungsten", "tungsten"),
    ("opsh-plugin-edb-xdb", "xdb"),
];
/// Built for the tests only.
const FIXTURES: &[&str] = &["opsh-probe-plugin", "opsh-hostile-plugin", "opsh-v2-plugin", "opsh-gather-plugin"];
/// Those built against opsh:plugin@0.1.0 (the SDK without its `wit-0-2` feature): the fixtures
/// that keep proving a 0.1 plugin loads and runs. Every other plugin is on 0.2. A cargo run of
/// their own: features unify across the packages of one run.
const ON_WIT_0_1: &[&str] = &["opsh-probe-plugin", "opsh-hostile-plugin"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("shell/ lives in the workspace").to_path_buf();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target")).join("wasm-plugins");
    for path in ["plugins", "wit", "tests/fixtures", "Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }

    let all: Vec<&str> = BUNDLED.iter().map(|(package, _)| *package).chain(FIXTURES.iter().copied()).collect();
    let (older, newer): (Vec<&str>, Vec<&str>) = all.into_iter().partition(|p| ON_WIT_0_1.contains(p));
    for packages in [older, newer] {
        build_plugins(&root, &target_dir, &packages);
    }

    let wasm_dir = target_dir.join("wasm32-wasip2").join("plugin");
    let mut generated = String::from(
        "/// Plugin components embedded in this binary, each with the name it describes itself by.\npub static BUNDLED: &[opsh_host::plugins::Bundled] = &[\n",
    );
    for (package, name) in BUNDLED {
        let file = wasm_dir.join(format!("{}.wasm", package.replace('-', "_")));
        generated.push_str(&format!("    opsh_host::plugins::Bundled {{ name: {name:?}, component: include_bytes!({:?}) }},\n", file.display().to_string()));
    }
    generated.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bundled.rs");
    std::fs::write(out, generated).expect("writing bundled.rs");
}

/// One nested cargo run for these plugin crates.
fn build_plugins(root: &PathBuf, target_dir: &PathBuf, packages: &[&str]) {
    if packages.is_empty() {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(root).args(["build", "--quiet", "--target", "wasm32-wasip2", "--profile", "plugin", "--target-dir"]).arg(target_dir);
    for package in packages {
        command.args(["-p", package]);
    }
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().to_string();
        if key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_CFG_")
            || ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTC_WORKSPACE_WRAPPER", "CARGO_LLVM_COV"]
                .contains(&key.as_str())
        {
            command.env_remove(&key);
        }
    }
    let status = command.status().expect("running cargo to build the plugins");
    if !status.success() {
        panic!(
            "building the opsh plugins for wasm32-wasip2 failed (see above). If the target is missing: `rustup target add wasm32-wasip2` (scripts/test and scripts/demo do this)"
        );
    }
}
