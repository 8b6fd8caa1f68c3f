//! The sweep itself: the testbed (a front-end alone in a namespace behind a TUN link), then
//! for each loss rate, runs that alternate the protocols, each a fresh connection and a burst.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;

use super::report::write_report;
use super::run::{LinkCount, PROTOCOLS, Run, UplinkOptions};
use crate::harness::LabError;
use crate::harness::net::NsLink;
use crate::harness::procs::wait_site_ready;
use crate::harness::testbed::Testbed;
use crate::load::protocol::{HttpVersion, Protocol, Target, TargetOptions};
use crate::load::tls::Trust;

/// The front-end's HTTPS (TCP) and HTTP/3 (UDP) port inside its namespace.
const PORT: u16 = 8443;

/// The TUN link's index (its addresses are `10.77.INDEX.0/24`): the last one, so an uplink
/// run does not collide with a sweep's, whose workers take them from 1 up.
const LINK_INDEX: u8 = glimpse_netem::tun::MAX_INDEX;

/// Runs the sweep and writes its report into `o.out`; returns every run.
pub async fn run_uplink(o: &UplinkOptions) -> Result<Vec<Run>, LabError> {
    if o.images.is_empty() || o.burst == 0 || o.runs == 0 || o.losses.is_empty() {
        return Err(LabError::Usage(
            "uplink needs images, a burst ≥ 1, runs ≥ 1 and at least one loss rate".into(),
        ));
    }
    if let Some(bad) = o.losses.iter().find(|l| !(0.0..1.0).contains(*l)) {
        return Err(LabError::Usage(format!(
            "loss {bad}: give a fraction in [0, 1)"
        )));
    }
    crate::harness::net::NetMode::Netns.check()?;
    o.bins.require(&["glimpse"])?;
    let log_dir = o.out.join("logs");
    std::fs::create_dir_all(&log_dir)?;
    let mut bed = Testbed::new(&log_dir);
    let runs = measure(o, &mut bed).await;
    bed.close().await;
    let runs = runs?;
    write_report(o, &runs)?;
    Ok(runs)
}

/// Starts the front-end in its namespace, then measures every loss rate.
async fn measure(o: &UplinkOptions, bed: &mut Testbed) -> Result<Vec<Run>, LabError> {
    let ns = NsLink::create(usize::from(LINK_INDEX), o.seed).await?;
    let server = SocketAddr::new(ns.addr(), PORT);
    let args: Vec<String> = [
        "--listen",
        &format!("0.0.0.0:{PORT}"),
        "--local-workers",
        "2",
        "--model",
        "synthetic",
        "--service-ms",
        &o.service_ms.to_string(),
        // One client standing in for a person: the per-caller limits made for strangers
        // would measure themselves.
        "--rate-limit",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (program, args) = ns.wrap(&o.bins.path("glimpse"), &args);
    bed.add_namespace(ns);
    let site = bed.spawn_frontend("glimpse", &program, &args)?;
    let base = format!("https://{server}");
    wait_site_ready(&base, 2, Duration::from_secs(60), site).await?;

    let images = Arc::new(o.images.clone());
    let mut runs = Vec::new();
    for &loss in &o.losses {
        let half = o.rtt / 2;
        bed.impair(&format!("loss={loss} delay={}us", half.as_micros()))?;
        for run in 0..o.runs {
            for http in PROTOCOLS {
                bed.reset_link_counters();
                let r = burst(o, &base, http, &images).await;
                let link = bed.link_stats().first().map(|l| (l.up, l.down));
                let (up, down) = link.unwrap_or_default();
                let r = Run {
                    loss,
                    run,
                    link: LinkCount {
                        packets_up: up.received,
                        dropped_up: up.dropped,
                        packets_down: down.received,
                        dropped_down: down.dropped,
                    },
                    ..r
                };
                eprintln!(
                    "loss {:>4.1}% {} run {}: {} of {} answered, the last after {:.3} s{}",
                    loss * 100.0,
                    http,
                    run + 1,
                    r.latencies_s.len(),
                    o.burst,
                    r.total_s,
                    match r.failed {
                        0 => String::new(),
                        n => format!(", {n} failed: {}", r.first_error.as_deref().unwrap_or("")),
                    }
                );
                runs.push(r);
            }
        }
    }
    Ok(runs)
}

/// One run: a fresh connection over `http`, one image to open it, then the burst, all of it
/// at once.
async fn burst(o: &UplinkOptions, base: &str, http: HttpVersion, images: &Arc<Vec<Bytes>>) -> Run {
    let failed_run = |e: String| Run {
        http,
        loss: 0.0,
        run: 0,
        total_s: f64::NAN,
        latencies_s: Vec::new(),
        failed: o.burst,
        first_error: Some(e),
        link: LinkCount::default(),
    };
    let target = match Target::connect(&TargetOptions {
        url: base.to_string(),
        protocol: Protocol::Json,
        http,
        congestion: o.congestion,
        trust: Trust::Insecure,
        api_key: None,
        timeout: o.timeout,
    })
    .await
    {
        Ok(t) => Arc::new(t),
        Err(e) => return failed_run(e.to_string()),
    };
    // Opens the connection (TCP + TLS, or QUIC) and warms it, outside the measurement.
    if let Err(f) = target.send(&images[..1]).await {
        return failed_run(format!("the first request: {} ({})", f.kind, f.detail));
    }
    let start = Instant::now();
    let mut uploads = JoinSet::new();
    for i in 0..o.burst {
        let (target, image) = (target.clone(), images[i % images.len()].clone());
        uploads.spawn(async move {
            let r = target.send(std::slice::from_ref(&image)).await;
            (start.elapsed(), r)
        });
    }
    let mut latencies_s = Vec::with_capacity(o.burst);
    let mut failed = 0;
    let mut first_error = None;
    while let Some(done) = uploads.join_next().await {
        match done {
            Ok((at, Ok(()))) => latencies_s.push(at.as_secs_f64()),
            Ok((_, Err(f))) => {
                failed += 1;
                first_error.get_or_insert(format!("{} ({})", f.kind, f.detail));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(format!("upload task: {e}"));
            }
        }
    }
    let total_s = start.elapsed().as_secs_f64();
    latencies_s.sort_by(f64::total_cmp);
    Run {
        http,
        loss: 0.0,
        run: 0,
        total_s,
        latencies_s,
        failed,
        first_error,
        link: LinkCount::default(),
    }
}
