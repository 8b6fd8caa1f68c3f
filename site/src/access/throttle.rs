//! Per-caller limits: a request rate (token bucket, `--rate-limit`) and counted shares of
//! shared resources (images in the queue, event streams), so one caller cannot take what
//! every caller shares. Both are keyed by [`LimitKey`] and both forget a caller once it has
//! nothing counted, so their memory follows the number of active callers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::access::caller::{LimitKey, net_of};
use crate::http::error::ApiError;

/// `--rate-limit`: requests per second and burst per caller, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests allowed at once before the rate applies.
    pub burst: NonZeroU32,
}

impl RateSpec {
    /// `per_second` sustained with bursts of `burst`; `None` when either is 0.
    pub const fn new(per_second: u32, burst: u32) -> Option<RateSpec> {
        match (NonZeroU32::new(per_second), NonZeroU32::new(burst)) {
            (Some(per_second), Some(burst)) => Some(RateSpec { per_second, burst }),
            _ => None,
        }
    }
}

/// The parsed flag: a rate or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateFlag(pub Option<RateSpec>);

impl FromStr for RateFlag {
    type Err = String;
    fn from_str(s: &str) -> Result<RateFlag, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(RateFlag(None));
        }
        let (rate, burst) = match s.split_once(':') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or_else(|| {
                    format!("expected RPS[:BURST] with positive integers, or off; got {s:?}")
                })
        };
        let per_second = num(rate)?;
        let burst = match burst {
            Some(b) => num(b)?,
            None => per_second,
        };
        Ok(RateFlag(Some(RateSpec { per_second, burst })))
    }
}

type Keyed =
    RateLimiter<LimitKey, governor::state::keyed::DefaultKeyedStateStore<LimitKey>, DefaultClock>;

/// The request rate limiter (GCRA, from the `governor` crate).
pub struct RateLimit {
    limiter: Option<Keyed>,
    clock: DefaultClock,
}

impl RateLimit {
    /// A limiter for `spec`; `None` allows everything.
    pub fn new(spec: Option<RateSpec>) -> RateLimit {
        RateLimit {
            limiter: spec
                .map(|s| RateLimiter::keyed(Quota::per_second(s.per_second).allow_burst(s.burst))),
            clock: DefaultClock::default(),
        }
    }

    /// Count one request of `key`: `Err(wait)` when it is over its rate.
    pub fn check(&self, key: &LimitKey) -> Result<(), Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(l) => l
                .check_key(key)
                .map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        }
    }

    /// Forget callers whose bucket is full again; run periodically so the table stays small.
    pub fn prune(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Callers currently remembered (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

/// Most client addresses whose failed key checks are remembered at once (a few MB). Past
/// it, failures of addresses not yet remembered go uncounted until entries expire: an
/// attacker needs more addresses than this to get unthrottled guesses, and nobody else is
/// ever refused for it.
const MAX_FAILING_ADDRESSES: usize = 65_536;

/// Failed API key checks per client address, limited before any key is checked: an
/// address past its rate gets 429 whatever key it sends, so keys cannot be guessed at wire
/// speed (2,000 wrong keys at 5,800 requests/s once all got 401). A generic cell rate
/// algorithm, as [`RateLimit`] uses, but only failures count: a client whose key is valid
/// never uses any of it, and a valid key from another address is never affected.
#[derive(Debug)]
pub struct FailureThrottle {
    spec: Option<RateSpec>,
    /// Per address (the /64 for IPv6): when its failures will have drained.
    drained_at: Mutex<HashMap<IpAddr, Instant>>,
}

impl FailureThrottle {
    /// Allows `spec`'s rate and burst of failures per address; `None`: unlimited.
    pub fn new(spec: Option<RateSpec>) -> FailureThrottle {
        FailureThrottle {
            spec,
            drained_at: Mutex::new(HashMap::new()),
        }
    }

    fn interval(spec: RateSpec) -> Duration {
        Duration::from_secs(1) / spec.per_second.get()
    }

    /// `Err(wait)` when `addr` has spent its failures: refuse its request without checking
    /// its key, and tell it to wait that long.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let Some(spec) = self.spec else {
            return Ok(());
        };
        let tolerance = Self::interval(spec) * (spec.burst.get() - 1);
        let drained = self.drained_at.lock().get(&net_of(addr)).copied();
        match drained {
            Some(at) if at > now + tolerance => Err(at - tolerance - now),
            _ => Ok(()),
        }
    }

    /// Count one failed key check from `addr`.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        let Some(spec) = self.spec else {
            return;
        };
        let net = net_of(addr);
        let mut map = self.drained_at.lock();
        if map.len() >= MAX_FAILING_ADDRESSES && !map.contains_key(&net) {
            map.retain(|_, at| *at > now);
            if map.len() >= MAX_FAILING_ADDRESSES {
                return;
            }
        }
        let at = map.entry(net).or_insert(now);
        *at = (*at).max(now) + Self::interval(spec);
    }

    /// Forget addresses whose failures have drained; run periodically.
    pub fn prune(&self, now: Instant) {
        let mut map = self.drained_at.lock();
        map.retain(|_, at| *at > now);
        map.shrink_to_fit();
    }

    /// Addresses remembered now (for tests).
    pub fn tracked(&self) -> usize {
        self.drained_at.lock().len()
    }
}

/// Counts a shared resource per caller, with a cap per caller and one overall.
#[derive(Debug)]
pub struct KeyedCounter {
    inner: Arc<Mutex<Counts>>,
    /// Woken whenever units are given back, for [`KeyedCounter::take_within`].
    freed: Arc<Notify>,
    per_key: usize,
    total: usize,
}

#[derive(Debug, Default)]
struct Counts {
    by_key: HashMap<LimitKey, usize>,
    total: usize,
}

/// Why a share could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareRefused {
    /// This caller already holds its cap.
    Caller { cap: usize },
    /// Every caller together holds the overall cap.
    Total { cap: usize },
}

impl ShareRefused {
    /// The answer to a caller refused a share of `what` ("event streams open", say): 429 when
    /// it is its own cap, 503 when it is everyone's; both with `Retry-After`.
    pub fn into_api_error(self, what: &str, retry_after_s: u64) -> ApiError {
        match self {
            ShareRefused::Caller { cap } => ApiError::too_many(
                format!(
                    "you have {cap} {what} already (the limit per caller); retry in {retry_after_s} s"
                ),
                retry_after_s,
            ),
            ShareRefused::Total { cap } => ApiError::unavailable(
                format!(
                    "the server has {cap} {what} over all callers (its limit); retry in {retry_after_s} s"
                ),
                retry_after_s,
            ),
        }
    }
}

impl KeyedCounter {
    /// At most `per_key` per caller and `total` overall.
    pub fn new(per_key: usize, total: usize) -> KeyedCounter {
        KeyedCounter {
            inner: Arc::new(Mutex::new(Counts::default())),
            freed: Arc::new(Notify::new()),
            per_key: per_key.max(1),
            total: total.max(1),
        }
    }

    /// Take `n` units for `key`, waiting up to `wait` for them to be given back when the
    /// caps are reached: a client with more requests in flight than its share queues
    /// briefly instead of being refused at once, while one that holds its share for good
    /// (a slow sender) still gets the refusal after `wait`.
    pub async fn take_within(
        &self,
        key: &LimitKey,
        n: usize,
        wait: Duration,
    ) -> Result<Share, ShareRefused> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before trying, so a release between the try and the wait is seen.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let refused = match self.take(key, n) {
                Ok(share) => return Ok(share),
                Err(refused) => refused,
            };
            tokio::select! {
                () = &mut freed => {}
                () = tokio::time::sleep_until(deadline) => return Err(refused),
            }
        }
    }

    /// Take `n` units for `key`, all or nothing.
    pub fn take(&self, key: &LimitKey, n: usize) -> Result<Share, ShareRefused> {
        let mut c = self.inner.lock();
        let held = c.by_key.get(key).copied().unwrap_or(0);
        if held + n > self.per_key {
            return Err(ShareRefused::Caller { cap: self.per_key });
        }
        if c.total + n > self.total {
            return Err(ShareRefused::Total { cap: self.total });
        }
        c.total += n;
        *c.by_key.entry(key.clone()).or_default() += n;
        Ok(Share {
            inner: self.inner.clone(),
            freed: self.freed.clone(),
            key: key.clone(),
            n,
        })
    }

    /// Units held by `key` now.
    pub fn held(&self, key: &LimitKey) -> usize {
        let c = self.inner.lock();
        c.by_key.get(key).copied().unwrap_or(0)
    }

    /// Units held overall.
    pub fn total(&self) -> usize {
        self.inner.lock().total
    }
}

/// Units taken from a [`KeyedCounter`], given back on drop.
#[derive(Debug)]
pub struct Share {
    inner: Arc<Mutex<Counts>>,
    freed: Arc<Notify>,
    key: LimitKey,
    n: usize,
}

impl Share {
    /// Split `n` units off into a share of their own (one per image of a request).
    pub fn split(&mut self, n: usize) -> Option<Share> {
        if n > self.n {
            return None;
        }
        self.n -= n;
        Some(Share {
            inner: self.inner.clone(),
            freed: self.freed.clone(),
            key: self.key.clone(),
            n,
        })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        if self.n == 0 {
            return;
        }
        let mut c = self.inner.lock();
        c.total = c.total.saturating_sub(self.n);
        if let Some(held) = c.by_key.get_mut(&self.key) {
            *held = held.saturating_sub(self.n);
            if *held == 0 {
                c.by_key.remove(&self.key);
            }
        }
        drop(c);
        self.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> LimitKey {
        LimitKey::Key(Arc::from(s))
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_share_is_waited_for_until_given_back_or_the_wait_ends() {
        let c = Arc::new(KeyedCounter::new(1, 10));
        let held = c.take(&key("a"), 1).unwrap();
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.take_within(&key("a"), 1, Duration::from_secs(2)).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiter.is_finished(), "waits while the share is held");
        drop(held);
        let got = waiter.await.unwrap().expect("given back, so taken");
        assert_eq!(c.held(&key("a")), 1);
        let started = tokio::time::Instant::now();
        let refused = c.take_within(&key("a"), 1, Duration::from_secs(2)).await;
        assert_eq!(refused.unwrap_err(), ShareRefused::Caller { cap: 1 });
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        drop(got);
        assert_eq!(c.total(), 0);
    }

    #[test]
    fn failed_key_checks_are_limited_per_address_and_drain() {
        let t = FailureThrottle::new(RateSpec::new(10, 50));
        let now = Instant::now();
        let bad: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for i in 0..50 {
            assert_eq!(t.check(bad, now), Ok(()), "failure {i} is within the burst");
            t.failed(bad, now);
        }
        let wait = t.check(bad, now).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert_eq!(t.check(other, now), Ok(()), "another address is unaffected");
        assert_eq!(t.check(bad, now + wait), Ok(()), "one more after 100 ms");
        t.failed(bad, now + wait);
        assert!(t.check(bad, now + wait).is_err());
        // IPv6 counts by /64.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..50 {
            t.failed(a, now);
        }
        assert!(t.check(b, now).is_err());
        assert_eq!(t.tracked(), 2);
        t.prune(now + Duration::from_secs(6));
        assert_eq!(t.tracked(), 0, "drained after 5 s");
        let off = FailureThrottle::new(None);
        for _ in 0..1000 {
            off.failed(bad, now);
        }
        assert_eq!(off.check(bad, now), Ok(()));
    }

    #[test]
    fn rate_flags_parse() {
        assert_eq!("off".parse::<RateFlag>().unwrap(), RateFlag(None));
        let r = "20:50".parse::<RateFlag>().unwrap().0.unwrap();
        assert_eq!((r.per_second.get(), r.burst.get()), (20, 50));
        let r = "7".parse::<RateFlag>().unwrap().0.unwrap();
        assert_eq!((r.per_second.get(), r.burst.get()), (7, 7));
        for bad in ["0", "x", "5:0", "-1", ""] {
            assert!(bad.parse::<RateFlag>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_burst_is_allowed_then_the_rate_applies_per_caller() {
        let spec = "1:3".parse::<RateFlag>().unwrap().0;
        let rl = RateLimit::new(spec);
        for _ in 0..3 {
            assert!(rl.check(&key("a")).is_ok());
        }
        let wait = rl.check(&key("a")).unwrap_err();
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1));
        assert!(
            rl.check(&key("b")).is_ok(),
            "another caller has its own bucket"
        );
        assert_eq!(rl.tracked(), 2);
        assert!(RateLimit::new(None).check(&key("a")).is_ok());
    }

    #[test]
    fn shares_are_capped_per_caller_and_overall_and_given_back() {
        let c = KeyedCounter::new(3, 4);
        let mut a = c.take(&key("a"), 3).unwrap();
        assert_eq!(
            c.take(&key("a"), 1).unwrap_err(),
            ShareRefused::Caller { cap: 3 }
        );
        let b = c.take(&key("b"), 1).unwrap();
        assert_eq!(
            c.take(&key("b"), 1).unwrap_err(),
            ShareRefused::Total { cap: 4 }
        );
        let one = a.split(1).unwrap();
        assert!(a.split(5).is_none());
        drop(one);
        assert_eq!(c.held(&key("a")), 2);
        drop(a);
        drop(b);
        assert_eq!(c.total(), 0);
        assert!(c.inner.lock().by_key.is_empty(), "forgotten at zero");
    }
}
