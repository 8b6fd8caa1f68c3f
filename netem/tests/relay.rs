//! The relay over real UDP on loopback: an echo server behind a relay, a client in front.
//!
//! Timing assertions use medians of many round trips and compare against a no-delay baseline
//! measured in the same test, so a loaded machine shifts both and the difference stays put.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use glimpse_netem::control;
use glimpse_netem::impair::DirectionConfig;
use glimpse_netem::link::Direction;
use glimpse_netem::relay::{RelayConfig, RelayHandle};
use tokio::net::UdpSocket;

/// A UDP echo server on 127.0.0.1; returns its address.
async fn echo_server() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            if let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                let _ = sock.send_to(&buf[..n], peer).await;
            }
        }
    });
    addr
}

async fn relay_to(upstream: SocketAddr, up: &str, down: &str) -> RelayHandle {
    let mut cfg = RelayConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
    cfg.up.apply_spec(up).unwrap();
    cfg.down.apply_spec(down).unwrap();
    cfg.seed = 12345;
    RelayHandle::start(cfg).await.unwrap()
}

async fn client(relay: &RelayHandle) -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(relay.local_addr()).await.unwrap();
    sock
}

/// One round trip with a sequence number; `None` if nothing came back within `timeout`.
async fn ping(sock: &UdpSocket, seq: u64, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    sock.send(&seq.to_be_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let deadline = start + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sock.recv(&mut buf)).await {
            Ok(Ok(8)) if u64::from_be_bytes(buf[..8].try_into().unwrap()) == seq => {
                return Some(start.elapsed());
            }
            Ok(_) => continue, // a late echo of an earlier ping
            Err(_) => return None,
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_loss_over_10000_packets() {
    let echo = echo_server().await;
    let relay = relay_to(echo, "loss=10%", "").await;
    let sock = client(&relay).await;
    let n: u64 = 10_000;
    let window = 50;
    let mut received = 0u64;
    let mut buf = [0u8; 64];
    // Send in windows and collect the echoes, so no kernel buffer overflows: every loss
    // measured is the relay's. A short quiet gap ends a window; echoes that arrive later are
    // still counted (in the next window or the final drain), so the gap only paces sending.
    for base in (0..n).step_by(window) {
        let end = (base + window as u64).min(n);
        for seq in base..end {
            sock.send(&seq.to_be_bytes()).await.unwrap();
        }
        let expected = end - base;
        let mut got = 0;
        while got < expected {
            match tokio::time::timeout(Duration::from_millis(30), sock.recv(&mut buf)).await {
                Ok(Ok(_)) => got += 1,
                _ => break,
            }
        }
        received += got;
    }
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
        received += 1;
    }
    let loss = 1.0 - received as f64 / n as f64;
    let stats = relay.stats();
    assert_eq!(stats.up.received, n, "relay saw every packet");
    assert!((loss - 0.10).abs() <= 0.015, "measured loss {loss:.4}");
    assert_eq!(stats.up.dropped_random, n - received);
    assert_eq!(stats.down.dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_ms_delay_adds_hundred_ms_to_round_trip() {
    let echo = echo_server().await;
    let relay = relay_to(echo, "", "").await;
    let sock = client(&relay).await;
    let timeout = Duration::from_secs(5);
    let mut base = vec![];
    for seq in 0..30 {
        base.push(ping(&sock, seq, timeout).await.expect("no loss configured"));
    }
    relay
        .apply_spec(Direction::Up, "delay=100ms")
        .expect("valid spec");
    let mut delayed = vec![];
    for seq in 100..130 {
        delayed.push(ping(&sock, seq, timeout).await.expect("no loss configured"));
    }
    let added = median(delayed).as_secs_f64() - median(base).as_secs_f64();
    assert!(
        (added - 0.100).abs() <= 0.005,
        "added {:.1} ms",
        added * 1e3
    );
    assert!(relay.stats().up.delayed >= 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_socket_reconfigures_a_running_relay() {
    let echo = echo_server().await;
    let relay = relay_to(echo, "", "").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ctl = listener.local_addr().unwrap();
    tokio::spawn(control::serve(listener, relay.clone()));
    let sock = client(&relay).await;
    let t = Duration::from_secs(2);
    assert!(ping(&sock, 1, t).await.is_some());

    let reply = control::send_command(ctl, "set down blackhole=on")
        .await
        .unwrap();
    assert!(reply.starts_with("ok"), "{reply}");
    assert!(relay.config(Direction::Down).blackhole);
    assert!(!relay.config(Direction::Up).blackhole);
    assert!(ping(&sock, 2, Duration::from_millis(300)).await.is_none());

    let reply = control::send_command(ctl, "set both blackhole=off delay=30ms")
        .await
        .unwrap();
    assert!(reply.starts_with("ok"), "{reply}");
    let rtt = ping(&sock, 3, t).await.expect("link restored");
    assert!(rtt >= Duration::from_millis(60), "rtt {rtt:?}");

    let reply = control::send_command(ctl, "set both loss=2").await.unwrap();
    assert!(reply.starts_with("err"), "{reply}");
    assert_eq!(relay.config(Direction::Up).delay, Duration::from_millis(30));

    let stats = control::send_command(ctl, "json").await.unwrap();
    let json: serde_json::Value = serde_json::from_str(stats.trim_start_matches("ok ")).unwrap();
    assert_eq!(json["down"]["dropped_blackhole"], 1);
    assert_eq!(json["up"]["received"], 3);

    let reply = control::send_command(ctl, "reset both").await.unwrap();
    assert!(reply.starts_with("ok"));
    assert_eq!(relay.config(Direction::Down), DirectionConfig::default());
    assert!(
        control::send_command(ctl, "frobnicate")
            .await
            .unwrap()
            .starts_with("err")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_gets_its_own_answers() {
    let echo = echo_server().await;
    let relay = relay_to(echo, "", "").await;
    let a = client(&relay).await;
    let b = client(&relay).await;
    for i in 0..20u64 {
        assert!(ping(&a, i, Duration::from_secs(2)).await.is_some());
        assert!(ping(&b, 1000 + i, Duration::from_secs(2)).await.is_some());
    }
    assert_eq!(relay.stats().sessions, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplication_and_burst_loss_through_sockets() {
    let echo = echo_server().await;
    let relay = relay_to(echo, "dup=100%", "ge=0.05,0.2").await;
    let sock = client(&relay).await;
    let n = 2000u64;
    for seq in 0..n {
        sock.send(&seq.to_be_bytes()).await.unwrap();
        if seq % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = relay.stats();
    assert_eq!(s.up.duplicated, n);
    assert_eq!(s.up.passed, 2 * n);
    // The echo server answers each copy; the downstream chain drops bursts of ~5.
    assert_eq!(s.down.received, 2 * n);
    assert!(s.down.dropped_burst > 0 && s.down.dropped_burst < n);
}
