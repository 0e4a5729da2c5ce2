//! The inventory an operator writes by hand: any text is read or refused, never a crash; what is
//! read gives grants, an address book and a scrubber without a crash either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opsh_host::address_book::AddressBook;
use opsh_host::grants::{Capability, Grants};
use opsh_host::inventory::Inventory;

fuzz_target!(|text: &str| {
    let Ok(inventory) = Inventory::parse(text) else { return };
    let grants = Grants::new(&inventory);
    let book = AddressBook::new(&inventory);
    let all = [Capability::Sql, Capability::Ssh, Capability::FileEdit, Capability::Service].into();
    for plugin in inventory.grants.keys().chain(inventory.topologies.values().filter_map(|t| t.plugin.as_ref())) {
        let _ = grants.reachable(plugin, &inventory, &all);
    }
    for host in inventory.hosts.values() {
        let concealed = book.conceal(&host.address);
        assert_eq!(book.reveal(&concealed).as_deref(), Ok(host.address.as_str()), "an inventory address conceals and reveals to itself");
    }
});
