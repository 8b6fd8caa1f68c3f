//! Text that goes back to a client: bounded, so an error never echoes a whole request.

/// `s` cut to at most `max` bytes at a character boundary, with `…` when it was cut.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(truncate("short".into(), 10), "short");
        assert_eq!(truncate("abcdef".into(), 4), "a…");
        assert_eq!(truncate("ééé".into(), 5), "é…");
    }
}
