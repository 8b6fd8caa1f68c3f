//! torchvision's 1000 ImageNet class names, in class-index order.

/// The class names of `GoogLeNet_Weights.IMAGENET1K_V1.meta["categories"]`, indexed by the
/// network's output position. Shipped in the crate (one name per line in
/// `imagenet_classes.txt`) so labelling needs no download.
pub const IMAGENET_CLASSES: [&str; 1000] = parse(include_str!("imagenet_classes.txt"));

/// Splits the file into lines at compile time; fails the build if it has not exactly 1000.
const fn parse(text: &'static str) -> [&'static str; 1000] {
    let bytes = text.as_bytes();
    let mut out = [""; 1000];
    let mut count = 0;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            assert!(count < 1000, "more than 1000 class names");
            let (_, rest) = text.split_at(start);
            let (line, _) = rest.split_at(i - start);
            out[count] = line;
            count += 1;
            start = i + 1;
        }
        i += 1;
    }
    assert!(start == bytes.len(), "class list must end with a newline");
    assert!(count == 1000, "expected exactly 1000 class names");
    out
}

#[cfg(test)]
mod tests {
    use super::IMAGENET_CLASSES;

    #[test]
    fn known_names_at_known_indices() {
        assert_eq!(IMAGENET_CLASSES[0], "tench");
        assert_eq!(IMAGENET_CLASSES[1], "goldfish");
        assert_eq!(IMAGENET_CLASSES[207], "golden retriever");
        assert_eq!(IMAGENET_CLASSES[999], "toilet tissue");
        assert!(
            IMAGENET_CLASSES
                .iter()
                .all(|n| !n.is_empty() && n.trim() == *n)
        );
    }
}
