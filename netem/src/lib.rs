//! Glimpse's network lab.
//!
//! * [`impair`] — socket-free impairment logic (delay, jitter, random and Gilbert-Elliott loss,
//!   reordering, duplication, token-bucket rate limit, blackhole), driven by a caller-supplied
//!   clock so it is unit-testable and reproducible.
//! * [`relay`] — the userspace UDP impairment relay (one per link) around it, used by the
//!   `glimpse-relay` binary, by `glimpse-lab` in-process, and by the tests.
//! * [`link`] — [`link::LinkControl`], the control surface shared by the relay and the TUN link,
//!   with its vocabulary: [`link::Direction`] and [`link::LinkStats`].
//! * `tun` (Linux) — `TunLink`: an IP-level impaired point-to-point link into a network
//!   namespace, made of two TUN devices, so TCP crosses the same impairment as UDP.
//! * [`control`] — the links' line-based control protocol on a loopback TCP port.
//! * [`stats`] — mean, Student-t 95% confidence intervals, percentiles.
//! * [`lab`] — the sweep runner behind `glimpse-lab`.
//! * [`load`] — `glimpse-lab load`: closed- and open-loop load against a running deployment
//!   over the JSON API, KServe v2 HTTP (binary tensors) or KServe v2 gRPC, with latency
//!   percentiles of every request.
//! * [`sim`] — `glimpse-lab simulate`: the dispatcher's real core driven by simulated nodes
//!   on a virtual clock, validated against the sweeps and projected to 1,000 nodes.

pub mod control;
pub mod impair;
pub mod lab;
pub mod link;
pub mod load;
pub mod relay;
mod sched;
pub mod sim;
pub mod stats;
#[cfg(target_os = "linux")]
pub mod tun;
