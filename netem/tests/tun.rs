//! The IP-level TUN link end to end: real TUN devices, a real network namespace, servers
//! started inside it with `ip netns exec`, and measurements taken from the root namespace.
//!
//! Needs root and /dev/net/tun (and `ip`); where any is missing each test prints a SKIPPED
//! line and returns. Each test uses its own link index (200..) so that tests running in
//! parallel, and a lab using the low indexes, never share a subnet.
#![cfg(target_os = "linux")]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use glimpse_netem::link::{Direction, LinkControl};
use glimpse_netem::tun::{TunConfig, TunLink, check_available};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const RELAY: &str = env!("CARGO_BIN_EXE_glimpse-relay");

fn usable(test: &str) -> bool {
    match check_available() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED {test}: {why} (needs root, /dev/net/tun and ip netns)");
            false
        }
    }
}

/// A helper process inside the namespace, killed when dropped.
struct InNs(Child);

impl Drop for InNs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `glimpse-relay ARGS...` inside the link's namespace.
fn spawn_in(link: &TunLink, args: &[&str]) -> InNs {
    InNs(
        Command::new("ip")
            .args(["netns", "exec", link.namespace(), RELAY])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip netns exec runs"),
    )
}

async fn link(index: u8, seed: u64) -> TunLink {
    let mut c = TunConfig::new(index);
    c.seed = seed;
    TunLink::create(c).await.expect("TUN link starts")
}

/// A UDP echo server inside the namespace; returns a socket connected to it once it answers.
async fn udp_echo(link: &TunLink) -> (InNs, UdpSocket) {
    let target: SocketAddr = (link.worker_addr(), 9000).into();
    let server = spawn_in(link, &["echo", "--listen", &target.to_string()]);
    let sock = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    sock.connect(target).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = u64::MAX;
    while Instant::now() < deadline {
        if ping(&sock, seq, Duration::from_millis(200)).await.is_some() {
            return (server, sock);
        }
        seq -= 1;
    }
    panic!("echo server in {} never answered", link.namespace());
}

/// One round trip with a sequence number; `None` if nothing came back within `timeout`.
async fn ping(sock: &UdpSocket, seq: u64, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    // ECONNREFUSED from an earlier ping while the server was starting: just retry.
    if sock.send(&seq.to_be_bytes()).await.is_err() {
        return None;
    }
    let mut buf = [0u8; 64];
    let deadline = start + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sock.recv(&mut buf)).await {
            Ok(Ok(8)) if buf[..8] == seq.to_be_bytes() => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

async fn rtts(sock: &UdpSocket, first_seq: u64, n: u64) -> Vec<Duration> {
    let mut rtts = Vec::new();
    for seq in first_seq..first_seq + n {
        rtts.push(
            ping(sock, seq, Duration::from_secs(2))
                .await
                .expect("no loss configured"),
        );
    }
    rtts.sort();
    rtts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_adds_to_the_round_trip() {
    if !usable("delay_adds_to_the_round_trip") {
        return;
    }
    let link = link(201, 7).await;
    let (_server, sock) = udp_echo(&link).await;
    let clean = rtts(&sock, 0, 20).await;
    link.apply_spec(Direction::Both, "delay=50ms").unwrap();
    let delayed = rtts(&sock, 1000, 20).await;
    let (clean, fastest, delayed) = (clean[10], delayed[0], delayed[10]);
    let added_ms = (delayed.as_secs_f64() - clean.as_secs_f64()) * 1e3;
    eprintln!("clean median {clean:?}, with 50 ms each way {delayed:?}: +{added_ms:.2} ms");
    // A delayed packet can never come back early, however busy the machine: no echo may
    // beat the 100 ms the two directions add. How late the median is depends on how soon
    // the scheduler runs the timers, so its bound only catches a delay applied twice.
    assert!(
        fastest >= Duration::from_millis(100),
        "50 ms each way must add at least 100 ms, but an echo took {fastest:?}"
    );
    assert!(
        (95.0..=150.0).contains(&added_ms),
        "50 ms each way should add about 100 ms, added {added_ms:.2} ms"
    );
    let s = link.stats();
    assert!(s.up.delayed >= 20 && s.down.delayed >= 20, "{s:?}");
    link.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_loss_matches_the_configured_rate() {
    if !usable("one_way_loss_matches_the_configured_rate") {
        return;
    }
    let link = link(202, 42).await;
    let (_server, sock) = udp_echo(&link).await;
    link.reset_counters();
    link.apply_spec(Direction::Up, "loss=10%").unwrap();
    const N: u64 = 10_000;
    let mut seen = vec![false; N as usize];
    let mut buf = [0u8; 64];
    // Bursts of 100, then collect their echoes: nothing queues long enough for a kernel
    // socket buffer to overflow, so every missing echo is the impairment's doing.
    for burst in 0..N / 100 {
        for seq in burst * 100..(burst + 1) * 100 {
            sock.send(&seq.to_be_bytes()).await.unwrap();
        }
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(30), sock.recv(&mut buf)).await
        {
            if n == 8 {
                let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
                if let Some(s) = seen.get_mut(seq as usize) {
                    *s = true;
                }
            }
        }
    }
    let received = seen.iter().filter(|s| **s).count() as f64;
    let loss = 1.0 - received / N as f64;
    let s = link.stats();
    eprintln!(
        "loss=10% one way: measured {:.2}% over {N} packets; up {} / down {}",
        loss * 100.0,
        s.up,
        s.down
    );
    assert!(
        (0.085..=0.115).contains(&loss),
        "measured loss {loss:.4}, configured 0.10"
    );
    assert_eq!(s.down.dropped, 0, "the return direction is clean");
    assert_eq!(
        s.up.dropped_random as f64,
        N as f64 - received,
        "every missing echo was dropped by the impairment"
    );
    link.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_crosses_a_lossy_link_intact() {
    if !usable("tcp_crosses_a_lossy_link_intact") {
        return;
    }
    let link = link(203, 3).await;
    let target: SocketAddr = (link.worker_addr(), 9001).into();
    let _server = spawn_in(&link, &["tcp-echo", "--listen", &target.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match TcpStream::connect(target).await {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("tcp echo never listened: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    link.apply_spec(Direction::Both, "loss=5% delay=10ms")
        .unwrap();
    // 2 MiB of deterministic, non-repeating bytes, echoed back.
    let data: Vec<u8> = (0u32..2 * 1024 * 1024 / 4)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    let started = Instant::now();
    let (mut r, mut w) = stream.into_split();
    let to_send = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&to_send).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(data.len());
    tokio::time::timeout(Duration::from_secs(150), r.read_to_end(&mut back))
        .await
        .expect("transfer finished within 150 s")
        .expect("read ok");
    writer.await.unwrap();
    let s = link.stats();
    eprintln!(
        "2 MiB echoed over loss=5% delay=10ms in {:.1} s; dropped up {} down {}",
        started.elapsed().as_secs_f64(),
        s.up.dropped,
        s.down.dropped
    );
    assert_eq!(back.len(), data.len(), "every byte came back");
    assert!(back == data, "bytes intact");
    assert!(
        s.up.dropped_random > 0 && s.down.dropped_random > 0,
        "TCP segments really were dropped: {s:?}"
    );
    link.close().await;
}

fn listed(cmd: &[&str], name: &str) -> bool {
    let out = Command::new("ip").args(cmd).output().expect("ip runs");
    String::from_utf8_lossy(&out.stdout).contains(name)
}

/// Polls until neither the namespace nor the root-side device is listed.
fn gone_within(ns: &str, dev: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !listed(&["netns", "list"], ns) && !listed(&["link", "show"], dev) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_drop_remove_namespace_and_devices() {
    if !usable("close_and_drop_remove_namespace_and_devices") {
        return;
    }
    // close(): everything is gone when it returns.
    let l = link(204, 1).await;
    let (ns, a, b) = (
        l.namespace().to_string(),
        l.root_device().to_string(),
        l.worker_device().to_string(),
    );
    assert!(listed(&["netns", "list"], &ns), "namespace created");
    assert!(listed(&["link", "show"], &a), "root device created");
    assert!(
        listed(&["-n", &ns, "link", "show"], &b),
        "worker device moved"
    );
    l.close().await;
    assert!(
        !listed(&["netns", "list"], &ns),
        "namespace removed by close"
    );
    assert!(
        !listed(&["link", "show"], &a),
        "root device removed by close"
    );
    drop(l);

    // Drop alone (an owner that errors out): cleaned up as soon as the runtime drops the
    // cancelled tasks.
    let l = link(204, 1).await;
    let (ns, a) = (l.namespace().to_string(), l.root_device().to_string());
    let (_server, _sock) = udp_echo(&l).await;
    drop(l);
    assert!(
        gone_within(&ns, &a, Duration::from_secs(3)),
        "namespace {ns} or device {a} left behind after drop"
    );
    // The subnet is free again: the same index can be reused at once.
    let l = link(204, 1).await;
    l.close().await;
}
