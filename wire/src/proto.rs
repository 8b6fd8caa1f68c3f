//! The Rust types and service stubs generated from `proto/` at build time (see `build.rs`).

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

tonic::include_proto!("inference");
