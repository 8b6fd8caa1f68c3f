//! Readiness as load balancers and Triton's clients ask for it: ready when at least one
//! node with a loaded model is connected and the front-end has not begun to stop (after
//! SIGTERM it fails readiness first, so load balancers move away before it drains).

use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Response;

use crate::http::reply::{json_response, ok_json};
use crate::site::Site;

/// Connected nodes with a loaded model: the server is ready while there is one. Every
/// protocol's readiness (`/readyz`, KServe v2 over HTTP and gRPC) is this.
pub(crate) fn nodes_ready(site: &Site) -> usize {
    site.inference
        .nodes()
        .iter()
        .filter(|n| n.can_serve())
        .count()
}

/// Whether the server takes work: a node can serve and the front-end is not stopping.
/// Every protocol's readiness is this.
pub(crate) fn is_serving(site: &Site) -> bool {
    !site.frontend.is_stopping() && nodes_ready(site) > 0
}

/// `/readyz`: 200 only while a node with a loaded model is connected and the front-end is
/// not shutting down.
pub(crate) fn readiness(site: &Site) -> Response {
    readiness_with(site, json!({}))
}

/// Readiness with `fields` (a JSON object: the model's name and version, say) added.
pub(crate) fn readiness_with(site: &Site, mut fields: Value) -> Response {
    let ready = nodes_ready(site);
    let stopping = site.frontend.is_stopping();
    fields["ready"] = json!(ready > 0 && !stopping);
    fields["nodes_ready"] = json!(ready);
    if stopping {
        fields["error"] = json!("shutting down: finishing open requests; send new work elsewhere");
        json_response(StatusCode::SERVICE_UNAVAILABLE, &fields)
    } else if ready > 0 {
        ok_json(&fields)
    } else {
        fields["error"] = json!("no node with a loaded model is connected");
        json_response(StatusCode::SERVICE_UNAVAILABLE, &fields)
    }
}
