//! One front-end connection: its request streams (each its own task) and the control stream
//! (Hello, load reports, Draining).

use std::sync::Arc;

use quinn::Connection;
use tracing::debug;

use super::request::serve_stream;
use super::shared::Shared;
use crate::codec::{self, ControlMessage};
use crate::stream;
use crate::types::Handler;

pub(super) async fn serve_connection<H: Handler>(
    incoming: quinn::Incoming,
    id: usize,
    shared: Arc<Shared>,
    handler: Arc<H>,
) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            // Includes clients without a CA-signed certificate: refused at the handshake.
            debug!(%remote, error = %e, "handshake failed");
            return;
        }
    };
    debug!(%remote, "front-end connected");
    shared.connections.lock().insert(id, conn.clone());
    let control = tokio::spawn(control_stream(
        conn.clone(),
        shared.clone(),
        handler.clone(),
    ));
    let mut draining = shared.draining.clone();
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let guard = shared.in_flight.enter();
                    let is_draining = draining.is_triggered();
                    tokio::spawn(serve_stream(send, recv, shared.clone(), handler.clone(), is_draining, guard));
                }
                Err(e) => {
                    debug!(%remote, reason = %e, "connection ended");
                    break;
                }
            },
            () = draining.recv(), if !draining.is_triggered() => {}
        }
    }
    control.abort();
    shared.connections.lock().remove(&id);
}

/// Node → front-end: Hello, then periodic load, then Draining.
async fn control_stream<H: Handler>(conn: Connection, shared: Arc<Shared>, handler: Arc<H>) {
    let result: Result<(), String> = async {
        let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
        let hello = codec::encode_control(&ControlMessage::Hello(shared.info.clone())).map_err(|e| e.to_string())?;
        stream::write_frame(&mut send, &hello).await.map_err(|e| e.to_string())?;
        let mut draining = shared.draining.clone();
        let mut tick = tokio::time::interval(shared.load_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut announced = false;
        loop {
            if draining.is_triggered() && !announced {
                let f = codec::encode_control(&ControlMessage::Draining).map_err(|e| e.to_string())?;
                stream::write_frame(&mut send, &f).await.map_err(|e| e.to_string())?;
                announced = true;
            }
            tokio::select! {
                _ = tick.tick() => {
                    let f = codec::encode_control(&ControlMessage::Load(handler.load())).map_err(|e| e.to_string())?;
                    stream::write_frame(&mut send, &f).await.map_err(|e| e.to_string())?;
                }
                () = draining.recv(), if !announced => {}
            }
        }
    }
    .await;
    if let Err(e) = result {
        debug!(error = %e, "control stream ended");
    }
}
