//! Connection admission and lifetimes, for every listener of the process (HTTPS, gRPC, the
//! plain-HTTP redirect and the admin listener over TCP; HTTP/3's QUIC connections, which
//! share one UDP socket but count as connections all the same).
//!
//! One [`Registry`] holds the connection slots of all of them, so together they stay below
//! the file-descriptor limit and `accept` itself never starts failing: `max_total` is the
//! limit minus [`FD_RESERVE`], the descriptors kept for QUIC sockets, files, the sockets
//! being refused with an answer, and closes in progress. Inside it, the admin listener has
//! a small share of its own that the public listeners cannot take (operators and Prometheus
//! get in during an attack), and the redirect listener may hold only a bounded share of the
//! public slots (it only ever answers 308). Each address (an IPv6 /64) holds at most
//! `max_per_ip` connections.
//!
//! Each connection is watched: it must complete its TLS handshake within
//! `handshake_timeout`, send its first complete request head within `header_timeout`, and
//! is closed after `idle_timeout` without a request in flight. A request is in flight from
//! the moment its head is parsed until its response body is finished or dropped, so a long
//! upload or an open event stream keeps its connection, while a connection trickling header
//! bytes (slowloris) does not.
//!
//! When the slots a newcomer needs are taken, the registry reclaims one rather than refuse
//! it (see [`registry`]): first the connection idle the longest (those that never completed
//! a request first), then, when every one is busy, the slowest sender, by bytes received
//! per second over its life, so a thousand trickling uploads cannot hold every slot. Only
//! connections younger than [`EVICTION_GRACE`] are safe, so a newcomer is not thrown out
//! before it could send its request. A connection that is refused all the same (its address
//! is over its cap, or nothing can be reclaimed) gets an answer, 429 or 503 with
//! `Retry-After` (see [`refusal`]), within a bounded budget of descriptors and time.

mod lingering;
mod metered;
pub mod refusal;
pub mod registry;
mod tracked;

use std::time::Duration;

pub use lingering::{LINGER_IDLE, LINGER_TIME, Lingering};
pub use metered::Metered;
pub use refusal::{Answer, REFUSAL_TIME, refuse};
pub use registry::{
    ConnCounters, ConnState, EVICTION_GRACE, InFlight, Listener, Refused, Registry, Shares, Ticket,
};
pub use tracked::{
    HYPER_MAX_HEADERS, MAX_HEADER_BYTES, MAX_HEADER_COUNT, MAX_URI_BYTES, OnConnection,
    ResponseBody, Tracked, TrackedBody, WarpBody,
};

/// Limits on connections (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once over all listeners and addresses (default: the fd limit
    /// minus [`FD_RESERVE`]).
    pub max_total: usize,
    /// Connections open at once from one address (an IPv6 /64 counts as one); default
    /// [`max_per_ip_for`] of `max_total`.
    pub max_per_ip: usize,
    /// Time a new connection has to finish its TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a connection has to send its first complete request head.
    pub header_timeout: Duration,
    /// Time a connection may sit with no request in progress.
    pub idle_timeout: Duration,
    /// Most bytes of a refused request's body read and thrown away (see [`Lingering`]);
    /// the largest body the server would otherwise accept.
    pub linger_bytes: u64,
    /// Seconds a refused connection is told to wait (`Retry-After`).
    pub retry_after_s: u64,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            max_total: 4096,
            max_per_ip: max_per_ip_for(4096),
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            linger_bytes: 128 << 20,
            retry_after_s: 2,
        }
    }
}

/// File descriptors kept out of the connection cap for everything else the process opens:
/// QUIC sockets, listeners, files, the sockets being refused with an answer (at most
/// [`REFUSALS_AT_ONCE`]), the accept that comes before a refusal, and connections evicted
/// whose close is still in progress.
pub const FD_RESERVE: u64 = 128;

/// Refused connections answered at once, over all listeners (see [`refusal`]): each holds
/// a descriptor from [`FD_RESERVE`] for at most [`REFUSAL_TIME`]. Half the reserve: enough
/// for a burst of a hundred connections from one address (the 36 past its cap of 64 are
/// answered at once), while the other half stays for the process's own files and sockets.
pub const REFUSALS_AT_ONCE: usize = 64;

/// The connection cap a file-descriptor limit allows: the limit minus [`FD_RESERVE`], at
/// least 16.
pub fn max_connections_for(nofile: u64) -> usize {
    usize::try_from(nofile.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX)
}

/// Fewest connections one address may hold by default, whatever the total: ten browsers
/// behind one NAT, each with HTTP/1.1's six connections, fit.
pub const MIN_PER_IP: usize = 64;

/// The default per-address cap for a total cap of `max_total`: a sixteenth of it, at least
/// [`MIN_PER_IP`]. Many users can share one address (an office NAT, carrier-grade NAT), so a
/// fixed small cap would lock them out together; a sixteenth still leaves fifteen
/// sixteenths to everyone else. It does not stop an attacker with many addresses (that is
/// eviction's job, see [`registry`]), only one address taking the whole server.
pub fn max_per_ip_for(max_total: usize) -> usize {
    (max_total / 16).max(MIN_PER_IP)
}

/// Raise the soft file-descriptor limit to the hard one (systemd's default soft limit is
/// 1024) and return the limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_address_default_is_a_sixteenth_with_a_floor() {
        assert_eq!(max_per_ip_for(896), MIN_PER_IP);
        assert_eq!(max_per_ip_for(65_408), 4088);
        assert_eq!(max_connections_for(1024), 896);
        assert_eq!(max_connections_for(10), 16);
    }
}
