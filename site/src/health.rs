//! Readiness as load balancers and Triton's clients ask for it: ready when at least one
//! node with a loaded model is connected.

use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Response;

use crate::reply::{json_response, ok_json};
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

/// `/readyz`: 200 only while a node with a loaded model is connected.
pub(crate) fn readiness(site: &Site) -> Response {
    readiness_with(site, json!({}))
}

/// Readiness with `fields` (a JSON object: the model's name and version, say) added.
pub(crate) fn readiness_with(site: &Site, mut fields: Value) -> Response {
    let ready = nodes_ready(site);
    fields["ready"] = json!(ready > 0);
    fields["nodes_ready"] = json!(ready);
    if ready > 0 {
        ok_json(&fields)
    } else {
        fields["error"] = json!("no node with a loaded model is connected");
        json_response(StatusCode::SERVICE_UNAVAILABLE, &fields)
    }
}
