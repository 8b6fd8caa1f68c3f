//! Who may ask, and how much: API keys ([`auth`]), identifying the caller of a request
//! ([`caller`]), throttles on failed keys and request rates ([`throttle`]), and the limits a
//! deployment sets on files, requests and queues ([`limits`]).

pub mod auth;
pub(crate) mod caller;
pub mod limits;
pub(crate) mod throttle;
