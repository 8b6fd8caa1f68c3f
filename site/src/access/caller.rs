//! Who is calling: the identity every `/api` and `/v2` request is checked and scoped by.
//!
//! Two things are derived from a request, and they are deliberately not the same:
//! - its **owner**, which scopes what it may see: jobs, job lookups and the event stream.
//!   With `--api-keys` it is the key's name. Without keys it is an unguessable client token
//!   that the server mints and signs (an HttpOnly, SameSite=Strict cookie for the page; the
//!   same token comes back in the upload's JSON for API clients, who send it back as the
//!   `x-glimpse-client` header). A token is only honoured if this server signed it, so a
//!   client cannot pick a weak one that another client might pick too.
//! - its **limit key**, which its rate limit and its share of the queue are counted against.
//!   With keys it is the key's name. Without keys it is the client's address (the /64 for
//!   IPv6, which one host gets whole): tokens are free to mint, so counting per token would
//!   let one client take everything.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use warp::http::{HeaderMap, HeaderValue, header};
use warp::reply::Response;

use crate::access::auth::{KeyFile, KeyHolder};
use crate::http::error::ApiError;

/// Name of the client-token cookie.
pub(crate) const COOKIE: &str = "glimpse_client";
/// Header API clients send their client token in (without keys).
pub(crate) const TOKEN_HEADER: &str = "x-glimpse-client";

/// The TCP peer of a request, put into its extensions by the accept loop (warp's own
/// remote-address filter only works with warp's own server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerAddr(pub SocketAddr);

/// Whose job is it: what scopes job lookups and events.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// An API key, by name.
    Key(Arc<str>),
    /// A client token's id (random, 128 bits).
    Client([u8; 16]),
}

/// What per-caller limits are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// An API key, by name.
    Key(Arc<str>),
    /// A client address: the IPv4 address, or the IPv6 /64.
    Net(IpAddr),
}

impl LimitKey {
    /// The limit key of a peer address.
    pub fn of_addr(addr: IpAddr) -> LimitKey {
        LimitKey::Net(net_of(addr))
    }
}

/// The address an address-keyed limit counts: IPv4 as is (and IPv4-mapped IPv6 as IPv4),
/// IPv6 by its /64, the smallest block a host is normally given.
pub(crate) fn net_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Scopes what the caller sees.
    pub owner: Owner,
    /// What its limits count against.
    pub limit: LimitKey,
    /// Its address (the /64 for IPv6): limits that must hold per address whoever the caller
    /// is (KServe parse slots) count against this too.
    pub addr: LimitKey,
    /// The API key it presented, when the server requires keys.
    pub key: Option<KeyHolder>,
    /// The client token (without keys): returned in upload answers for API clients.
    pub token: Option<String>,
    /// A freshly minted token to set as a cookie on the response.
    fresh: bool,
    /// The W3C `traceparent` header, when the caller traces: its images' spans become
    /// children of the caller's span. Unchecked (an invalid one starts a new trace).
    pub traceparent: Option<String>,
}

impl Caller {
    /// Whether the caller holds an admin key.
    pub fn is_admin(&self) -> bool {
        self.key.as_ref().is_some_and(|k| k.admin)
    }

    /// Add the `Set-Cookie` for a freshly minted client token to `resp`.
    pub fn finish(&self, mut resp: Response) -> Response {
        if self.fresh
            && let Some(token) = &self.token
            && let Ok(v) = HeaderValue::from_str(&format!(
                "{COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict"
            ))
        {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        resp
    }
}

/// Mints and checks client tokens: 16 random bytes and their HMAC-SHA256 (first 16 bytes)
/// under a key that lives only in this process, base64url.
pub struct ClientTokens {
    key: hmac::Key,
    rng: SystemRandom,
}

impl std::fmt::Debug for ClientTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTokens { key: <redacted> }")
    }
}

/// Why no token could be minted.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

impl ClientTokens {
    /// A signer with a fresh random key.
    pub fn new() -> Result<ClientTokens, RandomError> {
        let rng = SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).map_err(|_| RandomError)?;
        Ok(ClientTokens { key, rng })
    }

    /// A new token and its id.
    pub fn mint(&self) -> Result<([u8; 16], String), RandomError> {
        let mut id = [0u8; 16];
        self.rng.fill(&mut id).map_err(|_| RandomError)?;
        let tag = hmac::sign(&self.key, &id);
        let mut raw = [0u8; 32];
        raw[..16].copy_from_slice(&id);
        raw[16..].copy_from_slice(&tag.as_ref()[..16]);
        Ok((
            id,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw),
        ))
    }

    /// The id of a token this process signed, or `None`.
    pub fn verify(&self, token: &str) -> Option<[u8; 16]> {
        if token.len() != 43 {
            return None;
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()?;
        let (id, tag) = raw.split_at_checked(16)?;
        // The token carries half the tag (128 bits is plenty), so `hmac::verify`, which wants
        // all of it, does not apply: compare the halves in constant time.
        let expected = hmac::sign(&self.key, id);
        let same: bool = subtle::ConstantTimeEq::ct_eq(&expected.as_ref()[..16], tag).into();
        if same { id.try_into().ok() } else { None }
    }
}

/// How a request may be identified: keys when configured, signed client tokens otherwise.
#[derive(Debug)]
pub struct Identify {
    /// `--api-keys`, when set.
    pub keys: Option<Arc<KeyFile>>,
    /// Signs client tokens (used without keys).
    pub tokens: ClientTokens,
}

impl Identify {
    /// Whether every request needs an API key.
    pub fn requires_keys(&self) -> bool {
        self.keys.is_some()
    }

    /// The caller of a request with these headers from `peer`.
    pub fn caller(
        &self,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<Caller, ApiError> {
        let addr_key =
            || LimitKey::of_addr(peer.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |p| p.ip()));
        if let Some(keys) = &self.keys {
            let Some(presented) = bearer(headers) else {
                return Err(ApiError::unauthorized(
                    "this server requires an API key: send `Authorization: Bearer KEY`",
                    false,
                ));
            };
            let Some(holder) = keys.current().verify(presented) else {
                return Err(ApiError::unauthorized("the API key is not valid", true));
            };
            return Ok(Caller {
                owner: Owner::Key(holder.name.clone()),
                limit: LimitKey::Key(holder.name.clone()),
                addr: addr_key(),
                key: Some(holder),
                token: None,
                fresh: false,
                traceparent: traceparent(headers),
            });
        }
        let presented = headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .into_iter()
            .chain(cookies(headers, COOKIE));
        for token in presented {
            if let Some(id) = self.tokens.verify(token) {
                return Ok(Caller {
                    owner: Owner::Client(id),
                    limit: addr_key(),
                    addr: addr_key(),
                    key: None,
                    token: Some(token.to_string()),
                    fresh: false,
                    traceparent: traceparent(headers),
                });
            }
        }
        let (id, token) = self.tokens.mint().map_err(|e| {
            ApiError::new(warp::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        })?;
        Ok(Caller {
            owner: Owner::Client(id),
            limit: addr_key(),
            addr: addr_key(),
            key: None,
            token: Some(token),
            fresh: true,
            traceparent: traceparent(headers),
        })
    }
}

/// The `traceparent` header (W3C trace context; 55 characters in its version 00), if any.
/// Longer values are dropped rather than carried to every node.
fn traceparent(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?.trim();
    (value.len() <= 128).then(|| value.to_string())
}

/// The token of `Authorization: Bearer TOKEN`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Every value of the cookie `name` across the request's `Cookie` headers (HTTP/2 may split
/// them into several).
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v.trim())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identify() -> Identify {
        Identify {
            keys: None,
            tokens: ClientTokens::new().unwrap(),
        }
    }

    #[test]
    fn tokens_are_honoured_only_when_signed_here() {
        let a = identify();
        let (id, token) = a.tokens.mint().unwrap();
        assert_eq!(a.tokens.verify(&token), Some(id));
        let b = identify();
        assert_eq!(b.tokens.verify(&token), None, "another server's token");
        let mut forged = token.clone().into_bytes();
        forged[40] = if forged[40] == b'A' { b'B' } else { b'A' };
        assert_eq!(a.tokens.verify(&String::from_utf8(forged).unwrap()), None);
        assert_eq!(a.tokens.verify("short"), None);
    }

    #[test]
    fn callers_without_keys_are_scoped_by_token_and_limited_by_address() {
        let a = identify();
        let peer: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let first = a.caller(&HeaderMap::new(), Some(peer)).unwrap();
        let resp = first.finish(Response::default());
        let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(cookie.contains("Secure"));

        let mut headers = HeaderMap::new();
        let pair = cookie.split(';').next().unwrap();
        headers.insert(
            header::COOKIE,
            format!("theme=dark; {pair}").parse().unwrap(),
        );
        let again = a.caller(&headers, Some(peer)).unwrap();
        assert_eq!(again.owner, first.owner, "the cookie keeps the identity");
        assert!(
            again
                .finish(Response::default())
                .headers()
                .get("set-cookie")
                .is_none(),
            "no new cookie for a known client"
        );
        let mut by_header = HeaderMap::new();
        by_header.insert(TOKEN_HEADER, first.token.clone().unwrap().parse().unwrap());
        assert_eq!(a.caller(&by_header, Some(peer)).unwrap().owner, first.owner);

        let stranger = a.caller(&HeaderMap::new(), Some(peer)).unwrap();
        assert_ne!(stranger.owner, first.owner);
        assert_eq!(stranger.limit, first.limit, "same address, same limits");
    }

    #[test]
    fn ipv6_limits_count_the_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(LimitKey::of_addr(a), LimitKey::of_addr(b));
        assert_ne!(LimitKey::of_addr(a), LimitKey::of_addr(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            LimitKey::of_addr(mapped),
            LimitKey::of_addr("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn keys_are_required_when_configured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let key = crate::access::auth::add_new_key(&path, "alice", false).unwrap();
        let id = Identify {
            keys: Some(Arc::new(KeyFile::load(&path).unwrap())),
            tokens: ClientTokens::new().unwrap(),
        };
        let none = id.caller(&HeaderMap::new(), None).unwrap_err();
        assert_eq!(none.status(), 401);
        let mut wrong = HeaderMap::new();
        wrong.insert(header::AUTHORIZATION, "Bearer glk_nope".parse().unwrap());
        assert_eq!(id.caller(&wrong, None).unwrap_err().status(), 401);
        let mut right = HeaderMap::new();
        right.insert(
            header::AUTHORIZATION,
            format!("bearer  {key}").parse().unwrap(),
        );
        let c = id.caller(&right, None).unwrap();
        assert_eq!(c.owner, Owner::Key(Arc::from("alice")));
        assert!(!c.is_admin());
    }
}
