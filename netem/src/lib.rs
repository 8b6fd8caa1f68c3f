//! A network impairment emulator for experiments on real sockets, with no knowledge of what
//! crosses it (Glimpse's lab, `lab/`, is built on top; this crate depends on no Glimpse crate).
//!
//! * [`impair`] — socket-free impairment logic (delay, jitter, random and Gilbert-Elliott loss,
//!   reordering, duplication, token-bucket rate limit, blackhole), driven by a caller-supplied
//!   clock so it is unit-testable and reproducible.
//! * [`relay`] — the userspace UDP impairment relay (one per link) around it, used by the
//!   `glimpse-relay` binary, by the lab in-process, and by the tests.
//! * [`link`] — [`link::LinkControl`], the control surface shared by the relay and the TUN link,
//!   with its vocabulary: [`link::Direction`] and [`link::LinkStats`].
//! * `tun` (Linux) — `TunLink`: an IP-level impaired point-to-point link into a network
//!   namespace, made of two TUN devices, so TCP crosses the same impairment as UDP.
//! * [`control`] — the links' line-based control protocol on a loopback TCP port.
//!
//! `scripts/testbed.sh` and `scripts/impair.sh` build the same links from namespaces, veth
//! pairs and tc/netem (or iptables where the kernel lacks `sch_netem`).

pub mod control;
pub mod impair;
pub mod link;
pub mod relay;
mod sched;
#[cfg(target_os = "linux")]
pub mod tun;
