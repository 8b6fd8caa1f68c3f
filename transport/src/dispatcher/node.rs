//! Node supervision, the async half: one task per node keeps a connection up (reconnecting
//! with [`Backoff`]) and follows the node's control stream (Hello, load reports, draining),
//! whose frames are its heartbeat ([`Heartbeat`]). Every change goes into the cluster state.

use std::sync::Arc;
use std::time::Instant;

use quinn::Connection;
use tracing::{debug, info, warn};

use super::heartbeat::{Backoff, Heartbeat};
use super::shared::{Shared, sleep_until_opt};
use crate::codec::{self, CLOSE_SHUTDOWN, ControlMessage, MAX_FRAME_BYTES};
use crate::shutdown::Shutdown;
use crate::stream::{self, FrameReadError};
use crate::sync::lock;
use crate::types::NodeInfo;

/// Keeps node `idx` connected until `shutdown` turns true.
pub(super) async fn supervise(shared: Arc<Shared>, idx: usize, mut shutdown: Shutdown) {
    let mut backoff = Backoff::new(shared.config.reconnect_min, shared.config.reconnect_max);
    let name = shared.config.nodes[idx].name.clone();
    loop {
        if shutdown.is_triggered() {
            break;
        }
        set(&shared, |c| c.set_connecting(idx));
        let session = tokio::select! {
            r = connect(&shared, idx) => r,
            () = shutdown.recv() => break,
        };
        let reason = match session {
            Ok((conn, control, hello)) => {
                info!(node = %name, addr = %shared.config.nodes[idx].addr, "node ready");
                backoff.reset();
                let interval = hello
                    .load_interval_ms
                    .map(|ms| std::time::Duration::from_millis(u64::from(ms)));
                *lock(&shared.conns[idx]) = Some(conn.clone());
                set(&shared, |c| c.set_ready(idx, hello));
                let reason = tokio::select! {
                    r = follow_control(&shared, idx, &conn, control, interval) => r,
                    () = shutdown.recv() => {
                        conn.close(quinn::VarInt::from_u32(CLOSE_SHUTDOWN), b"front-end shutdown");
                        break;
                    }
                };
                warn!(node = %name, %reason, "node connection lost");
                reason
            }
            Err(e) => {
                debug!(node = %name, error = %e, "connect failed");
                e
            }
        };
        *lock(&shared.conns[idx]) = None;
        set(&shared, |c| c.set_down(idx, Some(reason)));
        let delay = backoff.next_delay(&mut rand::rng());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.recv() => break,
        }
    }
    *lock(&shared.conns[idx]) = None;
    set(&shared, |c| c.set_down(idx, None));
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
    idx: usize,
) -> Result<(Connection, quinn::RecvStream, NodeInfo), String> {
    let ep = &shared.config.nodes[idx];
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

/// Follows the control stream until the connection ends; returns why it ended. When no frame
/// arrives for the silence timeout the node is marked silent and running requests are told,
/// so they reopen its images elsewhere; the next frame clears it.
async fn follow_control(
    shared: &Arc<Shared>,
    idx: usize,
    conn: &Connection,
    control: quinn::RecvStream,
    interval: Option<std::time::Duration>,
) -> String {
    let name = &shared.config.nodes[idx].name;
    let mut heartbeat = Heartbeat::new(Instant::now(), &shared.policy, interval);
    let mut pending = Box::pin(next_control_frame(control));
    loop {
        let quiet_at = heartbeat.quiet_at(conn.rtt());
        tokio::select! {
            (control, frame) = &mut pending => {
                let body = match frame {
                    Ok(Some(body)) => body,
                    Ok(None) | Err(FrameReadError::Reset(_)) | Err(FrameReadError::Stream(_)) | Err(FrameReadError::Codec(_)) => {
                        return conn.closed().await.to_string();
                    }
                    Err(FrameReadError::ConnectionLost(m)) => return m,
                };
                if heartbeat.on_frame(Instant::now()) {
                    info!(node = %name, "node heard from again");
                    set(shared, |c| c.set_silent(idx, false));
                }
                match codec::decode_control(&body) {
                    Ok(ControlMessage::Load(load)) => shared.cluster().set_load(idx, load),
                    Ok(ControlMessage::Draining) => {
                        info!(node = %name, "node draining");
                        set(shared, |c| c.set_draining(idx));
                    }
                    Ok(ControlMessage::Hello(info)) => set(shared, |c| c.set_info(idx, info)),
                    Err(e) => {
                        // One bad control frame must not kill working request streams:
                        // note it and wait for the connection's fate.
                        warn!(node = %name, error = %e, "bad control frame");
                        return conn.closed().await.to_string();
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
            reason = conn.closed() => return reason.to_string(),
        }
    }
}
