//! Node supervision, the async half: one task per node keeps a connection up (reconnecting
//! with [`Backoff`]) and follows the node's control stream (Hello, load reports, draining),
//! whose frames are its heartbeat ([`Heartbeat`]). Every change goes into the cluster state.
//!
//! When the node leaves the membership ([`super::Dispatcher::set_nodes`]) the task keeps
//! following it while its attempts finish (the cluster already gives it no new work), closes
//! the connection once nothing is outstanding or `drain_timeout` passed, waits for the last
//! credit to come back, frees the node's slot and ends. A node listed again before that
//! simply carries on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::Connection;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::NodeEndpoint;
use super::heartbeat::{Backoff, Heartbeat};
use super::shared::{Shared, sleep_until_opt};
use crate::codec::{self, CLOSE_SHUTDOWN, ControlMessage, MAX_FRAME_BYTES};
use crate::shutdown::Shutdown;
use crate::stream::{self, FrameReadError};
use crate::types::NodeInfo;

/// How often a leaving node's outstanding attempts are counted. Credit comes back from the
/// attempts' own tasks, which wake nobody; a leaving node is rare and short-lived, so a
/// cheap poll is simpler than a wake-up on every credit returned.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// How a connected session ended.
enum SessionEnd {
    /// The connection ended or failed, with why.
    Lost(String),
    /// The node left the membership and drained (or ran out of `drain_timeout`).
    Drained,
}

/// How waiting for a node that left ended.
enum Leave {
    /// Its slot is free: the task ends without touching it again.
    Gone,
    /// Listed again before it was freed: supervise it as before.
    Rejoined,
    /// The dispatcher is shutting down.
    Shutdown,
}

/// Keeps node `idx` connected while it is in the membership, until `shutdown` turns true.
pub(super) async fn supervise(shared: Arc<Shared>, idx: usize, mut shutdown: Shutdown) {
    let endpoint = shared.cluster().endpoint(idx).clone();
    let name = endpoint.name.clone();
    let mut membership = shared.membership.subscribe();
    let mut backoff = Backoff::new(shared.config.reconnect_min, shared.config.reconnect_max);
    loop {
        if shutdown.is_triggered() {
            break;
        }
        if !shared.cluster().is_listed(idx) {
            match leave(&shared, idx, &mut membership, &mut shutdown).await {
                Leave::Gone => {
                    info!(node = %name, addr = %endpoint.addr, "node removed");
                    return;
                }
                Leave::Rejoined => continue,
                Leave::Shutdown => break,
            }
        }
        set(&shared, |c| c.set_connecting(idx));
        let session = tokio::select! {
            r = connect(&shared, &endpoint) => r,
            () = shutdown.recv() => break,
            () = until_unlisted(&shared, idx, &mut membership) => continue,
        };
        let reason = match session {
            Ok((conn, control, hello)) => {
                info!(node = %name, addr = %endpoint.addr, "node ready");
                backoff.reset();
                let interval = hello
                    .load_interval_ms
                    .map(|ms| std::time::Duration::from_millis(u64::from(ms)));
                shared.set_conn(idx, Some(conn.clone()));
                set(&shared, |c| c.set_ready(idx, hello));
                let end = tokio::select! {
                    r = follow_control(&shared, idx, &conn, control, interval, &mut membership) => r,
                    () = shutdown.recv() => {
                        conn.close(quinn::VarInt::from_u32(CLOSE_SHUTDOWN), b"front-end shutdown");
                        break;
                    }
                };
                match end {
                    SessionEnd::Lost(reason) => {
                        warn!(node = %name, %reason, "node connection lost");
                        reason
                    }
                    SessionEnd::Drained => {
                        info!(node = %name, addr = %endpoint.addr, "node left the membership and drained: closing its connection");
                        conn.close(
                            quinn::VarInt::from_u32(CLOSE_SHUTDOWN),
                            b"removed from the membership",
                        );
                        "removed from the membership".to_string()
                    }
                }
            }
            Err(e) => {
                debug!(node = %name, error = %e, "connect failed");
                e
            }
        };
        shared.set_conn(idx, None);
        set(&shared, |c| c.set_down(idx, Some(reason)));
        if !shared.cluster().is_listed(idx) {
            continue;
        }
        let delay = backoff.next_delay(&mut rand::rng());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.recv() => break,
            () = until_unlisted(&shared, idx, &mut membership) => {}
        }
    }
    shared.set_conn(idx, None);
    set(&shared, |c| c.set_down(idx, None));
}

/// Returns once node `idx` is out of the membership.
async fn until_unlisted(shared: &Shared, idx: usize, membership: &mut watch::Receiver<u64>) {
    loop {
        if !shared.cluster().is_listed(idx) {
            return;
        }
        if membership.changed().await.is_err() {
            // The sender lives as long as `shared`: never reached.
            std::future::pending::<()>().await;
        }
    }
}

/// A node that left, without a connection: waits until its last credit is back, then
/// frees its slot; or until it is listed again.
async fn leave(
    shared: &Arc<Shared>,
    idx: usize,
    membership: &mut watch::Receiver<u64>,
    shutdown: &mut Shutdown,
) -> Leave {
    loop {
        let done = shared.with_cluster(|c| {
            if c.is_listed(idx) {
                Some(Leave::Rejoined)
            } else if c.reclaim(idx) {
                Some(Leave::Gone)
            } else {
                None
            }
        });
        if let Some(done) = done {
            shared.changed.notify_waiters();
            return done;
        }
        tokio::select! {
            () = tokio::time::sleep(DRAIN_POLL) => {}
            () = shutdown.recv() => return Leave::Shutdown,
            _ = membership.changed() => {}
        }
    }
}

/// Applies a node change, grants freed capacity, and wakes whoever watches node states.
fn set(shared: &Arc<Shared>, f: impl FnOnce(&mut super::Cluster<super::shared::GrantTx>)) {
    shared.with_cluster(f);
    shared.changed.notify_waiters();
}

/// Handshake (verifying the node's certificate against the CA *and* its configured name) and
/// read the node's Hello.
async fn connect(
    shared: &Shared,
    ep: &NodeEndpoint,
) -> Result<(Connection, quinn::RecvStream, NodeInfo), String> {
    let attempt = async {
        let connecting = shared
            .endpoint
            .connect_with(shared.client_config.clone(), ep.addr, &ep.name)
            .map_err(|e| format!("connect: {e}"))?;
        let conn = connecting.await.map_err(|e| format!("handshake: {e}"))?;
        let mut control = conn
            .accept_uni()
            .await
            .map_err(|e| format!("control stream: {e}"))?;
        let body = stream::read_frame(&mut control, MAX_FRAME_BYTES)
            .await
            .map_err(|e| format!("hello: {e}"))?
            .ok_or_else(|| "control stream ended before hello".to_string())?;
        match codec::decode_control(&body) {
            Ok(ControlMessage::Hello(info)) => Ok((conn, control, info)),
            Ok(other) => {
                conn.close(quinn::VarInt::from_u32(0), b"protocol error");
                Err(format!("expected hello, got {other:?}"))
            }
            Err(e) => {
                conn.close(quinn::VarInt::from_u32(0), b"protocol error");
                Err(format!("hello: {e}"))
            }
        }
    };
    tokio::time::timeout(shared.config.connect_timeout, attempt)
        .await
        .map_err(|_| "connect timed out".to_string())?
}

/// Reads the next control frame, handing the stream back so the read can live across turns
/// of a `select!` loop: a frame read must never be cancelled half-way.
async fn next_control_frame(
    mut control: quinn::RecvStream,
) -> (quinn::RecvStream, Result<Option<Vec<u8>>, FrameReadError>) {
    let frame = stream::read_frame(&mut control, MAX_FRAME_BYTES).await;
    (control, frame)
}

/// Follows the control stream until the connection ends (returns why), or until the node,
/// taken out of the membership, has drained. When no frame arrives for the silence timeout
/// the node is marked silent and running requests are told, so they reopen its images
/// elsewhere; the next frame clears it. A leaving node is followed the same way, so its
/// attempts still move on if it dies while draining.
// Over 80 lines on purpose: the control stream's read loop: one match over every frame a node sends.
async fn follow_control(
    shared: &Arc<Shared>,
    idx: usize,
    conn: &Connection,
    control: quinn::RecvStream,
    interval: Option<std::time::Duration>,
    membership: &mut watch::Receiver<u64>,
) -> SessionEnd {
    let name = shared.cluster().name(idx).to_string();
    let name = &name;
    let mut heartbeat = Heartbeat::new(Instant::now(), &shared.policy, interval);
    let mut pending = Box::pin(next_control_frame(control));
    // Set while the node is out of the membership: when its connection closes regardless.
    let mut drain_until = None;
    let mut membership_changed = true;
    loop {
        if std::mem::take(&mut membership_changed) {
            let listed = shared.cluster().is_listed(idx);
            match (listed, drain_until) {
                (false, None) => {
                    info!(node = %name, "node left the membership: draining (no new work)");
                    drain_until = Some(Instant::now() + shared.config.drain_timeout);
                }
                (true, Some(_)) => {
                    info!(node = %name, "node back in the membership");
                    drain_until = None;
                }
                _ => {}
            }
        }
        if let Some(until) = drain_until
            && (shared.cluster().outstanding(idx) == 0 || Instant::now() >= until)
        {
            return SessionEnd::Drained;
        }
        let drain_poll = drain_until.map(|_| Instant::now() + DRAIN_POLL);
        let quiet_at = heartbeat.quiet_at(conn.rtt());
        tokio::select! {
            changed = membership.changed() => membership_changed = changed.is_ok(),
            () = sleep_until_opt(drain_poll) => {}
            (control, frame) = &mut pending => {
                let body = match frame {
                    Ok(Some(body)) => body,
                    Ok(None) | Err(FrameReadError::Reset(_)) | Err(FrameReadError::Stream(_)) | Err(FrameReadError::Codec(_)) => {
                        return SessionEnd::Lost(conn.closed().await.to_string());
                    }
                    Err(FrameReadError::ConnectionLost(m)) => return SessionEnd::Lost(m),
                };
                if heartbeat.on_frame(Instant::now()) {
                    info!(node = %name, "node heard from again");
                    set(shared, |c| c.set_silent(idx, false));
                }
                match codec::decode_control(&body) {
                    Ok(ControlMessage::Load(load)) => {
                        shared.with_cluster(|c| c.set_load(idx, load, Instant::now()))
                    }
                    Ok(ControlMessage::Draining) => {
                        info!(node = %name, "node draining");
                        set(shared, |c| c.set_draining(idx));
                    }
                    Ok(ControlMessage::Hello(info)) => set(shared, |c| c.set_info(idx, info)),
                    Err(e) => {
                        // One bad control frame must not kill working request streams:
                        // note it and wait for the connection's fate.
                        warn!(node = %name, error = %e, "bad control frame");
                        return SessionEnd::Lost(conn.closed().await.to_string());
                    }
                }
                pending = Box::pin(next_control_frame(control));
            }
            () = sleep_until_opt(quiet_at) => {
                let now = Instant::now();
                if heartbeat.on_timeout(now, conn.rtt()) {
                    warn!(
                        node = %name,
                        quiet_ms = heartbeat.quiet_for(now).as_millis() as u64,
                        "node silent: reopening its in-flight images elsewhere"
                    );
                    set(shared, |c| c.set_silent(idx, true));
                    shared.silences.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
            reason = conn.closed() => return SessionEnd::Lost(reason.to_string()),
        }
    }
}
