//! The nodes behind the front-end: the seam the HTTP side sees ([`inference`]), the QUIC
//! dispatcher behind it ([`cluster`], its errors in [`cluster_error`]) built from a typed
//! [`config::ClusterConfig`], nodes inside the front-end's own process (`local`,
//! `--local-workers`), finding nodes by DNS or a file ([`discovery`]), and this front-end
//! among several sharing them ([`frontend`]).

pub mod cluster;
pub(crate) mod cluster_error;
pub mod config;
pub mod discovery;
pub mod frontend;
pub(crate) mod inference;
pub(crate) mod local;
