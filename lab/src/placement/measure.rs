//! The runs with real processes: for each run and placement, a fresh fleet and front-end,
//! open-loop load through the JSON API, then what the front-end placed where.

use std::net::SocketAddr;
use std::time::Duration;

use glimpse_transport::CongestionControl;
use glimpse_transport::dispatcher::Placement;

use super::fleet::{NodeSeen, PlacementOptions, Run};
use super::report::write_report;
use super::twin::simulate_twin;
use crate::harness::LabError;
use crate::harness::procs::{
    Certs, FRONTEND_LISTEN, NodeSpec, free_udp_port, make_certs, site_args, wait_frontend,
};
use crate::harness::testbed::Testbed;
use crate::load::protocol::{HttpVersion, Protocol, TargetOptions};
use crate::load::tls::Trust;
use crate::load::{LoadOptions, LoadPlan, run_load};

/// Most requests waiting at once before arrivals are skipped: far above what an 80% load
/// keeps waiting, so a skip means the fleet did not keep up.
const MAX_OUTSTANDING: usize = 4096;

/// Runs every placement `o.runs` times (alternating), simulates the twin, writes the report
/// into `o.out` and returns the measured runs.
pub async fn run_placement(o: &PlacementOptions) -> Result<Vec<Run>, LabError> {
    check(o)?;
    o.bins
        .require(&["glimpse-certs", "glimpse-node", "glimpse"])?;
    std::fs::create_dir_all(&o.out)?;
    let names: Vec<String> = (1..=o.fleet.len()).map(|i| format!("n{i}")).collect();
    let certs = make_certs(&o.bins, &o.out.join("certs"), &names).await?;
    let mut runs = Vec::new();
    for run in 0..o.runs {
        for &placement in &o.placements {
            let r = one_run(o, &certs, placement, run).await?;
            eprintln!(
                "{placement} run {}: {} of {} answered, {:.1} images/s, p50 {:.0} ms, p99 {:.0} ms, slow share {:.3}{}",
                run + 1,
                r.ok,
                r.sent,
                r.images_per_s,
                r.p50_ms,
                r.p99_ms,
                r.slow_share(),
                r.first_error
                    .as_deref()
                    .map(|e| format!(", first error: {e}"))
                    .unwrap_or_default()
            );
            runs.push(r);
        }
    }
    let twin = simulate_twin(o)?;
    write_report(o, &runs, &twin)?;
    Ok(runs)
}

/// Refuses options no run could use.
fn check(o: &PlacementOptions) -> Result<(), LabError> {
    let usage = |m: String| Err(LabError::Usage(m));
    if o.fleet.len() < 2 {
        return usage("placement needs at least 2 nodes".into());
    }
    if o.images.is_empty() || o.runs == 0 || o.placements.is_empty() {
        return usage("placement needs images, runs ≥ 1 and at least one placement".into());
    }
    if !(o.rate > 0.0 && o.rate.is_finite()) {
        return usage(format!("offered rate {}: give a positive rate", o.rate));
    }
    if o.duration.is_zero() || o.capacity == 0 {
        return usage("placement needs a measurement window and a capacity ≥ 1".into());
    }
    Ok(())
}

/// One run: the fleet, the front-end with `--placement`, the load, then `/api/v1/nodes`.
async fn one_run(
    o: &PlacementOptions,
    certs: &Certs,
    placement: Placement,
    run: usize,
) -> Result<Run, LabError> {
    let log_dir = o.out.join("logs").join(format!("{placement}-run{run}"));
    // Owns every process below; an early return tears them down in its `Drop`.
    let mut bed = Testbed::new(&log_dir);
    let result = measure(o, certs, placement, run, &mut bed).await;
    bed.close().await;
    result
}

async fn measure(
    o: &PlacementOptions,
    certs: &Certs,
    placement: Placement,
    run: usize,
    bed: &mut Testbed,
) -> Result<Run, LabError> {
    let node_bin = o.bins.path("glimpse-node");
    let mut nodes = Vec::new();
    for i in 0..o.fleet.len() {
        let name = format!("n{}", i + 1);
        let listen: SocketAddr = ([127, 0, 0, 1], free_udp_port()?).into();
        let (model, service_ms, extra) = o.fleet.node_args(i);
        let spec = NodeSpec {
            name: name.clone(),
            listen,
            model,
            service_ms,
            capacity: o.capacity,
            fail_rate: 0.0,
            stall_rate: 0.0,
            extra_delay_ms: 0,
            extra,
        };
        bed.spawn_worker(&name, node_bin.clone(), spec.args(certs))?;
        nodes.push((name, listen));
    }
    let extra = ["--placement".to_string(), placement.to_string()];
    let site = bed.spawn_frontend(
        "glimpse",
        &o.bins.path("glimpse"),
        &site_args(certs, FRONTEND_LISTEN, &nodes, &extra),
    )?;
    // GoogLeNet nodes build their weights before they listen: allow for it.
    let base = wait_frontend(site, nodes.len(), Duration::from_secs(180)).await?;
    let load = LoadOptions {
        target: TargetOptions {
            url: base.clone(),
            protocol: Protocol::Json,
            http: HttpVersion::Http1,
            congestion: CongestionControl::Cubic,
            trust: Trust::Insecure,
            api_key: None,
            timeout: o.timeout,
        },
        images: o.images.clone(),
        batch: 1,
        plan: LoadPlan::Rate(vec![o.rate]),
        max_outstanding: MAX_OUTSTANDING,
        warmup: o.warmup,
        duration: o.duration,
        // The same arrivals for every placement of this run.
        seed: o.seed.wrapping_add(run as u64),
    };
    let report = run_load(&load, |_| {})
        .await
        .map_err(|e| LabError::Driver(e.to_string()))?;
    let step = report
        .steps
        .first()
        .ok_or_else(|| LabError::Driver("the load ran no step".into()))?;
    let seen = nodes_seen(o, &base).await?;
    Ok(Run {
        placement,
        run,
        sent: step.sent,
        ok: step.ok,
        failed: step.error_total(),
        skipped: step.skipped,
        images_per_s: step.images_per_s,
        p50_ms: step.latency_ms.p50,
        p95_ms: step.latency_ms.p95,
        p99_ms: step.latency_ms.p99,
        max_ms: step.latency_ms.max,
        nodes: seen,
        first_error: step.error_samples.first().cloned(),
    })
}

/// Each node as `/api/v1/nodes` shows it, in the fleet's order.
async fn nodes_seen(o: &PlacementOptions, base: &str) -> Result<Vec<NodeSeen>, LabError> {
    let client = crate::harness::driver::https_client(Duration::from_secs(10))?;
    let v: serde_json::Value = client
        .get(format!("{base}/api/v1/nodes"))
        .send()
        .await
        .map_err(|e| LabError::Driver(format!("/api/v1/nodes: {e}")))?
        .json()
        .await
        .map_err(|e| LabError::Driver(format!("/api/v1/nodes: {e}")))?;
    let list = v
        .as_array()
        .or_else(|| v["nodes"].as_array())
        .ok_or_else(|| LabError::Driver(format!("/api/v1/nodes is not a list: {v}")))?;
    (0..o.fleet.len())
        .map(|i| {
            let name = format!("n{}", i + 1);
            let n = list
                .iter()
                .find(|n| n["name"].as_str() == Some(name.as_str()))
                .ok_or_else(|| LabError::Driver(format!("/api/v1/nodes does not list {name}")))?;
            Ok(NodeSeen {
                slowdown: o.fleet.slowdown(i),
                served: n["served"].as_u64().unwrap_or(0),
                placement_share: n["placement_share"].as_f64().unwrap_or(f64::NAN),
                service_ms: n["service_ms"].as_f64(),
                name,
            })
        })
        .collect()
}
