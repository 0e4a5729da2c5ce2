//! `opsh inventory import`: a cluster's own description (pgxc_ctl.conf, an Ansible inventory in
//! INI or YAML, an ssh_config) is imported or refused, never a crash, a hang or an explosion of
//! memory (YAML aliases and deep nesting are refused before they are loaded); what is imported is
//! TOML that reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opsh_host::import::{FORMATS, import};

fuzz_target!(|input: (u8, &str)| {
    let (which, text) = input;
    let format = FORMATS[usize::from(which) % FORMATS.len()];
    let Ok(imported) = import(format, text, "fuzz") else { return };
    if let Err(e) = imported.toml.parse::<toml::Table>() {
        panic!("the imported {format} inventory is not TOML ({e}):\n{}", imported.toml);
    }
});
