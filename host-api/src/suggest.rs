//! "Did you mean": the known word closest to a mistyped one, by edit distance.

/// The candidate closest to `word` (Levenshtein distance, ties to the first), if it is close
/// enough to be what was meant: at most a third of the word's length, and at least 1.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates.into_iter().filter(|c| *c != word).map(|c| (distance(word, c), c)).filter(|(d, _)| *d <= limit).min_by_key(|(d, _)| *d).map(|(_, c)| c)
}

/// Levenshtein distance over characters.
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb { diagonal } else { 1 + diagonal.min(above).min(row[j]) };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_finds_the_word_and_a_different_word_finds_nothing() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(closest("--inventroy", ["--inventory", "--output", "--yes"]), Some("--inventory"));
        assert_eq!(closest("jurnal", ["journal", "resume", "retry"]), Some("journal"));
        assert_eq!(closest("promtoe", ["promote", "rebuild"]), Some("promote"));
        assert_eq!(closest("xyz", ["journal", "resume"]), None);
        assert_eq!(closest("dn03", ["dn01", "dn02", "cn01"]), Some("dn01"), "ties go to the first");
    }
}
