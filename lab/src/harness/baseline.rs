//! The baseline: the seed's design, rebuilt so it can be measured in the same runner.
//!
//! The seed's front-end held one TCP socket per worker, sent one image at a time to each
//! worker, and resent an image when no answer came within a fixed timeout. This module keeps
//! exactly those properties:
//!
//! * one TCP connection per worker, one image in flight per worker;
//! * a fixed 5 s timeout, after which the *same* image is resent on the *same* connection
//!   (as a blocking socket with `settimeout` does); a late answer to an earlier copy is
//!   accepted because it carries the same image id;
//! * a broken connection (a crashed worker) puts the image back in the shared queue for
//!   another worker, and the connection is retried once a second.
//!
//! Frames: `u32 length (big endian) | u64 image id | payload`. The worker answers with a JSON
//! payload. The worker simulates inference with a fixed service time, like Glimpse's
//! synthetic model, so both systems do the same "work".

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::LabError;
use super::driver::{Outcome, Submit};

/// Largest frame accepted (the seed's images were < 150 KB; this leaves ample room).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// What a baseline worker simulates.
#[derive(Debug, Clone)]
pub struct WorkerBehaviour {
    /// Simulated inference time per image.
    pub service: Duration,
    /// Probability that a request makes the worker process exit (the seed's "failure").
    pub fail_rate: f64,
    /// Probability that an answer is never sent (the seed's "loss": a lost request or answer).
    pub drop_rate: f64,
    /// Extra time each answer is held (the seed's "delay").
    pub extra_delay: Duration,
    /// Seed of the RNG behind `fail_rate` and `drop_rate`, so a run's failures repeat.
    pub seed: u64,
}

async fn read_frame(s: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<(u64, Vec<u8>)> {
    let len = s.read_u32().await? as usize;
    if !(8..=MAX_FRAME).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame length {len} out of range"),
        ));
    }
    let id = s.read_u64().await?;
    let mut payload = vec![0u8; len - 8];
    s.read_exact(&mut payload).await?;
    Ok((id, payload))
}

async fn write_frame(
    s: &mut (impl AsyncWriteExt + Unpin),
    id: u64,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(payload.len() + 8)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut buf = Vec::with_capacity(payload.len() + 12);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(payload);
    s.write_all(&buf).await
}

/// Runs a baseline worker until the process exits. Requests on one connection are served one
/// after another (the seed's workers were single-threaded); each connection gets its own task.
pub async fn run_worker(listener: TcpListener, behaviour: WorkerBehaviour) -> Result<(), LabError> {
    let rng = Arc::new(std::sync::Mutex::new(StdRng::seed_from_u64(behaviour.seed)));
    let behaviour = Arc::new(behaviour);
    loop {
        let (stream, peer) = listener.accept().await.map_err(LabError::Io)?;
        let _ = stream.set_nodelay(true);
        let (rng, b) = (rng.clone(), behaviour.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, &b, &rng).await {
                tracing::debug!(%peer, error = %e, "baseline connection closed");
            }
        });
    }
}

fn roll(rng: &std::sync::Mutex<StdRng>, p: f64) -> bool {
    let mut r = rng.lock().unwrap_or_else(|e| e.into_inner());
    p > 0.0 && r.random::<f64>() < p
}

async fn serve_connection(
    mut stream: TcpStream,
    b: &WorkerBehaviour,
    rng: &std::sync::Mutex<StdRng>,
) -> std::io::Result<()> {
    loop {
        let (id, image) = read_frame(&mut stream).await?;
        if roll(rng, b.fail_rate) {
            tracing::warn!(id, "baseline worker failing as configured (--fail-rate)");
            std::process::exit(3);
        }
        tokio::time::sleep(b.service + b.extra_delay).await;
        if roll(rng, b.drop_rate) {
            continue;
        }
        let answer = serde_json::json!({"id": id, "bytes": image.len(), "top": [{"index": 0, "label": "synthetic"}]});
        write_frame(&mut stream, id, answer.to_string().as_bytes()).await?;
    }
}

struct Job {
    id: u64,
    image: Bytes,
    retries: u32,
    first_sent: Instant,
    reply: oneshot::Sender<Outcome>,
}

/// The baseline front-end: a queue of images and one connection task per worker.
pub struct BaselineDispatcher {
    tx: mpsc::UnboundedSender<Job>,
    next_id: AtomicU64,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for BaselineDispatcher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl BaselineDispatcher {
    /// Starts one connection task per worker address; `timeout` is the fixed resend timeout
    /// (5 s in the seed's design).
    pub fn start(workers: &[SocketAddr], timeout: Duration) -> BaselineDispatcher {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let tasks = workers
            .iter()
            .map(|w| tokio::spawn(worker_link(*w, rx.clone(), tx.clone(), timeout)))
            .collect();
        BaselineDispatcher {
            tx,
            next_id: AtomicU64::new(1),
            tasks,
        }
    }
}

impl Submit for BaselineDispatcher {
    async fn classify(&self, image: Bytes) -> Outcome {
        let (reply, rx) = oneshot::channel();
        let started = Instant::now();
        let job = Job {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            image,
            retries: 0,
            first_sent: started,
            reply,
        };
        if self.tx.send(job).is_err() {
            return Outcome::failed("baseline dispatcher stopped", 0, started.elapsed());
        }
        match rx.await {
            Ok(o) => o,
            Err(_) => Outcome::failed("baseline dispatcher dropped the job", 0, started.elapsed()),
        }
    }
}

/// One worker's connection: takes jobs from the shared queue while the worker is reachable.
async fn worker_link(
    addr: SocketAddr,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
    requeue: mpsc::UnboundedSender<Job>,
    timeout: Duration,
) {
    let mut conn: Option<TcpStream> = None;
    loop {
        if conn.is_none() {
            match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    conn = Some(s);
                }
                _ => {
                    // Worker down: do not take jobs we cannot send; try again shortly.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let job = {
            let mut q = queue.lock().await;
            match q.recv().await {
                Some(j) => j,
                None => return,
            }
        };
        let Some(stream) = conn.as_mut() else {
            continue;
        };
        match exchange(stream, &job, timeout).await {
            Ok((retries, answer_ok)) => {
                let latency = job.first_sent.elapsed();
                let total_retries = job.retries + retries;
                let outcome = if answer_ok {
                    Outcome::ok(total_retries, latency)
                } else {
                    Outcome::failed("bad answer", total_retries, latency)
                };
                let _ = job.reply.send(outcome);
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "baseline link broken; requeueing image");
                conn = None;
                let mut job = job;
                job.retries += 1;
                if let Err(mpsc::error::SendError(job)) = requeue.send(job) {
                    let latency = job.first_sent.elapsed();
                    let _ = job
                        .reply
                        .send(Outcome::failed("queue closed", job.retries, latency));
                }
            }
        }
    }
}

/// Sends one image and waits for its answer, resending after each `timeout` on the same
/// connection. Returns the number of resends. Gives up (an error, so the image is requeued
/// elsewhere) after 12 resends, i.e. one minute.
async fn exchange(
    stream: &mut TcpStream,
    job: &Job,
    timeout: Duration,
) -> std::io::Result<(u32, bool)> {
    let mut resends = 0u32;
    write_frame(stream, job.id, &job.image).await?;
    loop {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, read_frame(stream)).await {
                Ok(Ok((id, payload))) if id == job.id => {
                    let ok = serde_json::from_slice::<serde_json::Value>(&payload).is_ok();
                    return Ok((resends, ok));
                }
                // A late answer to an earlier image on this connection: discard it.
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_) => break,
            }
        }
        resends += 1;
        if resends > 12 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer after 12 resends",
            ));
        }
        write_frame(stream, job.id, &job.image).await?;
    }
}

/// A TCP proxy adding a fixed one-way delay in each direction, so the baseline's TCP links see
/// the same round-trip time as Glimpse's UDP links behind [`glimpse_netem::relay`]. Byte order is kept;
/// there is no loss (TCP packet loss needs the kernel: see `netem/scripts/impair.sh`).
pub async fn start_tcp_delay_proxy(
    upstream: SocketAddr,
    one_way: Duration,
) -> Result<(SocketAddr, JoinHandle<()>), LabError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(LabError::Io)?;
    let addr = listener.local_addr().map_err(LabError::Io)?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let a = tokio::spawn(delayed_pump(cr, sw, one_way));
                let b = tokio::spawn(delayed_pump(sr, cw, one_way));
                let _ = tokio::join!(a, b);
            });
        }
    });
    Ok((addr, task))
}

async fn delayed_pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, data)) = rx.recv().await {
            tokio::time::sleep_until((at + delay).into()).await;
            if w.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
