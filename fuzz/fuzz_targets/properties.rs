//! `.properties` edits change only what they say: setting a key changes that key's lines and
//! nothing else; removing an address changes only the lines that list it.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use opsh_plugin_sdk::properties;

#[derive(Arbitrary, Debug)]
struct Input {
    content: String,
    key: String,
    value: String,
    address: String,
}

fuzz_target!(|input: Input| {
    let Input { content, key, value, address } = input;
    if let Ok(edited) = properties::set(&content, &key, &value) {
        let (before, after): (Vec<&str>, Vec<&str>) = (content.split_inclusive('\n').collect(), edited.split_inclusive('\n').collect());
        assert_eq!(before.len(), after.len(), "set keeps the number of lines");
        for (old, new) in before.iter().zip(&after) {
            if old != new {
                assert!(new.trim_end_matches('\n') == format!("{key}={value}"), "only lines that set {key:?} change: {old:?} -> {new:?}");
            }
        }
        if !value.contains('\n') && !key.contains(['\n', '=']) && !key.is_empty() && key.trim() == key && value.trim() == value {
            assert_eq!(properties::get(&edited, &key), Some(value.as_str()), "the key now has the value");
        }
    }
    if address.is_empty() {
        return;
    }
    if let Ok(edited) = properties::remove_address(&content, &address) {
        let (before, after): (Vec<&str>, Vec<&str>) = (content.split_inclusive('\n').collect(), edited.split_inclusive('\n').collect());
        assert_eq!(before.len(), after.len(), "remove_address keeps the number of lines");
        for (old, new) in before.iter().zip(&after) {
            if old != new {
                assert!(old.contains(address.as_str()), "only lines that name {address:?} change: {old:?} -> {new:?}");
            }
        }
    }
});
