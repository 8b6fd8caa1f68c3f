//! Text that goes back to a client: bounded, so an error never echoes a whole request; sizes
//! as people read them, in the units the upload page uses.

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

/// A size as people read it, as the upload page shows it: `20.0 MiB`, `19.5 KiB`,
/// `900 bytes`.
pub fn human_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else if n >= KIB {
        format!("{:.1} KiB", n as f64 / KIB as f64)
    } else {
        format!("{n} bytes")
    }
}

/// The refusal of one file over the per-file limit, naming the file (its name, quoted, or a
/// description such as `image[2]`): `"big.jpg" is 30.0 MiB; the limit is 20.0 MiB per file`,
/// or `... is larger than the limit of 20.0 MiB per file` when its size is not known (a
/// streamed upload is not read past the limit).
pub fn file_too_large(file: &str, size: Option<u64>, limit: usize) -> String {
    let limit = human_bytes(limit as u64);
    match size {
        Some(size) => format!(
            "{file} is {}; the limit is {limit} per file",
            human_bytes(size)
        ),
        None => format!("{file} is larger than the limit of {limit} per file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_the_page_shows_them() {
        assert_eq!(human_bytes(20 * 1024 * 1024), "20.0 MiB");
        assert_eq!(human_bytes(30_000_000), "28.6 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(20_000), "19.5 KiB");
        assert_eq!(human_bytes(5), "5 bytes");
        assert_eq!(
            file_too_large("\"big.jpg\"", Some(30 * 1024 * 1024), 20 * 1024 * 1024),
            "\"big.jpg\" is 30.0 MiB; the limit is 20.0 MiB per file"
        );
        assert_eq!(
            file_too_large("image[1]", None, 20 * 1024 * 1024),
            "image[1] is larger than the limit of 20.0 MiB per file"
        );
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(truncate("short".into(), 10), "short");
        assert_eq!(truncate("abcdef".into(), 4), "a…");
        assert_eq!(truncate("ééé".into(), 5), "é…");
    }
}
