//! `opsh run FILE`: any text is either read into lines of words or refused naming a line; a
//! line's words, quoted again, read back as the same words.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match opsh_host::script::lines(text) {
        Ok(lines) => {
            let mut last = 0;
            for line in lines {
                assert!(line.number > last, "lines in order");
                last = line.number;
                assert!(!line.words.is_empty(), "a kept line has a command");
                let again = opsh_host::script::words(&shell_words::join(&line.words)).expect("quoted words read back");
                assert_eq!(again, line.words);
            }
        }
        Err(malformed) => assert!(malformed.number >= 1 && malformed.number <= text.lines().count(), "{malformed:?}"),
    }
});
