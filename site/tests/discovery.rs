//! Live membership with real processes: a real DNS server (Debian's `dnsmasq`) whose answer
//! changes while images flow, real `glimpse-node` processes on 127.0.0.2-4 (one shared node
//! certificate for the DNS name), and the real `glimpse` binary with `--node-dns`; and the
//! `--nodes-file` equivalent, reloaded on change and on SIGHUP.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::cluster_files::{ClusterFiles, node_binary};
use common::{Spawned, client, part, png};
use serde_json::Value;

use crate::common;

const NAME: &str = "nodes.glimpse.test";
const IMAGES: usize = 500;
const PER_REQUEST: usize = 5;

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `dnsmasq`, or `None` with the reason printed; with CI=true a missing one fails the test.
fn dnsmasq() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("dnsmasq"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "dnsmasq is missing (Debian package dnsmasq-base; .ci/run installs it)"
        );
        println!("SKIPPED: dnsmasq is not installed (apt-get install dnsmasq-base)");
    }
    found
}

/// A free UDP port on `ip` (also free on the other addresses the caller checks).
fn free_udp_port(ips: &[Ipv4Addr]) -> u16 {
    loop {
        let port = std::net::UdpSocket::bind((ips[0], 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let free = ips[1..]
            .iter()
            .all(|ip| std::net::UdpSocket::bind((*ip, port)).is_ok())
            && std::net::TcpListener::bind((ips[0], port)).is_ok();
        if free {
            return port;
        }
    }
}

/// The cluster's files: a CA, one node certificate for [`NAME`] shared by every node (the
/// supported mode for DNS discovery), and the front-end's client certificate.
struct Certs {
    files: ClusterFiles,
    node_cert: String,
    node_key: String,
}

impl Certs {
    fn new() -> Certs {
        let files = ClusterFiles::new("discovery test");
        // dnsmasq drops to `nobody` and re-reads its hosts file from here on SIGHUP.
        std::fs::set_permissions(
            files.dir(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let (node_cert, node_key) = files.node(NAME, &[]);
        Certs {
            files,
            node_cert,
            node_key,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.files.dir().join(name)
    }

    fn frontend_flags(&self) -> Vec<String> {
        self.files.frontend_flags()
    }
}

/// A synthetic `glimpse-node` on `ip:port` with the shared certificate, taking
/// `service_ms` per image.
fn start_node(certs: &Certs, ip: Ipv4Addr, port: u16, service_ms: u32) -> Proc {
    let child = Command::new(node_binary())
        .args(["serve", "--listen", &format!("{ip}:{port}")])
        .args(["--node-id", &format!("node-{ip}")])
        .args(["--cert", &certs.node_cert, "--key", &certs.node_key])
        .args(["--ca", &certs.files.ca_path])
        .args([
            "--model",
            "synthetic",
            "--service-ms",
            &service_ms.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start glimpse-node");
    Proc(child)
}

/// The glimpse flags every test here needs: one caller may queue all its images.
fn site_flags() -> Vec<String> {
    [
        "--rate-limit",
        "off",
        "--max-queued",
        "2000",
        "--max-queued-per-caller",
        "2000",
    ]
    .map(String::from)
    .to_vec()
}

async fn nodes(site: &Spawned) -> Vec<Value> {
    let r = client()
        .get(site.url("/api/v1/nodes"))
        .send()
        .await
        .expect("GET /api/v1/nodes");
    let body: Value = r.json().await.expect("JSON");
    body["nodes"].as_array().cloned().unwrap_or_default()
}

fn node_at(nodes: &[Value], ip: Ipv4Addr) -> Option<&Value> {
    nodes.iter().find(|n| {
        n["addr"]
            .as_str()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .is_some_and(|a| a.ip() == IpAddr::V4(ip))
    })
}

fn count(n: &Value, field: &str) -> u64 {
    n[field].as_u64().unwrap_or(0)
}

/// Polls the node list until `check` holds; panics after `limit`.
async fn until(site: &Spawned, limit: Duration, what: &str, check: impl Fn(&[Value]) -> bool) {
    let start = Instant::now();
    loop {
        let n = nodes(site).await;
        if check(&n) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{what} not seen within {limit:?}: {n:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn sighup(pid: u32) {
    signal(pid, "-HUP");
}

fn write_hosts(path: &Path, ips: &[Ipv4Addr]) {
    let text: String = ips.iter().map(|ip| format!("{ip} {NAME}\n")).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_membership_changes_while_500_images_flow() {
    let Some(dnsmasq_bin) = dnsmasq() else {
        return;
    };
    let a = Ipv4Addr::new(127, 0, 0, 2);
    let b = Ipv4Addr::new(127, 0, 0, 3);
    let c = Ipv4Addr::new(127, 0, 0, 4);
    let certs = Certs::new();
    let port = free_udp_port(&[a, b, c]);
    // The node that will be removed is slow, so it still holds images when it goes and its
    // drain can be watched.
    let _nodes: Vec<Proc> = [(a, 300), (b, 20), (c, 20)]
        .iter()
        .map(|&(ip, ms)| start_node(&certs, ip, port, ms))
        .collect();

    // The DNS server: authoritative for glimpse.test (NXDOMAIN for unknown names), its only
    // data the hosts file, TTL 0, re-read on SIGHUP.
    let hosts = certs.path("hosts");
    write_hosts(&hosts, &[a]);
    let dns_port = free_udp_port(&[Ipv4Addr::LOCALHOST]);
    let dns = Proc(
        Command::new(&dnsmasq_bin)
            .arg("--keep-in-foreground")
            .arg(format!("--port={dns_port}"))
            .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
            .args(["--no-resolv", "--no-hosts", "--local=/glimpse.test/"])
            .arg(format!("--addn-hosts={}", hosts.display()))
            .args(["--local-ttl=0", "--pid-file=", "--log-facility=-"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq"),
    );
    let dns_pid = dns.0.id();

    let mut flags = site_flags();
    flags.extend(certs.frontend_flags());
    flags.extend(
        [
            "--node-dns",
            &format!("{NAME}:{port}"),
            "--dns-server",
            &format!("127.0.0.1:{dns_port}"),
            "--discovery-interval-s",
            "1",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let site = Spawned::start(&args, None);
    site.wait_ready().await;

    // The images: 100 requests of 5, one every 150 ms (about 15 s of traffic), each file
    // named so every answer can be traced to its image.
    let base = site.base.clone();
    let sent = Arc::new(AtomicUsize::new(0));
    let sent_in = sent.clone();
    let flow = tokio::spawn(async move {
        let http = client();
        let mut requests = Vec::new();
        for r in 0..IMAGES / PER_REQUEST {
            let mut form = reqwest::multipart::Form::new();
            for i in 0..PER_REQUEST {
                let k = r * PER_REQUEST + i;
                form = form.part(
                    "file",
                    part(png((k % 251) as u8), &format!("img-{k}.png"), "image/png"),
                );
            }
            let req = http
                .post(format!("{base}/api/v1/classify?wait=true"))
                .multipart(form)
                .send();
            requests.push(tokio::spawn(async move {
                let r = req.await.expect("request sent");
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.expect("JSON")
            }));
            sent_in.fetch_add(PER_REQUEST, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let mut bodies = Vec::new();
        for r in requests {
            bodies.push(r.await.expect("request task"));
        }
        bodies
    });

    // Two nodes appear in DNS while images flow (the first node is serving them): each
    // takes work within 5 s.
    until(
        &site,
        Duration::from_secs(30),
        "images flowing to the first node",
        |n| node_at(n, a).is_some_and(|n| count(n, "served") > 0),
    )
    .await;
    write_hosts(&hosts, &[a, b, c]);
    sighup(dns_pid);
    let appeared = Instant::now();
    until(
        &site,
        Duration::from_secs(30),
        "new nodes taking work",
        |n| {
            [b, c].iter().all(|ip| {
                node_at(n, *ip).is_some_and(|n| count(n, "served") + count(n, "in_flight") > 0)
            })
        },
    )
    .await;
    let took = appeared.elapsed();
    println!("new nodes took work {took:?} after they appeared in DNS");
    assert!(took < Duration::from_secs(5), "new nodes took {took:?}");

    // One node disappears from DNS: once the front-end has taken it out, it gets no new work
    // (what it holds finishes), and it is gone from the list once idle. It is taken out
    // while it holds images: it has just started taking work, and each image takes 300 ms.
    let sent_before_removal = sent.load(Ordering::SeqCst);
    write_hosts(&hosts, &[b, c]);
    sighup(dns_pid);
    let removed_at = Instant::now();
    // (served, in flight) when it was first seen removed. An attempt that runs overdue is
    // counted as failed while it is still in flight (it may yet win), so "failed" is not a
    // count of finished attempts. New work shows instead as more in flight (an image takes
    // 300 ms there, far longer than the 50 ms between looks), or as more served than what
    // was held then.
    let mut baseline: Option<(u64, u64)> = None;
    loop {
        let n = nodes(&site).await;
        match node_at(&n, a) {
            Some(node) if node["state"] == "removed" => {
                let (served, in_flight) = (count(node, "served"), count(node, "in_flight"));
                let (first_served, first_in_flight) = *baseline.get_or_insert((served, in_flight));
                assert!(
                    in_flight <= first_in_flight && served <= first_served + first_in_flight,
                    "a removed node got new work: {node} (first seen removed: served \
                     {first_served}, in flight {first_in_flight})"
                );
            }
            Some(node) => assert!(baseline.is_none(), "a removed node came back: {node}"),
            None => break,
        }
        assert!(
            removed_at.elapsed() < Duration::from_secs(40),
            "the removed node never left the list: {n:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "removed node drained and left the list {:?} after its DNS record went",
        removed_at.elapsed(),
    );
    assert!(
        baseline.is_some(),
        "the removed node was never seen draining (it held no image?)"
    );

    // Every image answered exactly once, with a result.
    let bodies = flow.await.expect("flow");
    let sent_after_removal = IMAGES - sent_before_removal;
    println!("{sent_after_removal} images were sent after the removal");
    assert!(
        sent_after_removal > 0,
        "the removal happened after the flow"
    );
    let mut answers: HashMap<String, usize> = HashMap::new();
    for body in &bodies {
        let results = body["results"].as_array().expect("results");
        assert_eq!(results.len(), PER_REQUEST, "{body}");
        for res in results {
            assert_eq!(res["status"], "ok", "{res}");
            assert_eq!(res["node"], NAME, "{res}");
            *answers
                .entry(res["name"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(answers.len(), IMAGES);
    assert!(answers.values().all(|&n| n == 1), "an image answered twice");
    // The remaining nodes serve on.
    let n = nodes(&site).await;
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(n.iter().all(|n| n["state"] == "ready"), "{n:?}");

    // The DNS server stops answering (frozen): lookups time out, and the last known
    // addresses stand: a DNS outage does not drain the fleet.
    signal(dns_pid, "-STOP");
    // Real time, on purpose: the rounds' lookups must run into the resolver's own timeout
    // (a few seconds) at least once; nothing observable happens earlier.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let n = nodes(&site).await;
    signal(dns_pid, "-CONT");
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(n.iter().all(|n| n["state"] == "ready"), "{n:?}");

    // An answer with no address (NXDOMAIN) is an answer: every node of the name leaves.
    write_hosts(&hosts, &[]);
    sighup(dns_pid);
    until(&site, Duration::from_secs(30), "an empty membership", |n| {
        n.is_empty()
    })
    .await;
    let r = client()
        .get(site.url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(r.status(), 503, "not ready without nodes");
}

/// A `glimpse` on a nodes file (with `interval_s` between checks), and its two nodes.
struct FileSetup {
    certs: Certs,
    file: PathBuf,
    port: u16,
    _nodes: Vec<Proc>,
    site: Spawned,
}

impl FileSetup {
    async fn start(interval_s: &str) -> FileSetup {
        let a = Ipv4Addr::new(127, 0, 0, 2);
        let b = Ipv4Addr::new(127, 0, 0, 3);
        let certs = Certs::new();
        let port = free_udp_port(&[a, b]);
        let nodes = vec![
            start_node(&certs, a, port, 20),
            start_node(&certs, b, port, 20),
        ];
        let file = certs.path("nodes");
        std::fs::write(&file, format!("# the fleet\n{NAME}=127.0.0.2:{port}\n")).unwrap();
        let mut flags = site_flags();
        flags.extend(certs.frontend_flags());
        flags.extend(
            [
                "--nodes-file",
                &file.to_string_lossy(),
                "--discovery-interval-s",
                interval_s,
            ]
            .map(String::from),
        );
        let args: Vec<&str> = flags.iter().map(String::as_str).collect();
        let site = Spawned::start(&args, None);
        site.wait_ready().await;
        FileSetup {
            certs,
            file,
            port,
            _nodes: nodes,
            site,
        }
    }

    fn write(&self, text: &str) {
        let tmp = self.certs.path("nodes.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
    }

    /// The list shows only 127.0.0.3, ready.
    async fn moved_to_b(&self, limit: Duration) {
        let b = Ipv4Addr::new(127, 0, 0, 3);
        until(&self.site, limit, "the switch to 127.0.0.3", |n| {
            n.len() == 1 && node_at(n, b).is_some_and(|n| n["state"] == "ready")
        })
        .await;
    }

    async fn classify_one(&self) -> Value {
        let form = reqwest::multipart::Form::new().part("file", part(png(1), "x.png", "image/png"));
        let r = client()
            .post(self.site.url("/api/v1/classify?wait=true"))
            .multipart(form)
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.expect("JSON");
        body["results"][0].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_file_reloads_on_change() {
    // End to end: the moved node serves. When a change applies, and that a bad edit never
    // does, is the discovery loop's unit tests' business (on paused time, no waiting).
    let s = FileSetup::start("1").await;
    s.write(&format!("{NAME}=127.0.0.3:{}  # moved\n", s.port));
    s.moved_to_b(Duration::from_secs(30)).await;
    assert_eq!(s.classify_one().await["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_file_reloads_on_sighup() {
    // A day between checks: only SIGHUP can make it look within the test's 30 s (that no
    // round runs before its time is checked on paused time in the discovery loop's tests).
    let s = FileSetup::start("86400").await;
    s.write(&format!("{NAME}=127.0.0.3:{}\n", s.port));
    sighup(s.site.pid);
    s.moved_to_b(Duration::from_secs(30)).await;
    assert_eq!(s.classify_one().await["status"], "ok");
}
