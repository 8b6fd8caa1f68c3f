//! HTTP as the front-end speaks it: the TLS listeners and their accept loop ([`server`]),
//! one registry of connections for every listener ([`conn`]), the pace every body must keep
//! ([`pace`]), the warp filters and guards every route shares ([`filters`], [`guards`]),
//! health probes ([`health`]), the routes assembled in one place ([`routes`]), and every
//! refusal as one JSON error ([`error`], [`reply`]).

pub mod conn;
pub(crate) mod error;
pub(crate) mod filters;
pub(crate) mod guards;
pub mod h3;
pub(crate) mod health;
pub mod pace;
pub(crate) mod reply;
pub(crate) mod routes;
pub mod server;
