//! Every route of the HTTPS listener, assembled in one place: the page, health, the JSON API,
//! KServe v2, then one JSON error for anything refused or unmatched, the access log, and the
//! headers every response carries.

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::api::v1::{self, AdminAccess};
use crate::api::{openapi, page};
use crate::http::{error, reply};
use crate::kserve;
use crate::observe::metrics::protocol_of;
use crate::site::Site;

/// How the public listener treats operators' data and browsers.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    /// Who may read `/metrics` and `/api/v1/nodes` here.
    pub admin: AdminAccess,
    /// Extra origins (`https://host[:port]`, lower case) whose pages may post to this site.
    pub allowed_origins: Arc<Vec<String>>,
    /// `Strict-Transport-Security: max-age` in seconds; 0 sends none.
    pub hsts_max_age_s: u64,
}

/// The routes of the HTTPS listener.
pub(crate) fn https(site: Arc<Site>, access: &Access) -> BoxedFilter<(Response,)> {
    let counting = site.clone();
    let hsts = access.hsts_max_age_s;
    page::routes()
        .or(v1::health(site.clone()))
        .unify()
        .or(openapi::route())
        .unify()
        .or(v1::routes(
            site.clone(),
            access.admin,
            access.allowed_origins.clone(),
        ))
        .unify()
        .or(kserve::routes(site, access.allowed_origins.clone()))
        .unify()
        .recover(error::recover)
        .unify()
        .with(warp::log::custom(move |info| {
            let protocol = protocol_of(info.version());
            counting.metrics.response(
                info.path(),
                info.status().as_u16(),
                protocol,
                info.elapsed(),
            );
            tracing::debug!(
                protocol,
                method = %info.method(),
                path = info.path(),
                status = info.status().as_u16(),
                elapsed_ms = info.elapsed().as_millis() as u64,
                "request"
            );
        }))
        .map(move |r| reply::harden(Reply::into_response(r), hsts))
        .boxed()
}
