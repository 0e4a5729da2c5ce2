//! The Debian package (`scripts/package`): built from the binary under test, installed into this
//! machine with dpkg, run there (`opsh --version`, `opsh doctor` against a lab, the man page and
//! the bash completion in place), and removed — removed also when the test fails.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{World, opsh_bin, run_of};

/// Removes the package when dropped, whatever the test did.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "opsh"]).output();
    }
}

fn installed() -> bool {
    Command::new("dpkg-query").args(["-W", "-f=${Status}", "opsh"]).output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

#[test]
fn the_debian_package_installs_runs_doctor_and_is_removed_without_a_trace() {
    assert!(!installed(), "an opsh package is already installed on this machine: remove it first (dpkg -r opsh); the test will not replace it");
    let world = World::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = Command::new(root.join("scripts/package")).arg("--binary").arg(opsh_bin()).current_dir(&root).output().map(run_of).expect("scripts/package");
    assert_eq!(built.code, 0, "{built:?}");
    let deb = root.join(built.stdout.trim());
    assert!(deb.exists(), "{built:?}");

    let _guard = Installed;
    let install = Command::new("dpkg").arg("-i").arg(&deb).output().map(run_of).expect("dpkg -i");
    assert_eq!(install.code, 0, "{install:?}");
    let version = Command::new("/usr/bin/opsh").arg("--version").output().map(run_of).expect("opsh --version");
    assert_eq!(version.stdout.trim(), format!("opsh {}", env!("CARGO_PKG_VERSION")), "{version:?}");
    // The installed binary, with its bundled plugins, checks the lab.
    let doctor = Command::new("/usr/bin/opsh")
        .env("OPSH_CONFIG_DIR", world.home.path().join("config"))
        .env("OPSH_DATA_DIR", world.home.path().join("data"))
        .env("OPSH_CACHE_DIR", world.home.path().join("cache"))
        .env("NO_COLOR", "1")
        .arg("--inventory")
        .arg(&world.inventory)
        .arg("doctor")
        .output()
        .map(run_of)
        .expect("opsh doctor");
    assert_eq!(doctor.code, 0, "{doctor:?}");
    assert!(doctor.stdout.contains("alpha-app") && doctor.stdout.contains("privilege superuser"), "pg's needs checked: {doctor:?}");
    let man = Command::new("sh").args(["-c", "gzip -dc /usr/share/man/man1/opsh.1.gz"]).output().map(run_of).expect("man page");
    assert!(
        man.stdout.contains(".TH opsh 1") && man.stdout.contains("doctor"),
        "the man page lists the built-ins: {}",
        &man.stdout[..man.stdout.len().min(400)]
    );
    let completion = std::fs::read_to_string("/usr/share/bash-completion/completions/opsh").expect("bash completion installed");
    assert!(completion.contains("opsh __complete"), "{completion}");

    let remove = Command::new("dpkg").args(["--purge", "opsh"]).output().map(run_of).expect("dpkg --purge");
    assert_eq!(remove.code, 0, "{remove:?}");
    for path in ["/usr/bin/opsh", "/usr/share/man/man1/opsh.1.gz", "/usr/share/bash-completion/completions/opsh", "/usr/share/doc/opsh"] {
        assert!(!std::path::Path::new(path).exists(), "{path} is left after removal");
    }
    assert!(!installed());
}
