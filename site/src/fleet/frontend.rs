//! This front-end among several sharing the same nodes: its id, the jobs it owns, where a
//! job another front-end owns lives, and the readiness it gives up when it begins to stop.
//!
//! Jobs live in the memory of the front-end that accepted them (the job store and the event
//! hub are per process), so an asynchronous job can only be looked up there. Its id says
//! where: `<frontend-id>.<random>`. A front-end asked about a job another one owns answers
//! 421 Misdirected Request naming the owner (or 307 to it, with `--peer-url-template`)
//! instead of a 404 that would read as "gone". Synchronous calls (`?wait=true`, KServe v2)
//! finish on the front-end that took them, so they need none of this.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use crate::http::reply::json_response;

/// Header that names the front-end owning a job, on 421 and 307 answers.
pub const FRONTEND_HEADER: &str = "x-glimpse-frontend";

/// Longest front-end id: one DNS label, so `{frontend}` can be a host name's first label
/// (a Kubernetes pod name, say) in `--peer-url-template`.
pub const MAX_ID_LEN: usize = 63;

/// Separates the owner's id from the random part of a job id. Front-end ids cannot contain
/// it, so the owner is everything before the first one.
const JOB_ID_SEPARATOR: char = '.';

/// A front-end's id: 1 to 63 of `a-z`, `0-9` and `-`, not starting or ending with `-` (a
/// DNS label), so it is safe in a job id, a header and a host name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FrontendId(String);

/// Why a front-end id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontendIdError {
    /// Not a DNS label of lower-case letters, digits and '-'.
    #[error(
        "{0:?} is not a valid front-end id: use 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-' (e.g. the pod name, web-1)"
    )]
    Invalid(String),
    /// The host name could not be read.
    #[error("cannot read the host name ({0}): pass --frontend-id (GLIMPSE_FRONTEND_ID)")]
    NoHostName(String),
}

impl FrontendId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The default id: the host name (the pod name under Kubernetes) up to its first dot,
    /// lower-cased (host names compare case-insensitively), with any other character not
    /// allowed in an id made a '-' and cut to [`MAX_ID_LEN`]; `glimpse` if nothing is left.
    /// A default never stops a single front-end from starting; give each of several an
    /// explicit `--frontend-id` when their host names are unusual.
    pub fn from_host_name() -> Result<FrontendId, FrontendIdError> {
        let host = host_name().map_err(|e| FrontendIdError::NoHostName(e.to_string()))?;
        Ok(FrontendId::sanitized(&host))
    }

    /// `host` made into an id as [`FrontendId::from_host_name`] describes.
    fn sanitized(host: &str) -> FrontendId {
        let label: String = host
            .split('.')
            .next()
            .unwrap_or_default()
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9') => c,
                _ => '-',
            })
            .take(MAX_ID_LEN)
            .collect();
        let label = label.trim_matches('-');
        if label.is_empty() {
            FrontendId("glimpse".to_string())
        } else {
            FrontendId(label.to_string())
        }
    }
}

impl FromStr for FrontendId {
    type Err = FrontendIdError;
    fn from_str(s: &str) -> Result<FrontendId, FrontendIdError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(FrontendId(s.to_string()))
        } else {
            Err(FrontendIdError::Invalid(crate::http::error::truncate(
                s.to_string(),
                100,
            )))
        }
    }
}

impl fmt::Display for FrontendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The system's host name.
#[cfg(unix)]
fn host_name() -> std::io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The host name where there is no `gethostname` in libc's sense.
#[cfg(not(unix))]
fn host_name() -> std::io::Result<String> {
    std::env::var("COMPUTERNAME").map_err(std::io::Error::other)
}

/// `--peer-url-template`: the base URL of another front-end, `{frontend}` standing for its
/// id (e.g. `https://{frontend}.glimpse-frontend.glimpse.svc:8443`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUrlTemplate(String);

impl FromStr for PeerUrlTemplate {
    type Err = String;
    fn from_str(s: &str) -> Result<PeerUrlTemplate, String> {
        let s = s.trim().trim_end_matches('/');
        if !(s.starts_with("https://") || s.starts_with("http://")) || !s.contains("{frontend}") {
            return Err(format!(
                "expected a base URL with {{frontend}} in it, like https://{{frontend}}.glimpse-frontend:8443, got {s:?}"
            ));
        }
        // Check it makes a valid header value with any id substituted.
        HeaderValue::from_str(&s.replace("{frontend}", "x"))
            .map_err(|_| format!("{s:?} has characters a URL may not"))?;
        Ok(PeerUrlTemplate(s.to_string()))
    }
}

impl PeerUrlTemplate {
    /// The URL of `path` on front-end `id`.
    pub fn url(&self, id: &FrontendId, path: &str) -> String {
        format!("{}{path}", self.0.replace("{frontend}", id.as_str()))
    }
}

/// How this front-end tells its jobs apart from others'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// This front-end's id; `None`: the host name's (see [`FrontendId::from_host_name`]).
    pub id: Option<FrontendId>,
    /// Where other front-ends are, for 307 redirects; `None`: answer 421 instead.
    pub peers: Option<PeerUrlTemplate>,
}

/// This front-end: its id, its peers' URLs, and whether it has begun to stop.
#[derive(Debug)]
pub struct Frontend {
    id: FrontendId,
    peers: Option<PeerUrlTemplate>,
    stopping: AtomicBool,
}

impl Frontend {
    /// A front-end named `id`.
    pub fn new(id: FrontendId, peers: Option<PeerUrlTemplate>) -> Frontend {
        Frontend {
            id,
            peers,
            stopping: AtomicBool::new(false),
        }
    }

    /// This front-end's id.
    pub fn id(&self) -> &FrontendId {
        &self.id
    }

    /// The prefix of every job id this front-end makes (`<id>.`).
    pub fn job_id_prefix(&self) -> String {
        format!("{}{JOB_ID_SEPARATOR}", self.id)
    }

    /// The front-end that owns job `job_id`, when that is another one. `None` for this
    /// front-end's own jobs, and for ids that name no valid front-end (answered as unknown).
    pub fn owner_elsewhere(&self, job_id: &str) -> Option<FrontendId> {
        let (owner, _) = job_id.split_once(JOB_ID_SEPARATOR)?;
        let owner: FrontendId = owner.parse().ok()?;
        (owner != self.id).then_some(owner)
    }

    /// The answer to a request for job `job_id` at `path`, when another front-end owns it:
    /// 307 to that front-end with `--peer-url-template`, else 421 naming it. Both carry
    /// the owner in a JSON `frontend` field and the `x-glimpse-frontend` header.
    pub fn misdirected(&self, job_id: &str, path: &str) -> Option<Response> {
        let owner = self.owner_elsewhere(job_id)?;
        let location = self.peers.as_ref().map(|p| p.url(&owner, path));
        let (status, error) = match &location {
            Some(url) => (
                StatusCode::TEMPORARY_REDIRECT,
                format!("job {job_id:?} lives on front-end {owner}: see {url}"),
            ),
            None => (
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "job {job_id:?} lives on front-end {owner}, not on {}: ask that one (route by the id's front-end, or keep session affinity)",
                    self.id
                ),
            ),
        };
        let mut resp = json_response(
            status,
            &json!({ "error": error, "frontend": owner.as_str() }),
        );
        if let Ok(v) = HeaderValue::from_str(owner.as_str()) {
            resp.headers_mut().insert(FRONTEND_HEADER, v);
        }
        if let Some(v) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Some(resp)
    }

    /// Begin stopping: from now on readiness fails (503), so load balancers move away,
    /// while everything else is served as before.
    pub fn stop_ready(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether [`Frontend::stop_ready`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// `--frontend-id`, `--peer-url-template` and `--shutdown-grace-s`: the flags for running
/// several front-ends on the same nodes. Flattened into [`crate::cli::Cli`].
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Several front-ends")]
pub struct FrontendArgs {
    /// This front-end's id: it names the asynchronous jobs it owns (`ID.RANDOM`), so another
    /// front-end asked about one can say where it lives. 1 to 63 of a-z, 0-9 and '-'; give
    /// each front-end its own. Default: the host name up to its first dot, lower-cased, other
    /// characters made '-' (the pod name under Kubernetes).
    #[arg(long, env = "GLIMPSE_FRONTEND_ID", value_name = "ID")]
    pub frontend_id: Option<FrontendId>,
    /// Base URL of another front-end, `{frontend}` standing for its id (e.g.
    /// `https://{frontend}.glimpse-frontend.glimpse.svc:8443`). With it, a request for a job
    /// another front-end owns is redirected there (307); without it, it is answered 421
    /// Misdirected Request naming the owner. Default: none (421).
    #[arg(long, env = "GLIMPSE_PEER_URL_TEMPLATE", value_name = "URL")]
    pub peer_url_template: Option<PeerUrlTemplate>,
    /// Seconds between SIGTERM and draining: /readyz answers 503 at once while everything
    /// else is served as usual, so load balancers stop sending new work; then open requests
    /// finish and the process exits. A second SIGTERM or SIGINT skips the rest. 0 drains at
    /// once. Default: 5 (a few readiness-probe periods).
    #[arg(
        long,
        env = "GLIMPSE_SHUTDOWN_GRACE_S",
        default_value_t = 5.0,
        value_name = "S"
    )]
    pub shutdown_grace_s: f64,
}

impl FrontendArgs {
    /// How the front-end tells its jobs apart from others'.
    pub fn ownership(&self) -> Ownership {
        Ownership {
            id: self.frontend_id.clone(),
            peers: self.peer_url_template.clone(),
        }
    }

    /// The grace period after SIGTERM (at most an hour; negative or NaN: none).
    pub fn shutdown_grace(&self) -> Duration {
        if self.shutdown_grace_s.is_finite() && self.shutdown_grace_s > 0.0 {
            Duration::from_secs_f64(self.shutdown_grace_s.min(3600.0))
        } else {
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> FrontendId {
        s.parse().unwrap()
    }

    #[test]
    fn ids_are_dns_labels() {
        for good in [
            "web-1",
            "a",
            "glimpse-frontend-7d9f8c-x2x4k",
            &"a".repeat(63),
        ] {
            assert!(good.parse::<FrontendId>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Web",
            "a.b",
            "a_b",
            "a b",
            &"a".repeat(64),
            "é",
        ] {
            let e = bad.parse::<FrontendId>().unwrap_err();
            assert!(e.to_string().contains("not a valid front-end id"), "{e}");
        }
    }

    #[test]
    fn the_host_name_makes_the_default() {
        let id = FrontendId::from_host_name().expect("a host name");
        assert!(id.as_str().parse::<FrontendId>().is_ok(), "{id}");
        let cases = [
            (
                "glimpse-frontend-7d9f8c-x2x4k",
                "glimpse-frontend-7d9f8c-x2x4k",
            ),
            ("Build-Box.example.org", "build-box"),
            ("my_host", "my-host"),
            ("-x-", "x"),
            ("...", "glimpse"),
        ];
        for (host, want) in cases {
            assert_eq!(FrontendId::sanitized(host).as_str(), want, "{host}");
        }
        let long = FrontendId::sanitized(&"a".repeat(100));
        assert_eq!(long.as_str().len(), MAX_ID_LEN);
    }

    #[test]
    fn jobs_of_other_frontends_are_misdirected() {
        let here = Frontend::new(id("web-1"), None);
        assert_eq!(here.job_id_prefix(), "web-1.");
        assert_eq!(here.owner_elsewhere("web-1.00ff"), None);
        assert_eq!(here.owner_elsewhere("web-2.00ff"), Some(id("web-2")));
        assert_eq!(here.owner_elsewhere("00ff"), None, "no owner: unknown");
        assert_eq!(here.owner_elsewhere("Evil\r\n.x"), None, "not an id");
        let r = here
            .misdirected("web-2.00ff", "/api/v1/jobs/web-2.00ff")
            .unwrap();
        assert_eq!(r.status(), 421);
        assert_eq!(r.headers()[FRONTEND_HEADER], "web-2");
        assert!(r.headers().get(header::LOCATION).is_none());
        assert!(here.misdirected("web-1.00ff", "/x").is_none());

        let peers: PeerUrlTemplate = "https://{frontend}.fe.svc:8443/".parse().unwrap();
        let there = Frontend::new(id("web-1"), Some(peers));
        let r = there
            .misdirected("web-2.ab", "/api/v1/jobs/web-2.ab")
            .unwrap();
        assert_eq!(r.status(), 307);
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://web-2.fe.svc:8443/api/v1/jobs/web-2.ab"
        );
    }

    #[test]
    fn peer_templates_must_name_the_frontend() {
        assert!("https://fe.svc".parse::<PeerUrlTemplate>().is_err());
        assert!("fe-{frontend}.svc".parse::<PeerUrlTemplate>().is_err());
        assert!(
            "https://{frontend}\n.svc"
                .parse::<PeerUrlTemplate>()
                .is_err()
        );
        assert!("http://{frontend}:8443".parse::<PeerUrlTemplate>().is_ok());
    }

    #[test]
    fn readiness_stops_first() {
        let f = Frontend::new(id("a"), None);
        assert!(!f.is_stopping());
        f.stop_ready();
        assert!(f.is_stopping());
    }
}
