//! The relay's control channel: a line-based TCP protocol on a loopback port.
//!
//! Chosen over signals or files because it answers (scripts learn whether a change took
//! effect) and works from plain bash (`exec 3<>/dev/tcp/127.0.0.1/PORT`), from `nc`, or via
//! `glimpse-relay ctl`. Every command gets exactly one reply line starting with `ok` or `err`.
//!
//! | command | reply |
//! |---|---|
//! | `set up\|down\|both KEY=VALUE ...` | `ok` + the new configuration(s) |
//! | `reset up\|down\|both` | `ok` (back to a perfect link) |
//! | `show` | `ok up: ... \| down: ...` |
//! | `stats` | `ok up: received=... \| down: ... \| sessions=N` |
//! | `json` | `ok {"up":{...},"down":{...},"sessions":N}` |
//! | `clear` | `ok` (counters back to zero) |
//! | `help` | `ok` + the list of commands |

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::impair::DirectionConfig;
use crate::link::{Direction, LinkControl};

/// Longest command line accepted; longer lines close the connection.
const MAX_LINE: usize = 4096;

/// Executes one control command against a link (a UDP relay or a TUN link) and returns the
/// reply line (without newline).
pub fn execute(relay: &dyn LinkControl, line: &str) -> String {
    let mut words = line.split_whitespace();
    let Some(cmd) = words.next() else {
        return "err empty command".to_string();
    };
    match cmd {
        "set" | "reset" => {
            let dir = match words.next().map(str::parse::<Direction>) {
                Some(Ok(d)) => d,
                Some(Err(e)) => return format!("err {e}"),
                None => return format!("err usage: {cmd} up|down|both ..."),
            };
            let rest: Vec<&str> = words.collect();
            if cmd == "reset" {
                relay.set_config(dir, DirectionConfig::default());
            } else if let Err(e) = relay.apply_spec(dir, &rest.join(" ")) {
                return format!("err {e}");
            }
            format!("ok {}", show(relay))
        }
        "show" => format!("ok {}", show(relay)),
        "stats" => {
            let s = relay.stats();
            format!("ok up: {} | down: {} | sessions={}", s.up, s.down, s.sessions)
        }
        "json" => match serde_json::to_string(&relay.stats()) {
            Ok(j) => format!("ok {j}"),
            Err(e) => format!("err {e}"),
        },
        "clear" => {
            relay.reset_counters();
            "ok".to_string()
        }
        "help" => "ok commands: set DIR KEY=VALUE..., reset DIR, show, stats, json, clear, help (DIR = up|down|both; keys: delay jitter loss ge reorder reorder_gap dup rate burst queue blackhole)".to_string(),
        other => format!("err unknown command {other:?} (try help)"),
    }
}

fn show(relay: &dyn LinkControl) -> String {
    format!(
        "up: {} | down: {}",
        relay.config(Direction::Up),
        relay.config(Direction::Down)
    )
}

/// Serves the control protocol until the listener fails; one task per connection. Generic so
/// that a cloneable handle ([`crate::relay::RelayHandle`]) and a shared one
/// (`Arc<TunLink>`) both fit.
pub async fn serve<L: LinkControl + Clone + 'static>(listener: TcpListener, relay: L) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(connection(stream, peer, relay.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "control accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, relay: impl LinkControl) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) => return,
            Ok(_) if line.len() > MAX_LINE => {
                let _ = w.write_all(b"err line too long\n").await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, %peer, "control read");
                return;
            }
        }
        let cmd = line.trim();
        if cmd == "quit" {
            return;
        }
        tracing::info!(%peer, command = cmd, "control");
        let mut reply = execute(&relay, cmd);
        reply.push('\n');
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Client side, used by `glimpse-relay ctl` and the tests: sends one command, returns the reply.
pub async fn send_command(addr: SocketAddr, command: &str) -> std::io::Result<String> {
    let stream = TcpStream::connect(addr).await?;
    let (r, mut w) = stream.into_split();
    w.write_all(command.trim().as_bytes()).await?;
    w.write_all(b"\n").await?;
    let mut reply = String::new();
    BufReader::new(r).read_line(&mut reply).await?;
    Ok(reply.trim_end().to_string())
}
