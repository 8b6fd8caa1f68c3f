//! A reader that hands out at most `step` bytes per read, as the network would: the KServe
//! targets read their bodies through it, in steps the input chooses. Declared once at the crate
//! root of `glimpse-fuzz` and of `site/tests/fuzz_corpus.rs` (each includes it with
//! `#[path]`), so the targets name it `super::trickle`.

use std::io::Read;

/// `data`, at most `step` bytes per read.
pub(crate) struct Trickle<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}
