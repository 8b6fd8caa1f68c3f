//! The connection slots of every listener, and which connection gives its slot up when a
//! newcomer needs one.
//!
//! Slots are counted in two pools: the public one (HTTPS, gRPC and the redirect listener
//! together) and the admin listener's own ([`Shares`]). A newcomer that finds its pool (or,
//! for the redirect listener, its share) full, or its address at its cap, takes the slot of
//! a connection in the same scope, chosen in this order:
//!
//! 1. idle, older than [`EVICTION_GRACE`]: those that never completed a request head (a
//!    slowloris, a stalled handshake) first, the oldest first, then the one idle longest;
//! 2. busy with a request, older than the grace: the slowest sender, fewest bytes received
//!    per second over its life (a slow upload, a trickling body);
//! 3. idle and younger than the grace, in the same order as 1.
//!
//! A busy connection younger than the grace is never chosen, and a young idle one only when
//! nothing older is left: a newcomer (a health probe on a loaded server among them) must
//! have the time to send its request before the next newcomer may take its slot. An address
//! at its cap only gives up its own connections idle after a request. When nothing can be
//! chosen the newcomer is [`Refused`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

use super::{ConnLimits, REFUSALS_AT_ONCE};
use crate::access::caller::net_of;

/// How long a new connection is safe from eviction: it has this long to finish its
/// handshake and start a request, and its receive rate means something only after a while.
pub const EVICTION_GRACE: Duration = Duration::from_secs(1);

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    /// The public HTTPS listener.
    Https,
    /// HTTP/3 on the public port (QUIC over UDP; a connection is a QUIC connection).
    Http3,
    /// The KServe gRPC listener (public, TLS).
    Grpc,
    /// The plain-HTTP listener that redirects to HTTPS (public, bounded share).
    Redirect,
    /// The plain-HTTP admin listener (its own reserved share).
    Admin,
}

impl Listener {
    /// The pool its slots come from.
    fn pool(self) -> Pool {
        match self {
            Listener::Admin => Pool::Admin,
            Listener::Https | Listener::Http3 | Listener::Grpc | Listener::Redirect => Pool::Public,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Its name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Listener::Https => "HTTPS",
            Listener::Http3 => "HTTP/3",
            Listener::Grpc => "gRPC",
            Listener::Redirect => "redirect",
            Listener::Admin => "admin",
        }
    }
}

/// The two pools of slots: the public listeners cannot take the admin listener's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pool {
    Public,
    Admin,
}

/// How `max_total` slots are split between the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    /// Slots of HTTPS, HTTP/3, gRPC and the redirect listener together.
    pub public: usize,
    /// Slots only the admin listener uses: a sixty-fourth of the total, 4 to 64 (a few
    /// operators and a Prometheus scraper need a handful), so an attack on the public
    /// listeners never locks operators out, nor an attack on the admin port the public.
    pub admin: usize,
    /// The most public slots the redirect listener may hold: an eighth. It answers every
    /// request with a 308 and closes, so more would only serve an attacker.
    pub redirect: usize,
}

impl Shares {
    /// The split of `max_total` (admin and public always get at least one each).
    pub fn of(max_total: usize) -> Shares {
        let admin = (max_total / 64).clamp(4, 64).min(max_total / 4).max(1);
        let public = max_total.saturating_sub(admin).max(1);
        let redirect = (public / 8).max(4).min(public);
        Shares {
            public,
            admin,
            redirect,
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address holds `max_per_ip` busy connections already.
    PerIp,
    /// Every slot it could take is busy and too young to reclaim.
    Full,
}

/// Counters of the registry, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnCounters {
    /// Connections admitted.
    pub accepted: AtomicU64,
    /// Connections refused because their address had its share open.
    pub refused_per_ip: AtomicU64,
    /// Connections refused because nothing could be reclaimed.
    pub refused_full: AtomicU64,
    /// Idle connections closed to make room for new ones.
    pub evicted: AtomicU64,
    /// Busy connections (the slowest senders) closed to make room for new ones.
    pub evicted_busy: AtomicU64,
    /// Connections closed by the handshake, header or idle timeout.
    pub timed_out: AtomicU64,
    /// Refused connections that got their 429 or 503 (or gRPC status).
    pub refusals_answered: AtomicU64,
    /// Refused connections closed at accept without an answer: the refusal budget was spent.
    pub refusals_dropped: AtomicU64,
    /// HTTP/3 clients sent a Retry, to prove their address before the server keeps any
    /// state for them, because handshakes piled up (a flood, perhaps from spoofed sources).
    pub retries_sent: AtomicU64,
}

impl ConnCounters {
    /// Every counter with its `event` label, for `/metrics`.
    pub fn events(&self) -> [(&'static str, u64); 9] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("accepted", get(&self.accepted)),
            ("refused_per_ip", get(&self.refused_per_ip)),
            ("refused_full", get(&self.refused_full)),
            ("evicted", get(&self.evicted)),
            ("evicted_busy", get(&self.evicted_busy)),
            ("timed_out", get(&self.timed_out)),
            ("refusal_answered", get(&self.refusals_answered)),
            ("refusal_dropped", get(&self.refusals_dropped)),
            ("retry_sent", get(&self.retries_sent)),
        ]
    }
}

/// All open connections of the process's listeners (TCP, and HTTP/3's QUIC ones).
#[derive(Debug)]
pub struct Registry {
    limits: ConnLimits,
    shares: Shares,
    inner: Mutex<Slots>,
    next_id: AtomicU64,
    /// Refusals being answered at once (see [`super::refusal`]); each holds a descriptor
    /// from the reserve.
    pub(crate) refusals: Arc<Semaphore>,
    /// What became of connections, for `/metrics`.
    pub counters: ConnCounters,
}

#[derive(Debug, Default)]
struct Slots {
    open: HashMap<u64, Arc<ConnState>>,
    per_ip: HashMap<(Pool, IpAddr), usize>,
    per_listener: [usize; 5],
}

impl Slots {
    fn in_pool(&self, pool: Pool) -> usize {
        [
            Listener::Https,
            Listener::Http3,
            Listener::Grpc,
            Listener::Redirect,
            Listener::Admin,
        ]
        .into_iter()
        .filter(|l| l.pool() == pool)
        .map(|l| self.per_listener[l.index()])
        .sum()
    }
}

impl crate::http::pace::ConnProgress for ConnState {
    fn bytes_received(&self) -> u64 {
        ConnState::bytes_received(self)
    }
    fn in_flight(&self) -> u32 {
        ConnState::in_flight(self)
    }
}

/// One connection's live state.
#[derive(Debug)]
pub struct ConnState {
    id: u64,
    net: IpAddr,
    listener: Listener,
    epoch: Instant,
    /// Requests in flight now.
    active: AtomicU32,
    /// Requests started so far.
    started: AtomicU64,
    /// Milliseconds after `epoch` when the connection last became idle.
    idle_since_ms: AtomicU64,
    /// Bytes received on the socket so far (see [`super::Metered`]).
    received: AtomicU64,
    /// Set once the registry no longer counts it (evicted, or closed).
    released: AtomicBool,
    evicted: AtomicBool,
    wake: Notify,
}

impl ConnState {
    fn idle_since(&self) -> Instant {
        self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst))
    }

    /// Whether the registry told this connection to close.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::SeqCst)
    }

    /// Adds `n` bytes received.
    pub(crate) fn add_received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes received on the socket so far.
    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Requests in flight on it now.
    pub fn in_flight(&self) -> u32 {
        self.active.load(Ordering::SeqCst)
    }

    /// Bytes received per second over its life, as of `now` (its age counted as at least a
    /// second, so a brand-new connection does not look infinitely fast or slow).
    fn rate(&self, now: Instant) -> u64 {
        let ms = now
            .saturating_duration_since(self.epoch)
            .as_millis()
            .max(1000);
        let ms = u64::try_from(ms).unwrap_or(u64::MAX);
        self.bytes_received().saturating_mul(1000) / ms
    }

    /// Completes when the connection should close: evicted, or over its handshake/header/
    /// idle deadline with no request in flight. Returns whether it timed out (not evicted).
    pub async fn closing(&self, limits: &ConnLimits) -> bool {
        loop {
            if self.is_evicted() {
                return false;
            }
            let now = Instant::now();
            let deadline = if self.active.load(Ordering::SeqCst) > 0 {
                now + limits.idle_timeout
            } else if self.started.load(Ordering::SeqCst) == 0 {
                self.idle_since() + limits.header_timeout
            } else {
                self.idle_since() + limits.idle_timeout
            };
            if deadline <= now {
                return true;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline.into()) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Completes once the connection is evicted.
    pub async fn evicted(&self) {
        while !self.is_evicted() {
            self.wake.notified().await;
        }
    }

    /// Marks a request in flight until the returned guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.started.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }
}

/// One request in flight on a connection; the connection is idle again when the last of
/// these drops (with the response body).
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.0;
        let ms = u64::try_from(s.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        if s.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            s.idle_since_ms.store(ms, Ordering::SeqCst);
            s.wake.notify_one();
        }
    }
}

/// A connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Ticket {
    registry: Arc<Registry>,
    state: Arc<ConnState>,
}

impl Ticket {
    /// The connection's state, for its watchdog and its requests.
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.registry.release(&self.state);
    }
}

/// Which connections a newcomer may take a slot from.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// Any of the pool's (its pool is full).
    Pool(Pool),
    /// Its own listener's (the redirect listener at its share).
    Listener(Listener),
    /// Its own address's idle ones that completed a request (the address at its cap):
    /// never a busy one, nor one still in its handshake, which may be a user behind the
    /// same NAT.
    Address(Pool, IpAddr),
}

impl Scope {
    fn holds(self, c: &ConnState) -> bool {
        match self {
            Scope::Pool(p) => c.listener.pool() == p,
            Scope::Listener(l) => c.listener == l,
            Scope::Address(p, net) => c.listener.pool() == p && c.net == net,
        }
    }
}

impl Registry {
    /// An empty registry enforcing `limits`, its slots split by [`Shares::of`].
    pub fn new(limits: ConnLimits) -> Arc<Registry> {
        Arc::new(Registry {
            limits,
            shares: Shares::of(limits.max_total),
            inner: Mutex::new(Slots::default()),
            next_id: AtomicU64::new(1),
            refusals: Arc::new(Semaphore::new(REFUSALS_AT_ONCE)),
            counters: ConnCounters::default(),
        })
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    /// How its slots are split.
    pub fn shares(&self) -> Shares {
        self.shares
    }

    /// Connections open now, on all listeners.
    pub fn open(&self) -> usize {
        self.inner.lock().open.len()
    }

    /// Connections open now on `listener`.
    pub fn open_on(&self, listener: Listener) -> usize {
        self.inner.lock().per_listener[listener.index()]
    }

    /// Take a slot for a connection from `peer` on `listener`, reclaiming one (see the
    /// module doc) when its address, its listener's share or its pool is full.
    pub fn admit(self: &Arc<Self>, peer: IpAddr, listener: Listener) -> Result<Ticket, Refused> {
        self.admit_at(peer, listener, Instant::now())
    }

    fn admit_at(
        self: &Arc<Self>,
        peer: IpAddr,
        listener: Listener,
        now: Instant,
    ) -> Result<Ticket, Refused> {
        let net = net_of(peer);
        let pool = listener.pool();
        let mut slots = self.inner.lock();
        if slots.per_ip.get(&(pool, net)).copied().unwrap_or(0) >= self.limits.max_per_ip {
            let Some(victim) = Self::victim(&slots, Scope::Address(pool, net), now) else {
                self.counters.refused_per_ip.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::PerIp);
            };
            self.evict(&mut slots, &victim);
        }
        let cap = match pool {
            Pool::Public => self.shares.public,
            Pool::Admin => self.shares.admin,
        };
        let scope = if listener == Listener::Redirect
            && slots.per_listener[listener.index()] >= self.shares.redirect
        {
            Some(Scope::Listener(listener))
        } else if slots.in_pool(pool) >= cap {
            Some(Scope::Pool(pool))
        } else {
            None
        };
        if let Some(scope) = scope {
            let Some(victim) = Self::victim(&slots, scope, now) else {
                self.counters.refused_full.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::Full);
            };
            self.evict(&mut slots, &victim);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            id,
            net,
            listener,
            epoch: now,
            active: AtomicU32::new(0),
            started: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            received: AtomicU64::new(0),
            released: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        });
        slots.open.insert(id, state.clone());
        *slots.per_ip.entry((pool, net)).or_default() += 1;
        slots.per_listener[listener.index()] += 1;
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Ticket {
            registry: self.clone(),
            state,
        })
    }

    /// The connection in `scope` to reclaim (see the module doc), if any.
    fn victim(slots: &Slots, scope: Scope, now: Instant) -> Option<Arc<ConnState>> {
        let idle = |c: &&Arc<ConnState>| c.active.load(Ordering::SeqCst) == 0;
        let young = |c: &&Arc<ConnState>| now.saturating_duration_since(c.epoch) < EVICTION_GRACE;
        // Never-started ones first, then the longest idle.
        let idle_order =
            |c: &&Arc<ConnState>| (c.started.load(Ordering::SeqCst) > 0, c.idle_since());
        let candidates = || slots.open.values().filter(|c| scope.holds(c));
        if let Scope::Address(..) = scope {
            return candidates()
                .filter(idle)
                .filter(|c| c.started.load(Ordering::SeqCst) > 0)
                .min_by_key(|c| c.idle_since())
                .cloned();
        }
        candidates()
            .filter(|c| idle(c) && !young(c))
            .min_by_key(idle_order)
            .or_else(|| {
                candidates()
                    .filter(|c| !idle(c) && !young(c))
                    .min_by_key(|c| (c.rate(now), c.epoch))
            })
            .or_else(|| candidates().filter(idle).min_by_key(idle_order))
            .cloned()
    }

    fn evict(&self, slots: &mut Slots, victim: &Arc<ConnState>) {
        let busy = victim.active.load(Ordering::SeqCst) > 0;
        Self::forget(slots, victim);
        victim.evicted.store(true, Ordering::SeqCst);
        victim.wake.notify_one();
        let counter = if busy {
            &self.counters.evicted_busy
        } else {
            &self.counters.evicted
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            listener = victim.listener.name(),
            busy,
            bytes = victim.bytes_received(),
            "connection evicted to make room"
        );
    }

    fn release(&self, state: &Arc<ConnState>) {
        let mut slots = self.inner.lock();
        Self::forget(&mut slots, state);
    }

    /// Stop counting `state` (once, whoever gets there first: eviction or close).
    fn forget(slots: &mut Slots, state: &Arc<ConnState>) {
        if state.released.swap(true, Ordering::SeqCst) {
            return;
        }
        slots.open.remove(&state.id);
        let key = (state.listener.pool(), state.net);
        if let Some(n) = slots.per_ip.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                slots.per_ip.remove(&key);
            }
        }
        let n = &mut slots.per_listener[state.listener.index()];
        *n = n.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_total: usize, max_per_ip: usize) -> ConnLimits {
        ConnLimits {
            max_total,
            max_per_ip,
            ..ConnLimits::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    /// Admits `n` connections from distinct addresses on `listener`, `age` ago.
    fn fill(r: &Arc<Registry>, n: usize, listener: Listener, at: Instant) -> Vec<Ticket> {
        (0..n)
            .map(|i| {
                r.admit_at(ip(10 + i as u8), listener, at)
                    .expect("room for it")
            })
            .collect()
    }

    #[test]
    fn shares_leave_the_admin_its_own_and_bound_the_redirect() {
        let s = Shares::of(896);
        assert_eq!((s.public, s.admin, s.redirect), (882, 14, 110));
        assert!(s.public + s.admin <= 896);
        let tiny = Shares::of(4);
        assert_eq!((tiny.public, tiny.admin), (3, 1));
    }

    #[test]
    fn when_all_are_busy_the_slowest_sender_is_reclaimed() {
        let r = Registry::new(limits(100, 10));
        let public = r.shares().public;
        let start = Instant::now();
        let tickets = fill(&r, public, Listener::Https, start);
        let _busy: Vec<InFlight> = tickets.iter().map(|t| t.state().begin()).collect();
        for (i, t) in tickets.iter().enumerate() {
            t.state().add_received(1000 + i);
        }
        let slow = &tickets[3];
        slow.state().received.store(10, Ordering::Relaxed);
        let later = start + Duration::from_secs(10);
        let newcomer = r
            .admit_at(ip(250), Listener::Https, later)
            .expect("admitted");
        assert!(
            slow.state().is_evicted(),
            "the slowest sender gave its slot"
        );
        assert_eq!(tickets.iter().filter(|t| t.state().is_evicted()).count(), 1);
        assert_eq!(r.counters.evicted_busy.load(Ordering::Relaxed), 1);
        assert_eq!(r.counters.evicted.load(Ordering::Relaxed), 0);
        drop(newcomer);
    }

    #[test]
    fn young_busy_connections_are_safe_and_old_idle_ones_go_first() {
        let r = Registry::new(limits(100, 10));
        let public = r.shares().public;
        let start = Instant::now();
        let tickets = fill(&r, public, Listener::Https, start);
        let mut busy: Vec<InFlight> = tickets.iter().map(|t| t.state().begin()).collect();
        // Within the grace period nothing busy may be reclaimed: refused.
        let soon = start + EVICTION_GRACE / 2;
        assert_eq!(
            r.admit_at(ip(250), Listener::Https, soon).err(),
            Some(Refused::Full)
        );
        assert_eq!(r.counters.refused_full.load(Ordering::Relaxed), 1);
        drop(busy.remove(0));
        let later = start + Duration::from_secs(5);
        let _t = r
            .admit_at(ip(250), Listener::Https, later)
            .expect("admitted");
        assert!(tickets[0].state().is_evicted(), "the idle one went first");
        assert_eq!(r.counters.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(r.counters.evicted_busy.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_newcomer_is_not_reclaimed_before_old_slow_senders() {
        let r = Registry::new(limits(100, 10));
        let public = r.shares().public;
        let start = Instant::now();
        let tickets = fill(&r, public, Listener::Https, start);
        let _busy: Vec<InFlight> = tickets.iter().map(|t| t.state().begin()).collect();
        let later = start + Duration::from_secs(5);
        let probe = r.admit_at(ip(250), Listener::Https, later).unwrap();
        // The next newcomers, just after, take old busy slots, not the probe's.
        let next = later + Duration::from_millis(10);
        let _others: Vec<Ticket> = (0..5)
            .map(|i| r.admit_at(ip(240 + i), Listener::Https, next).unwrap())
            .collect();
        assert!(!probe.state().is_evicted());
        assert_eq!(r.counters.evicted_busy.load(Ordering::Relaxed), 6);
        // With only young connections left, a young idle one is taken rather than refuse.
        let r = Registry::new(limits(100, 10));
        let tickets = fill(&r, public, Listener::Https, start);
        let soon = start + EVICTION_GRACE / 2;
        let _t = r.admit_at(ip(250), Listener::Https, soon).unwrap();
        let evicted = tickets.iter().filter(|t| t.state().is_evicted()).count();
        assert_eq!(evicted, 1, "one young idle connection gave way");
    }

    #[test]
    fn the_redirect_listener_reclaims_only_its_own_share() {
        let r = Registry::new(limits(100, 100));
        let s = r.shares();
        let start = Instant::now();
        let https = fill(&r, 3, Listener::Https, start);
        let redirect: Vec<Ticket> = (0..s.redirect)
            .map(|_| r.admit_at(ip(200), Listener::Redirect, start).unwrap())
            .collect();
        let later = start + Duration::from_secs(5);
        let _t = r.admit_at(ip(201), Listener::Redirect, later).unwrap();
        assert_eq!(r.open_on(Listener::Redirect), s.redirect);
        assert!(https.iter().all(|t| !t.state().is_evicted()));
        assert_eq!(
            redirect.iter().filter(|t| t.state().is_evicted()).count(),
            1
        );
    }

    #[test]
    fn the_admin_share_is_its_own() {
        let r = Registry::new(limits(256, 1000));
        let s = r.shares();
        let start = Instant::now();
        let public: Vec<Ticket> = (0..s.public)
            .map(|_| r.admit_at(ip(9), Listener::Grpc, start).unwrap())
            .collect();
        let admin: Vec<Ticket> = (0..s.admin)
            .map(|_| r.admit_at(ip(9), Listener::Admin, start).unwrap())
            .collect();
        let later = start + Duration::from_secs(5);
        let _a = r.admit_at(ip(8), Listener::Admin, later).unwrap();
        assert_eq!(admin.iter().filter(|t| t.state().is_evicted()).count(), 1);
        assert!(public.iter().all(|t| !t.state().is_evicted()));
        let _h = r.admit_at(ip(8), Listener::Https, later).unwrap();
        assert_eq!(r.open_on(Listener::Admin), s.admin);
        assert_eq!(r.open(), s.public + s.admin);
    }

    #[test]
    fn an_address_at_its_cap_gives_up_its_own_idle_ones_but_not_busy_ones() {
        let r = Registry::new(limits(100, 2));
        let start = Instant::now();
        let a = r.admit_at(ip(1), Listener::Https, start).unwrap();
        let b = r.admit_at(ip(1), Listener::Https, start).unwrap();
        let _busy = b.state().begin();
        let later = start + Duration::from_secs(5);
        // Still in its handshake (never started): maybe a neighbour behind the same NAT.
        assert_eq!(
            r.admit_at(ip(1), Listener::Https, later).err(),
            Some(Refused::PerIp)
        );
        drop(a.state().begin());
        let c = r.admit_at(ip(1), Listener::Https, later).unwrap();
        assert!(a.state().is_evicted());
        let _busy_c = c.state().begin();
        assert_eq!(
            r.admit_at(ip(1), Listener::Https, later).err(),
            Some(Refused::PerIp)
        );
        assert!(!b.state().is_evicted());
        assert_eq!(r.counters.refused_per_ip.load(Ordering::Relaxed), 2);
    }
}
