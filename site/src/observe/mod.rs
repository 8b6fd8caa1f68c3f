//! What the front-end tells its operators: Prometheus metrics ([`metrics`]), the KServe
//! statistics extension's per-image stage times ([`stats`]), and one trace span per image
//! ([`image_span`]).

pub(crate) mod image_span;
pub(crate) mod metrics;
pub(crate) mod stats;
