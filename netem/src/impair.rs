//! Socket-free impairment logic: given a packet's arrival time and size, decide whether it is
//! dropped and when (and how many times) it leaves.
//!
//! Kept free of sockets and of the clock on purpose: every decision takes `now` as an argument,
//! so unit tests drive it with a fake clock and a seeded RNG and get exact, reproducible answers.
//! The tokio relay ([`crate::relay`]) is a thin layer that feeds real packets through it.
//!
//! Order of the stages for one packet, mirroring Linux netem + tbf:
//! blackhole → random loss → Gilbert-Elliott loss → token-bucket rate limit (may tail-drop when
//! its queue is full) → delay ± jitter → reordering (extra hold) → duplication.

use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use thiserror::Error;

/// Gilbert-Elliott two-state burst-loss model (the same four parameters as netem's
/// `loss gemodel p r 1-h 1-k`).
///
/// The chain is stepped once per packet: in the Good state a packet is lost with probability
/// `loss_good`, in the Bad state with `loss_bad`; then Good→Bad happens with probability `p`
/// and Bad→Good with `r`. Mean burst (Bad-state sojourn) length is `1/r` packets, and the
/// stationary loss rate is `(r·loss_good + p·loss_bad)/(p + r)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GilbertElliott {
    /// Probability of moving Good → Bad after a packet.
    pub p: f64,
    /// Probability of moving Bad → Good after a packet.
    pub r: f64,
    /// Loss probability while Bad (netem's `1-h`); 1.0 for the classic Gilbert model.
    pub loss_bad: f64,
    /// Loss probability while Good (netem's `1-k`); usually 0.
    pub loss_good: f64,
}

impl GilbertElliott {
    /// Long-run loss rate of the chain.
    pub fn stationary_loss(&self) -> f64 {
        if self.p + self.r == 0.0 {
            return self.loss_good;
        }
        (self.r * self.loss_good + self.p * self.loss_bad) / (self.p + self.r)
    }
}

/// Impairment of one direction of a link. `Default` is a perfect link.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DirectionConfig {
    /// Fixed one-way delay added to every packet.
    pub delay: Duration,
    /// Uniform jitter: each packet's delay is `delay ± jitter` (clamped at zero). As in netem,
    /// jitter larger than the packet spacing reorders packets.
    pub jitter: Duration,
    /// Independent random loss probability (0..=1).
    pub loss: f64,
    /// Optional burst loss, applied after the random loss.
    pub gilbert: Option<GilbertElliott>,
    /// Probability that a packet is held back an extra `reorder_gap`, so later packets overtake it.
    pub reorder: f64,
    /// Extra hold of a reordered packet.
    pub reorder_gap: Duration,
    /// Probability that a packet is sent twice.
    pub duplicate: f64,
    /// Token-bucket rate limit in bits per second; `None` = unlimited.
    pub rate_bps: Option<u64>,
    /// Bucket depth in bytes: how much may leave back-to-back at line speed.
    pub burst_bytes: u64,
    /// Bytes that may wait in the rate limiter's queue before new packets are tail-dropped.
    /// Large by default so that a slow link delays rather than drops.
    pub queue_bytes: u64,
    /// Drop everything (a cut cable / partition).
    pub blackhole: bool,
}

impl Default for DirectionConfig {
    fn default() -> Self {
        DirectionConfig {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            gilbert: None,
            reorder: 0.0,
            reorder_gap: Duration::from_millis(5),
            duplicate: 0.0,
            rate_bps: None,
            burst_bytes: 16 * 1024,
            queue_bytes: 4 * 1024 * 1024,
            blackhole: false,
        }
    }
}

/// A configuration string could not be parsed.
#[derive(Debug, Error, PartialEq)]
pub enum SpecError {
    /// A whitespace-separated item has no `=`; carries the item.
    #[error("expected key=value, got {0:?}")]
    NotKeyValue(String),
    /// The key is not one of those [`DirectionConfig::apply_spec`] knows; carries the key.
    #[error(
        "unknown key {0:?} (known: delay jitter loss ge reorder reorder_gap dup rate burst queue blackhole)"
    )]
    UnknownKey(String),
    /// The key is known but its value does not parse or is out of range.
    #[error("bad value {value:?} for {key}: {why}")]
    BadValue {
        /// The setting, e.g. `loss`.
        key: String,
        /// The value as given.
        value: String,
        /// What was expected instead, e.g. "must be within 0..=1".
        why: String,
    },
}

fn bad(key: &str, value: &str, why: &str) -> SpecError {
    SpecError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        why: why.to_string(),
    }
}

/// Parses `250ms`, `1.5s`, `20us` or a bare number of milliseconds.
pub fn parse_duration(key: &str, v: &str) -> Result<Duration, SpecError> {
    let v = v.trim();
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else {
        (v, 1e-3)
    };
    let x: f64 = num
        .trim()
        .parse()
        .map_err(|_| bad(key, v, "not a duration (e.g. 50ms, 1.5s)"))?;
    if !x.is_finite() || x < 0.0 || x * scale > 3600.0 {
        return Err(bad(key, v, "must be between 0 and 1 hour"));
    }
    Ok(Duration::from_secs_f64(x * scale))
}

/// Parses a probability given as `0.1` or `10%`.
pub fn parse_probability(key: &str, v: &str) -> Result<f64, SpecError> {
    let v = v.trim();
    let x = if let Some(n) = v.strip_suffix('%') {
        n.trim().parse::<f64>().map(|x| x / 100.0)
    } else {
        v.parse::<f64>()
    }
    .map_err(|_| bad(key, v, "not a probability (e.g. 0.1 or 10%)"))?;
    if !(0.0..=1.0).contains(&x) {
        return Err(bad(key, v, "must be within 0..=1 (or 0%..=100%)"));
    }
    Ok(x)
}

/// Parses a rate like `10mbit`, `500kbit`, `1gbit`, `8000` (bits per second).
pub fn parse_rate(key: &str, v: &str) -> Result<Option<u64>, SpecError> {
    let l = v.trim().to_ascii_lowercase();
    if l == "off" || l == "none" || l == "0" {
        return Ok(None);
    }
    let l = l
        .strip_suffix("bit")
        .or_else(|| l.strip_suffix("bps"))
        .unwrap_or(&l);
    let (num, mul) = match l.chars().last() {
        Some('k') => (&l[..l.len() - 1], 1e3),
        Some('m') => (&l[..l.len() - 1], 1e6),
        Some('g') => (&l[..l.len() - 1], 1e9),
        _ => (l, 1.0),
    };
    let x: f64 = num
        .parse()
        .map_err(|_| bad(key, v, "not a rate (e.g. 10mbit, 500kbit)"))?;
    if !x.is_finite() || x <= 0.0 || x * mul < 8.0 {
        return Err(bad(key, v, "must be at least 8 bit/s"));
    }
    Ok(Some((x * mul) as u64))
}

fn parse_bytes(key: &str, v: &str) -> Result<u64, SpecError> {
    let l = v.trim().to_ascii_lowercase();
    let l = l.strip_suffix('b').unwrap_or(&l);
    let (num, mul) = match l.chars().last() {
        Some('k') => (&l[..l.len() - 1], 1024u64),
        Some('m') => (&l[..l.len() - 1], 1024 * 1024),
        _ => (l, 1),
    };
    let x: u64 = num
        .parse()
        .map_err(|_| bad(key, v, "not a byte count (e.g. 64k, 4m)"))?;
    x.checked_mul(mul).ok_or_else(|| bad(key, v, "too large"))
}

fn parse_bool(key: &str, v: &str) -> Result<bool, SpecError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "1" | "true" | "yes" => Ok(true),
        "off" | "0" | "false" | "no" => Ok(false),
        _ => Err(bad(key, v, "expected on/off")),
    }
}

impl DirectionConfig {
    /// Applies a whitespace-separated list of `key=value` settings on top of `self`.
    ///
    /// This one syntax is shared by the relay's command line (`--up`, `--down`, `--both`) and
    /// its control socket (`set both loss=10% delay=50ms`), so scripts can use either:
    ///
    /// | key | value | meaning |
    /// |---|---|---|
    /// | `delay` | `50ms`, `1.5s` | fixed one-way delay |
    /// | `jitter` | duration | uniform ± jitter |
    /// | `loss` | `0.1` or `10%` | random loss |
    /// | `ge` | `p,r[,loss_bad[,loss_good]]` or `off` | Gilbert-Elliott burst loss |
    /// | `reorder` | probability | hold a packet back by `reorder_gap` |
    /// | `reorder_gap` | duration | |
    /// | `dup` | probability | send a packet twice |
    /// | `rate` | `10mbit`, `off` | token-bucket rate limit |
    /// | `burst` | `16k` | bucket depth |
    /// | `queue` | `4m` | rate-limiter queue before tail drop |
    /// | `blackhole` | `on`/`off` | drop everything |
    pub fn apply_spec(&mut self, spec: &str) -> Result<(), SpecError> {
        // Parse into a copy so that a bad spec changes nothing.
        let mut next = self.clone();
        for item in spec.split_whitespace() {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| SpecError::NotKeyValue(item.to_string()))?;
            match k {
                "delay" => next.delay = parse_duration(k, v)?,
                "jitter" => next.jitter = parse_duration(k, v)?,
                "loss" => next.loss = parse_probability(k, v)?,
                "ge" | "gemodel" => {
                    if v == "off" {
                        next.gilbert = None;
                    } else {
                        let parts: Vec<&str> = v.split(',').collect();
                        if parts.len() < 2 || parts.len() > 4 {
                            return Err(bad(k, v, "expected p,r[,loss_bad[,loss_good]]"));
                        }
                        next.gilbert = Some(GilbertElliott {
                            p: parse_probability(k, parts[0])?,
                            r: parse_probability(k, parts[1])?,
                            loss_bad: match parts.get(2) {
                                Some(x) => parse_probability(k, x)?,
                                None => 1.0,
                            },
                            loss_good: match parts.get(3) {
                                Some(x) => parse_probability(k, x)?,
                                None => 0.0,
                            },
                        });
                    }
                }
                "reorder" => next.reorder = parse_probability(k, v)?,
                "reorder_gap" => next.reorder_gap = parse_duration(k, v)?,
                "dup" | "duplicate" => next.duplicate = parse_probability(k, v)?,
                "rate" => next.rate_bps = parse_rate(k, v)?,
                "burst" => next.burst_bytes = parse_bytes(k, v)?.max(1),
                "queue" | "limit" => next.queue_bytes = parse_bytes(k, v)?,
                "blackhole" => next.blackhole = parse_bool(k, v)?,
                other => return Err(SpecError::UnknownKey(other.to_string())),
            }
        }
        *self = next;
        Ok(())
    }
}

impl fmt::Display for DirectionConfig {
    /// Prints the configuration in the same `key=value` syntax that [`DirectionConfig::apply_spec`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delay={}ms jitter={}ms loss={} ",
            self.delay.as_secs_f64() * 1e3,
            self.jitter.as_secs_f64() * 1e3,
            self.loss
        )?;
        match &self.gilbert {
            Some(g) => write!(f, "ge={},{},{},{} ", g.p, g.r, g.loss_bad, g.loss_good)?,
            None => write!(f, "ge=off ")?,
        }
        write!(
            f,
            "reorder={} reorder_gap={}ms dup={} rate={} burst={} queue={} blackhole={}",
            self.reorder,
            self.reorder_gap.as_secs_f64() * 1e3,
            self.duplicate,
            self.rate_bps.map_or("off".to_string(), |r| r.to_string()),
            self.burst_bytes,
            self.queue_bytes,
            if self.blackhole { "on" } else { "off" }
        )
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The direction is blackholed ([`DirectionConfig::blackhole`]).
    Blackhole,
    /// Independent random loss ([`DirectionConfig::loss`]).
    RandomLoss,
    /// The Gilbert-Elliott burst-loss chain ([`DirectionConfig::gilbert`]).
    BurstLoss,
    /// Tail drop: the rate limiter's queue already holds [`DirectionConfig::queue_bytes`].
    QueueFull,
}

/// What happens to one packet: dropped, or sent at one or two instants (two = duplicated).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The packet is discarded, for this reason.
    Drop(DropReason),
    /// The packet leaves, after its rate-limit wait, delay, jitter and any reordering hold.
    Send {
        /// When to send it (may equal the arrival time on an unimpaired link).
        at: Instant,
        /// When to send its copy, if the duplication draw hit.
        duplicate_at: Option<Instant>,
    },
}

/// Per-direction counters. `passed` counts packets handed on (a duplicate counts once more).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Packets that entered this direction, whatever became of them.
    pub received: u64,
    /// Packets actually sent on (counted when the send succeeds, so a duplicate counts twice).
    pub passed: u64,
    /// Packets dropped for any reason: the sum of the four `dropped_*` counters.
    pub dropped: u64,
    /// Packets dropped because the direction was blackholed.
    pub dropped_blackhole: u64,
    /// Packets dropped by the independent random-loss draw.
    pub dropped_random: u64,
    /// Packets dropped by the Gilbert-Elliott burst-loss chain.
    pub dropped_burst: u64,
    /// Packets tail-dropped because the rate limiter's queue was full.
    pub dropped_queue: u64,
    /// Packets held for any time at all (delay, jitter, rate limit or reordering).
    pub delayed: u64,
    /// Packets scheduled to be sent a second time.
    pub duplicated: u64,
    /// Packets held back an extra `reorder_gap` so that later ones overtake them.
    pub reordered: u64,
    /// Bytes of all packets in [`Counters::received`].
    pub bytes_received: u64,
    /// Bytes of all packets in [`Counters::passed`] (duplicates included).
    pub bytes_passed: u64,
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received={} passed={} dropped={} dropped_blackhole={} dropped_random={} dropped_burst={} dropped_queue={} delayed={} duplicated={} reordered={} bytes_received={} bytes_passed={}",
            self.received,
            self.passed,
            self.dropped,
            self.dropped_blackhole,
            self.dropped_random,
            self.dropped_burst,
            self.dropped_queue,
            self.delayed,
            self.duplicated,
            self.reordered,
            self.bytes_received,
            self.bytes_passed
        )
    }
}

/// One direction's impairment state: configuration, seeded RNG, burst-loss chain state,
/// token bucket and counters.
#[derive(Debug)]
pub struct Impairment {
    config: DirectionConfig,
    rng: StdRng,
    ge_bad: bool,
    /// Tokens (bytes) in the bucket at `bucket_time`.
    tokens: f64,
    bucket_time: Option<Instant>,
    /// When the rate limiter's queue will be empty (the last queued packet's departure).
    queue_free_at: Option<Instant>,
    counters: Counters,
}

impl Impairment {
    /// A fresh direction with its own RNG seed; the same seed and the same packet sequence give
    /// the same verdicts.
    pub fn new(config: DirectionConfig, seed: u64) -> Impairment {
        let tokens = config.burst_bytes as f64;
        Impairment {
            config,
            rng: StdRng::seed_from_u64(seed),
            ge_bad: false,
            tokens,
            bucket_time: None,
            queue_free_at: None,
            counters: Counters::default(),
        }
    }

    /// The configuration currently applied.
    pub fn config(&self) -> &DirectionConfig {
        &self.config
    }

    /// Replaces the configuration while keeping the RNG stream, counters and queue state, so a
    /// running experiment can be reconfigured without losing packets already scheduled.
    pub fn set_config(&mut self, config: DirectionConfig) {
        if config.gilbert.is_none() {
            self.ge_bad = false;
        }
        self.tokens = self.tokens.min(config.burst_bytes as f64);
        self.config = config;
    }

    /// A snapshot of the counters since creation or the last [`Impairment::reset_counters`].
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Zeroes the counters (e.g. between runs); configuration, RNG and queue state are kept.
    pub fn reset_counters(&mut self) {
        self.counters = Counters::default();
    }

    /// Records that the tokio layer actually sent one `len`-byte datagram.
    pub fn record_sent(&mut self, len: usize) {
        self.counters.passed += 1;
        self.counters.bytes_passed += len as u64;
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (p >= 1.0 || self.rng.random::<f64>() < p)
    }

    fn drop_with(&mut self, reason: DropReason) -> Verdict {
        self.counters.dropped += 1;
        match reason {
            DropReason::Blackhole => self.counters.dropped_blackhole += 1,
            DropReason::RandomLoss => self.counters.dropped_random += 1,
            DropReason::BurstLoss => self.counters.dropped_burst += 1,
            DropReason::QueueFull => self.counters.dropped_queue += 1,
        }
        Verdict::Drop(reason)
    }

    /// Decides the fate of one `len`-byte packet arriving at `now`.
    // Over 80 lines on purpose: one packet through the impairment stages in order (blackhole, loss, duplication, rate, delay, reordering), each reading the last stage's verdict.
    pub fn process(&mut self, now: Instant, len: usize) -> Verdict {
        self.counters.received += 1;
        self.counters.bytes_received += len as u64;
        if self.config.blackhole {
            return self.drop_with(DropReason::Blackhole);
        }
        let loss = self.config.loss;
        if self.chance(loss) {
            return self.drop_with(DropReason::RandomLoss);
        }
        if let Some(ge) = self.config.gilbert {
            let p_loss = if self.ge_bad {
                ge.loss_bad
            } else {
                ge.loss_good
            };
            let lost = self.chance(p_loss);
            // Step the chain after deciding this packet, as netem does.
            self.ge_bad = if self.ge_bad {
                !self.chance(ge.r)
            } else {
                self.chance(ge.p)
            };
            if lost {
                return self.drop_with(DropReason::BurstLoss);
            }
        }

        // Token bucket: a packet leaves once the bucket holds `len` tokens; packets queue
        // behind each other (FIFO), and the queue is bounded in bytes.
        let mut depart = now;
        if let Some(rate) = self.config.rate_bps {
            let bytes_per_sec = rate as f64 / 8.0;
            let start = match self.queue_free_at {
                Some(t) if t > now => t,
                _ => now,
            };
            let backlog_bytes = start.saturating_duration_since(now).as_secs_f64() * bytes_per_sec;
            if backlog_bytes + len as f64 > self.config.queue_bytes as f64 && start > now {
                return self.drop_with(DropReason::QueueFull);
            }
            let burst = self.config.burst_bytes as f64;
            let mut tokens = match self.bucket_time {
                Some(t) => (self.tokens
                    + start.saturating_duration_since(t).as_secs_f64() * bytes_per_sec)
                    .min(burst),
                None => burst,
            };
            depart = start;
            let need = len as f64;
            if tokens < need {
                depart += Duration::from_secs_f64((need - tokens) / bytes_per_sec);
                tokens = need;
            }
            tokens -= need;
            self.tokens = tokens;
            self.bucket_time = Some(depart);
            self.queue_free_at = Some(depart);
        }

        let mut at = depart + self.config.delay;
        if !self.config.jitter.is_zero() {
            let j = self.config.jitter.as_secs_f64();
            let offset = self.rng.random_range(-j..=j);
            let base = self.config.delay.as_secs_f64() + offset;
            at = depart + Duration::from_secs_f64(base.max(0.0));
        }
        let reorder = self.config.reorder;
        if self.chance(reorder) {
            at += self.config.reorder_gap;
            self.counters.reordered += 1;
        }
        if at > now {
            self.counters.delayed += 1;
        }
        let dup = self.config.duplicate;
        let duplicate_at = if self.chance(dup) {
            self.counters.duplicated += 1;
            Some(at)
        } else {
            None
        };
        Verdict::Send { at, duplicate_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(spec: &str) -> DirectionConfig {
        let mut c = DirectionConfig::default();
        c.apply_spec(spec).unwrap();
        c
    }

    #[test]
    fn perfect_link_passes_everything_at_once() {
        let t0 = Instant::now();
        let mut imp = Impairment::new(DirectionConfig::default(), 1);
        for i in 0..100 {
            let now = t0 + Duration::from_millis(i);
            assert_eq!(
                imp.process(now, 1200),
                Verdict::Send {
                    at: now,
                    duplicate_at: None
                }
            );
        }
        assert_eq!(imp.counters().dropped, 0);
        assert_eq!(imp.counters().delayed, 0);
    }

    #[test]
    fn random_loss_matches_configuration() {
        let t0 = Instant::now();
        let mut imp = Impairment::new(cfg("loss=10%"), 42);
        let n = 10_000;
        let lost = (0..n)
            .filter(|_| matches!(imp.process(t0, 100), Verdict::Drop(_)))
            .count();
        let rate = lost as f64 / n as f64;
        assert!((rate - 0.10).abs() <= 0.015, "measured loss {rate}");
        assert_eq!(imp.counters().dropped_random, lost as u64);
    }

    #[test]
    fn same_seed_same_verdicts() {
        let t0 = Instant::now();
        let run = |seed| {
            let mut imp = Impairment::new(cfg("loss=30% jitter=10ms delay=20ms dup=5%"), seed);
            (0..500).map(|_| imp.process(t0, 100)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn gilbert_elliott_produces_bursts() {
        // p=2%, r=25%: mean burst 4 packets, stationary loss 0.02/0.27 ≈ 7.4%.
        let t0 = Instant::now();
        let c = cfg("ge=0.02,0.25");
        let expected = c.gilbert.unwrap().stationary_loss();
        let mut imp = Impairment::new(c, 3);
        let lost: Vec<bool> = (0..50_000)
            .map(|_| matches!(imp.process(t0, 100), Verdict::Drop(_)))
            .collect();
        let total = lost.iter().filter(|l| **l).count();
        let mut bursts = 0;
        let mut prev = false;
        for &l in &lost {
            if l && !prev {
                bursts += 1;
            }
            prev = l;
        }
        let mean_burst = total as f64 / bursts as f64;
        let rate = total as f64 / lost.len() as f64;
        assert!((rate - expected).abs() < 0.02, "rate {rate} vs {expected}");
        // Independent loss at the same rate would give a mean run of ~1.08 packets.
        assert!(
            mean_burst > 3.0 && mean_burst < 5.0,
            "mean burst {mean_burst}"
        );
    }

    #[test]
    fn delay_and_jitter_bounds() {
        let t0 = Instant::now();
        let mut imp = Impairment::new(cfg("delay=100ms jitter=10ms"), 5);
        let mut min = Duration::MAX;
        let mut max = Duration::ZERO;
        for _ in 0..1000 {
            match imp.process(t0, 100) {
                Verdict::Send { at, .. } => {
                    let d = at - t0;
                    min = min.min(d);
                    max = max.max(d);
                }
                v => panic!("unexpected {v:?}"),
            }
        }
        assert!(min >= Duration::from_millis(90) && min < Duration::from_millis(92));
        assert!(max <= Duration::from_millis(110) && max > Duration::from_millis(108));
        assert_eq!(imp.counters().delayed, 1000);
    }

    #[test]
    fn rate_limit_spaces_packets_and_tail_drops() {
        // 8 Mbit/s = 1 MB/s: 1000-byte packets leave 1 ms apart once the 1000-byte bucket is empty.
        let t0 = Instant::now();
        let mut imp = Impairment::new(cfg("rate=8mbit burst=1000 queue=10k"), 1);
        let mut departures = vec![];
        let mut drops = 0;
        for _ in 0..20 {
            match imp.process(t0, 1000) {
                Verdict::Send { at, .. } => departures.push(at - t0),
                Verdict::Drop(DropReason::QueueFull) => drops += 1,
                v => panic!("unexpected {v:?}"),
            }
        }
        assert_eq!(departures[0], Duration::ZERO);
        for w in departures.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap >= Duration::from_micros(999) && gap <= Duration::from_micros(1001),
                "{gap:?}"
            );
        }
        // A 10 KiB queue holds about 10 packets of backlog; the rest are dropped.
        assert!((8..=10).contains(&drops), "drops {drops}");
        // After the queue drains, packets flow again.
        let later = t0 + Duration::from_secs(1);
        assert!(matches!(imp.process(later, 1000), Verdict::Send { at, .. } if at == later));
    }

    #[test]
    fn blackhole_duplicate_and_reorder() {
        let t0 = Instant::now();
        let mut imp = Impairment::new(cfg("blackhole=on"), 1);
        assert_eq!(imp.process(t0, 10), Verdict::Drop(DropReason::Blackhole));
        imp.set_config(cfg("dup=100% reorder=100% reorder_gap=7ms"));
        match imp.process(t0, 10) {
            Verdict::Send { at, duplicate_at } => {
                assert_eq!(at - t0, Duration::from_millis(7));
                assert_eq!(duplicate_at, Some(at));
            }
            v => panic!("unexpected {v:?}"),
        }
        let c = imp.counters();
        assert_eq!(
            (c.received, c.dropped_blackhole, c.duplicated, c.reordered),
            (2, 1, 1, 1)
        );
    }

    #[test]
    fn spec_parsing_round_trips_and_rejects_garbage() {
        let c = cfg(
            "delay=1.5s jitter=20ms loss=0.25 ge=0.1,0.5,0.9,0.01 dup=1% rate=10mbit burst=32k queue=1m blackhole=off",
        );
        assert_eq!(c.delay, Duration::from_millis(1500));
        assert_eq!(c.rate_bps, Some(10_000_000));
        assert_eq!(c.burst_bytes, 32 * 1024);
        let mut again = DirectionConfig::default();
        again.apply_spec(&c.to_string()).unwrap();
        assert_eq!(again, c);
        let mut d = DirectionConfig::default();
        assert!(d.apply_spec("loss=150%").is_err());
        assert!(d.apply_spec("delay=-3ms").is_err());
        assert!(d.apply_spec("color=red").is_err());
        assert!(d.apply_spec("loss").is_err());
        assert!(d.apply_spec("delay=10ms loss=2").is_err());
        // A rejected spec leaves the configuration untouched.
        assert_eq!(d, DirectionConfig::default());
    }
}
