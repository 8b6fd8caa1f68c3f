//! Image type sniffing from magic bytes.
//!
//! A browser or curl may label any file `image/jpeg` (or `application/octet-stream`), so
//! the declared content type is only a hint. Looking at the first bytes lets the site
//! answer 415 for a text file or a PDF at once, without spending a QUIC round trip and a
//! node's decode on it; files that look like images but are broken still reach a node,
//! which answers 422 with the decoder's reason.

/// Image container formats recognised by their signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageKind {
    Jpeg,
    Png,
    Gif,
    Webp,
    Bmp,
}

impl ImageKind {}

/// Identify the image format from the first bytes, or `None` if it is not one we accept.
pub(crate) fn sniff(bytes: &[u8]) -> Option<ImageKind> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageKind::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageKind::Png)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(ImageKind::Gif)
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(ImageKind::Webp)
    } else if bytes.len() >= 14 && bytes.starts_with(b"BM") {
        Some(ImageKind::Bmp)
    } else {
        None
    }
}

/// Check an upload and explain a rejection in words a user understands.
pub(crate) fn check_image(bytes: &[u8], declared: Option<&str>) -> Result<ImageKind, String> {
    if bytes.is_empty() {
        return Err("the file is empty".to_string());
    }
    match sniff(bytes) {
        Some(kind) => Ok(kind),
        None => {
            let declared = declared.unwrap_or("no content type");
            Err(format!(
                "not a supported image (declared {declared}; accepted: JPEG, PNG, GIF, WebP, BMP)"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_common_formats() {
        assert_eq!(
            sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]),
            Some(ImageKind::Jpeg)
        );
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Some(ImageKind::Png)
        );
        assert_eq!(sniff(b"GIF89a......"), Some(ImageKind::Gif));
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some(ImageKind::Webp));
        assert_eq!(
            sniff(b"II*\0\x08\0\0\0"),
            None,
            "TIFF is not decoded by the model"
        );
    }

    #[test]
    fn rejects_text_and_short_input() {
        assert_eq!(sniff(b"hello, world"), None);
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVE"), None);
        assert_eq!(sniff(b"BM"), None);
        let err = check_image(b"%PDF-1.7", Some("image/png")).unwrap_err();
        assert!(err.contains("image/png"), "{err}");
        assert!(check_image(b"", None).unwrap_err().contains("empty"));
    }
}
