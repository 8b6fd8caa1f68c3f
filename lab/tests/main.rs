//! Every integration test of glimpse-lab: each file of this folder is a module of this one
//! binary. The crate and its dependencies are linked once, not once per file, which saved
//! CI most of the disk and the link time its test binaries took. nextest still runs each
//! test in a process of its own; a file's tests are
//! `-E 'package(glimpse-lab) and test(/^lab_netns::/)'`.

mod common;
mod lab_netns;
mod load;
mod placement;
