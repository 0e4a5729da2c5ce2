//! `pg_hba.conf`: ensuring a rule keeps every line there was, in order, and adds the rule once;
//! a second `ensure` of the same rule changes nothing.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use opsh_plugin_sdk::pg_hba;

#[derive(Arbitrary, Debug)]
struct Input {
    content: String,
    fields: [String; 5],
}

fuzz_target!(|input: Input| {
    let word = |s: &str| !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '#');
    if !input.fields.iter().all(|f| word(f)) {
        return;
    }
    let rule = input.fields.join(" ");
    let _ = pg_hba::method_for(&input.content, &input.fields[1], &input.fields[2]);
    let Some(edited) = pg_hba::ensure(&input.content, &rule, "added by opsh") else { return };
    assert!(edited.starts_with(input.content.trim_end_matches('\n')), "every line there was is kept, in order");
    assert!(edited.lines().any(|l| l == rule), "the rule is there");
    assert_eq!(pg_hba::ensure(&edited, &rule, "added by opsh"), None, "ensuring it again changes nothing");
});
