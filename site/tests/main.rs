//! Every integration test of glimpse-site: each file of this folder is a module of this one
//! binary. The crate and its dependencies are linked once, not once per file, which saved
//! CI most of the disk and the link time its test binaries took. nextest still runs each
//! test in a process of its own; a file's tests are
//! `-E 'package(glimpse-site) and test(/^api::/)'`.

mod api;
mod attacks;
mod binary;
mod common;
mod connections;
mod discovery;
mod frontends;
mod fuzz_corpus;
mod grpc;
mod h3;
mod openapi;
mod readme;
mod security;
mod startup;
mod test_binaries;
mod traces;
mod triton_http;
