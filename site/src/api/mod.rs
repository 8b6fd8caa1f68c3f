//! What a person or an API client asks of the front-end: the page ([`page`]), the JSON API
//! under `/api/v1` ([`v1`]) and its OpenAPI description ([`openapi`]), reading uploads under
//! limits ([`upload`], with each file's type sniffed by [`sniff`]), the jobs they become
//! ([`job`], [`jobs`]) and each caller's live stream of job updates ([`events`]).

pub(crate) mod events;
pub mod job;
pub(crate) mod jobs;
pub mod openapi;
pub(crate) mod page;
pub(crate) mod sniff;
pub mod upload;
pub(crate) mod v1;
