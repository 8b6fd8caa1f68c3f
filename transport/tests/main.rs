//! Every integration test of glimpse-transport: each file of this folder is a module of this one
//! binary. The crate and its dependencies are linked once, not once per file, which saved
//! CI most of the disk and the link time its test binaries took. nextest still runs each
//! test in a process of its own; a file's tests are
//! `-E 'package(glimpse-transport) and test(/^dispatch::/)'`.

mod common;
mod dispatch;
mod dispatch_core;
mod fuzz_corpus;
mod membership;
mod placement_core;
mod protocol;
mod stream;
