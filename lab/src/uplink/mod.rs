//! `glimpse-lab uplink`: the client's leg under loss, HTTP/2 against HTTP/3.
//!
//! One client uploads a burst of images at once (20 by default, as a person dropping a
//! folder on the page) to a front-end across an impaired link, and the lab measures the time
//! until the last answer arrives and each image's own latency. HTTP/2 carries the burst as
//! streams of one TCP connection, so one lost segment stalls every upload behind it until it
//! is retransmitted; HTTP/3 carries it as streams of one QUIC connection, where a loss stalls
//! only the stream whose data it held. The sweep measures how much that is worth.
//!
//! The testbed is a front-end with synthetic local workers, alone in a network namespace
//! behind a TUN link ([`NsLink`], Linux, root), and the client in the root namespace: every
//! IP packet between them, TCP and UDP alike, crosses the same [`glimpse_netem`] impairment
//! (the loss rate each way, half the RTT of delay each way). Runs alternate between the two
//! protocols, so drift on the machine affects both alike. Each run opens a fresh connection
//! and sends one image first, so that the handshake (one round trip shorter for QUIC) and
//! slow start's first flight are not in the burst's time: what is measured is multiplexing.

mod report;
mod run;
mod sweep;

pub use report::{Summary, speedup, summarize, write_report};
pub use run::{LinkCount, PROTOCOLS, Run, UplinkOptions};
pub use sweep::run_uplink;
