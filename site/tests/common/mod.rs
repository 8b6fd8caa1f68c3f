//! Shared helpers: an in-process site with N local synthetic workers (the same code path
//! as `glimpse --local-workers N --model synthetic`), a reqwest client that accepts the
//! self-signed certificate, and small generated images.

#![allow(dead_code)]

pub(crate) mod cluster_files;
pub(crate) mod grpc;
pub(crate) mod h3;

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use glimpse_site::cli::Cli;
use glimpse_site::fleet::cluster::{self, Cluster};
use glimpse_site::http::{conn, server};
use glimpse_site::{RunningSite, start_site};

/// Generous: the CI machine has 2 cores and runs other builds.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct Harness {
    pub site: Option<RunningSite>,
    pub cluster: Option<Cluster>,
    pub base: String,
    pub client: reqwest::Client,
}

impl Harness {
    /// Start a site; `args` are extra `glimpse` flags.
    pub(crate) async fn start(args: &[&str]) -> Harness {
        // Logs show with a failing test's output (RUST_LOG picks the level; default info).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_test_writer()
            .try_init();
        let mut argv = vec!["glimpse", "--listen", "127.0.0.1:0"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).expect("valid test flags");
        let tls = server::tls_identity(None, None).expect("self-signed certificate");
        let cluster = cluster::build(&cli.cluster_config().expect("a cluster"))
            .await
            .expect("cluster starts");
        let nofile = conn::raise_fd_limit().expect("file-descriptor limit");
        let site = start_site(cli.site_config(nofile), &tls, cluster.inference.clone())
            .await
            .expect("site starts");
        let base = format!("https://127.0.0.1:{}", site.addr.port());
        Harness {
            site: Some(site),
            cluster: Some(cluster),
            base,
            client: client(),
        }
    }

    /// Start with `n` synthetic local workers and wait until `/readyz` says 200.
    pub(crate) async fn ready(n: u32, service_ms: u32, extra: &[&str]) -> Harness {
        let n = n.to_string();
        let ms = service_ms.to_string();
        let mut args = vec![
            "--local-workers",
            &n,
            "--model",
            "synthetic",
            "--service-ms",
            &ms,
        ];
        args.extend_from_slice(extra);
        let h = Harness::start(&args).await;
        h.wait_ready().await;
        h
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The gRPC listener's address (started by default with local workers).
    pub(crate) fn grpc_addr(&self) -> std::net::SocketAddr {
        self.site
            .as_ref()
            .and_then(|s| s.grpc_addr)
            .expect("a gRPC listener")
    }

    pub(crate) async fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "site not ready after {READY_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET path` as text (the metrics page).
    pub(crate) async fn get_text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
            .text()
            .await
            .expect("text body")
    }

    /// `POST /api/v1/classify?wait=true` with a multipart form: status and JSON body.
    pub(crate) async fn classify_wait(
        &self,
        form: reqwest::multipart::Form,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url("/api/v1/classify?wait=true"))
            .multipart(form)
            .send()
            .await
            .expect("request sent");
        let status = r.status().as_u16();
        (status, r.json().await.expect("JSON body"))
    }

    /// `POST /api/v1/classify?wait=true` with `form`; `None` if no response came within
    /// `limit` (the tests that use it check that the site answers instead of hanging).
    pub(crate) async fn post_form_within(
        &self,
        form: reqwest::multipart::Form,
        limit: Duration,
    ) -> Option<reqwest::Response> {
        let send = self
            .client
            .post(self.url("/api/v1/classify?wait=true"))
            .multipart(form)
            .send();
        tokio::time::timeout(limit, send)
            .await
            .ok()
            .map(|r| r.expect("request sent"))
    }

    /// A raw TLS connection to the listener, for requests no HTTP client would send.
    pub(crate) async fn raw_tls(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let port: u16 = self.base.rsplit(':').next().unwrap().parse().unwrap();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tls_connector().connect(name, tcp).await.unwrap()
    }

    pub(crate) async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.client.get(self.url(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.expect("JSON body"))
    }

    /// POSTs `body` as JSON; the status and the JSON answer.
    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.expect("JSON body"))
    }

    pub(crate) async fn stop(mut self) {
        if let Some(site) = self.site.take() {
            site.shutdown().await;
        }
        if let Some(cluster) = self.cluster.take() {
            cluster.shutdown().await;
        }
    }
}

/// A client that accepts the self-signed certificate and keeps cookies, like a browser: its
/// requests share one client identity.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .cookie_store(true)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

fn gradient(w: u32, h: u32, seed: u8) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 7) as u8 ^ seed,
            (y * 5) as u8,
            seed.wrapping_mul(31) ^ ((x + y) as u8),
        ])
    })
}

/// A small PNG; different seeds give different bytes (and synthetic labels).
pub(crate) fn png(seed: u8) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    gradient(64, 48, seed)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

/// A small JPEG.
pub(crate) fn jpeg(seed: u8) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    gradient(80, 60, seed)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encode jpeg");
    out.into_inner()
}

pub(crate) fn part(bytes: Vec<u8>, name: &str, mime: &str) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_string())
        .mime_str(mime)
        .expect("mime")
}

/// Read a Prometheus sample value by its exact series text.
pub(crate) fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// The real `glimpse` binary in a process of its own, for tests that measure the process
/// (memory, file descriptors) or attack it from outside. Killed on drop.
pub(crate) struct Spawned {
    child: std::process::Child,
    pub base: String,
    pub pid: u32,
    /// Everything it printed on stdout so far.
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Spawned {
    /// Start `glimpse ARGS --listen 127.0.0.1:0` with its open-file limit set to `nofile`
    /// (soft and hard, as `ulimit -n` does) when given, and wait for its URL.
    pub(crate) fn start(args: &[&str], nofile: Option<u64>) -> Spawned {
        use std::io::BufRead;
        let bin = env!("CARGO_BIN_EXE_glimpse");
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = std::process::Command::new("bash");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), bin]);
                c
            }
            None => std::process::Command::new(bin),
        };
        cmd.args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        let mut child = cmd.spawn().expect("start glimpse");
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        // Keep reading stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        let mut spawned = Spawned {
            child,
            base: String::new(),
            pid,
            lines,
        };
        let url = spawned.printed("Glimpse is serving at ");
        spawned.base = url.trim_end_matches('/').replace("localhost", "127.0.0.1");
        spawned
    }

    /// The rest of the first stdout line that starts with `prefix`, waiting for it.
    pub(crate) fn printed(&self, prefix: &str) -> String {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.strip_prefix(prefix).map(|r| r.trim().to_string()));
            if let Some(rest) = found {
                return rest;
            }
            assert!(
                Instant::now() < deadline,
                "glimpse did not print {prefix:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then its exit status (within 60 s).
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(60))
    }

    /// Sends signal `name` (`TERM`, `INT`, ...) with kill(1).
    pub(crate) fn signal(&self, name: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid.to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{name} {}", self.pid);
    }

    /// Its exit status, waiting up to `limit`.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "glimpse did not stop within {limit:?} of the signal"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether it has exited (reaped if so).
    pub(crate) fn has_exited(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_some()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` as text (the metrics page), with the tests' client.
    pub(crate) async fn get_text(&self, path: &str) -> String {
        client()
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
            .text()
            .await
            .expect("text body")
    }

    /// The port of the HTTPS listener.
    pub(crate) fn port(&self) -> u16 {
        self.base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in the URL")
    }

    /// `VmRSS` and `VmHWM` (peak) of the process, in bytes.
    pub(crate) fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).expect("proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .expect("memory field")
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Wait until `/readyz` says 200.
    pub(crate) async fn wait_ready(&self) {
        let c = client();
        let start = Instant::now();
        loop {
            if let Ok(r) = c.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(start.elapsed() < READY_TIMEOUT, "glimpse not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Accepts any server certificate: the tests attack their own server.
#[derive(Debug)]
pub(crate) struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl AnyCert {
    /// Checks handshake signatures with `provider`'s algorithms.
    pub(crate) fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> AnyCert {
        AnyCert(provider)
    }
}

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub(crate) fn tls_connector() -> tokio_rustls::TlsConnector {
    tls_connector_for(b"http/1.1")
}

/// A connector that accepts any certificate and offers one ALPN protocol.
pub(crate) fn tls_connector_for(alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
