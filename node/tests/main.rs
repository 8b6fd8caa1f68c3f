//! Every integration test of glimpse-node: each file of this folder is a module of this one
//! binary. The crate and its dependencies are linked once, not once per file, which saved
//! CI most of the disk and the link time its test binaries took. nextest still runs each
//! test in a process of its own; a file's tests are
//! `-E 'package(glimpse-node) and test(/^classify_cli::/)'`.

mod classify_cli;
mod common;
mod decode_budget;
mod failover;
mod gif_bomb;
mod in_process;
mod lanes_cli;
mod operate;
mod reset_node;
