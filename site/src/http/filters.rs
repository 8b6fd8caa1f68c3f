//! The filters every API route is built from: the shared state, who is calling (and whether
//! it may), and whether a state-changing request comes from our own origin.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use warp::filters::host::Authority;
use warp::http::{HeaderMap, header};
use warp::{Filter, Rejection};

use crate::access::caller::{Caller, PeerAddr};
use crate::http::conn::OnConnection;
use crate::http::error::ApiError;
use crate::http::pace::ConnProgress;
use crate::site::Site;

/// The shared state, for handlers.
pub(crate) fn with_site(
    site: Arc<Site>,
) -> impl Filter<Extract = (Arc<Site>,), Error = Infallible> + Clone {
    warp::any().map(move || Arc::clone(&site))
}

/// The TCP peer, when the accept loop recorded it.
pub(crate) fn peer() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<PeerAddr>().map(|p: Option<PeerAddr>| p.map(|p| p.0))
}

/// The connection the request arrived on (see [`crate::http::pace`]), when the accept loop
/// recorded it.
pub(crate) fn connection()
-> impl Filter<Extract = (Option<Arc<dyn ConnProgress>>,), Error = Infallible> + Clone {
    warp::ext::optional::<OnConnection>()
        .map(|c: Option<OnConnection>| c.map(|c| c.0 as Arc<dyn ConnProgress>))
}

/// The caller of an `/api` or `/v2` request: identified (401 without a valid key when keys
/// are required) and counted against its request rate (429 with `Retry-After` past it).
/// Put it after a route's path and method filters, so it runs once per request.
pub(crate) fn caller(
    site: Arc<Site>,
) -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone {
    warp::header::headers_cloned()
        .and(peer())
        .and(with_site(site))
        .and_then(
            |headers: HeaderMap, peer: Option<SocketAddr>, site: Arc<Site>| async move {
                let caller = site.admit(&headers, peer).map_err(warp::reject::custom)?;
                Ok::<Caller, Rejection>(caller)
            },
        )
}

/// Refuses a state-changing request that a browser made from another origin. A multipart
/// POST is a CORS "simple request": without this, any web page could make its visitors'
/// browsers upload to an instance they can reach (an intranet one, say), cookies included.
/// Browsers say where a request comes from in `Sec-Fetch-Site` (modern ones) and `Origin`
/// (every POST); a request with neither is not from a browser page and is let through.
pub(crate) fn same_origin(
    allowed: Arc<Vec<String>>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::headers_cloned()
        .and(warp::host::optional())
        .and_then(move |headers: HeaderMap, authority: Option<Authority>| {
            let allowed = allowed.clone();
            async move {
                check_origin(&headers, authority.as_ref(), &allowed).map_err(warp::reject::custom)
            }
        })
        .untuple_one()
}

/// See [`same_origin`].
pub(crate) fn check_origin(
    headers: &HeaderMap,
    authority: Option<&Authority>,
    allowed: &[String],
) -> Result<(), ApiError> {
    let refuse = |why: String| {
        Err(ApiError::forbidden(format!(
            "cross-origin request refused ({why}); upload from this server's own page, or use an API client"
        )))
    };
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase());
    if let Some(origin) = &origin
        && allowed.iter().any(|a| a == origin)
    {
        return Ok(());
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if !matches!(site, "same-origin" | "none") {
            return refuse(format!("Sec-Fetch-Site: {site}"));
        }
    }
    let Some(origin) = origin else {
        return Ok(());
    };
    match authority {
        Some(a) if same_authority(&origin, a) => Ok(()),
        _ => refuse(format!(
            "Origin: {}",
            crate::http::error::truncate(origin, 100)
        )),
    }
}

/// Whether `origin` (`https://host[:port]`, lower case) names the authority the request was
/// sent to.
fn same_authority(origin: &str, authority: &Authority) -> bool {
    let Some(rest) = origin.strip_prefix("https://") else {
        return false;
    };
    let port = |p: Option<u16>| p.unwrap_or(443);
    match rest.parse::<Authority>() {
        Ok(o) => {
            o.host().eq_ignore_ascii_case(authority.host())
                && port(o.port_u16()) == port(authority.port_u16())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_our_own_origin_or_no_browser_may_post() {
        let here: Authority = "glimpse.example:8443".parse().unwrap();
        let ok = |h: &[(&'static str, &str)]| check_origin(&headers(h), Some(&here), &[]).is_ok();
        assert!(ok(&[]), "curl and API clients send neither header");
        assert!(ok(&[
            ("origin", "https://glimpse.example:8443"),
            ("sec-fetch-site", "same-origin")
        ]));
        assert!(ok(&[("origin", "https://GLIMPSE.example:8443")]));
        assert!(!ok(&[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site")
        ]));
        assert!(
            !ok(&[("origin", "https://evil.example")]),
            "old browsers: Origin alone"
        );
        assert!(!ok(&[("sec-fetch-site", "cross-site")]));
        assert!(!ok(&[
            ("sec-fetch-site", "same-site"),
            ("origin", "https://a.glimpse.example:8443")
        ]));
        assert!(
            !ok(&[("origin", "http://glimpse.example:8443")]),
            "plain http is another origin"
        );
        assert!(!ok(&[("origin", "null")]));
        let default_port: Authority = "glimpse.example".parse().unwrap();
        assert!(
            check_origin(
                &headers(&[("origin", "https://glimpse.example")]),
                Some(&default_port),
                &[]
            )
            .is_ok()
        );
        let allowed = vec!["https://app.example".to_string()];
        assert!(
            check_origin(
                &headers(&[
                    ("origin", "https://app.example"),
                    ("sec-fetch-site", "cross-site")
                ]),
                Some(&here),
                &allowed
            )
            .is_ok()
        );
    }
}
