//! The catalogue of experiments: which experiments each sweep (`workers`, `loss`, `delay`,
//! `failure`) runs, at which points, with how many images, explained how.
//!
//! It is a table, `CATALOGUE`, one row per experiment, so that adding or checking an
//! experiment means reading one row rather than following a `match`. A row holds only
//! constants; what depends on the command line (`--quick`, `--images`, `--net`, the service
//! time) is resolved by `Row::experiment`, and `--only` / `--points` by [`experiments`].

use std::time::Duration;

use super::LabError;
use super::net::NetMode;
use super::sweep::{ClusterSpec, Experiment, LabOptions, Point};

/// One experiment of a sweep, as constants.
struct Row {
    /// The sweep it belongs to (`glimpse-lab sweep NAME`).
    sweep: &'static str,
    /// Its id: the `--only` name and the stem of its output files.
    id: &'static str,
    title: &'static str,
    x_label: &'static str,
    /// The parameter of each point of a full sweep, in the unit `point` expects.
    full: &'static [f64],
    /// The same with `--quick`.
    quick: &'static [f64],
    /// Turns a parameter into the point's x value, label and cluster.
    point: fn(f64) -> Point,
    images: Images,
    method: Method,
}

/// Images per run of an experiment.
enum Images {
    /// `--images` (48, or 24 with `--quick`, by default).
    Option,
    /// Half of `--images`, at least 6: every point of the seed-loss experiments loses
    /// exchanges that cost a multi-second timeout each.
    HalfAtLeast6,
    /// A fixed count, for experiments whose answers are held for seconds.
    Fixed { full: usize, quick: usize },
}

/// The text explaining how an experiment maps onto both systems, printed under its table.
/// `{service_ms}` is replaced by the service time; [`experiments`] appends the network
/// mode's own sentence.
enum Method {
    Same(&'static str),
    /// Experiments that impair the links say how each `--net` mode does it.
    ByNet {
        relay: &'static str,
        netns: &'static str,
    },
}

/// Every experiment, grouped by sweep in the order the sweeps run them.
static CATALOGUE: &[Row] = &[
    Row {
        sweep: "workers",
        id: "workers",
        title: "Throughput vs number of workers",
        x_label: "workers",
        full: &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        quick: &[1.0, 2.0, 4.0, 8.0],
        point: workers_point,
        images: Images::Option,
        method: Method::Same(
            "Each worker serves one image at a time ({service_ms} ms service time with the synthetic model); no impairment.",
        ),
    },
    Row {
        sweep: "loss",
        id: "loss-seed",
        title: "Throughput vs request/answer loss (seed semantics)",
        x_label: "loss probability",
        full: &[0.0, 0.4, 0.8],
        quick: &[0.0, 0.4, 0.8],
        point: exchange_loss_point,
        images: Images::HalfAtLeast6,
        method: Method::Same(
            "A whole exchange is lost with probability p. Baseline: the worker drops each answer with probability p (the seed's semantics exactly). Glimpse: `glimpse-node --stall-rate` is sticky (a stalled node never answers again), so instead each link blackholes both directions for each 1 s slot with probability p; requests caught in a dark slot are recovered by the front-end's attempt timeout and a resend to another node. Recovery is by timeout and resend in both: the baseline's fixed 5 s, Glimpse's adaptive attempt timeout.",
        ),
    },
    Row {
        sweep: "loss",
        id: "loss-packet",
        title: "Throughput vs packet loss on every link",
        x_label: "packet loss (%)",
        full: &[0.0, 1.0, 5.0, 10.0, 20.0, 40.0, 80.0],
        quick: &[0.0, 5.0, 20.0],
        point: packet_loss_point,
        images: Images::HalfAtLeast6,
        method: Method::ByNet {
            relay: "Random loss in both directions of every front-end↔worker link, applied by one userspace relay per link after the QUIC connections are up. The baseline's TCP links cannot lose packets in userspace, so its column is empty except at 0%; rerun with `--net netns` for TCP loss.",
            netns: "Random loss in both directions of every front-end↔worker link, applied to IP packets by the worker's TUN link once the connections are up (QUIC handshakes / TCP connects done), for both systems alike.",
        },
    },
    Row {
        sweep: "delay",
        id: "delay-seed",
        title: "Throughput vs answer delay (seed semantics)",
        x_label: "answer held (s)",
        full: &[0.0, 5000.0, 10_000.0],
        quick: &[0.0, 5000.0, 10_000.0],
        point: answer_delay_point,
        images: Images::Fixed { full: 12, quick: 6 },
        method: Method::Same(
            "Each answer is held D seconds by the worker (Glimpse: `glimpse-node --extra-delay-ms`; baseline worker: same flag). The baseline's fixed 5 s timeout fires first for D ≥ 5 s, so it resends and the resent copy occupies the worker again.",
        ),
    },
    Row {
        sweep: "delay",
        id: "delay-rtt",
        title: "Throughput vs link round-trip time",
        x_label: "RTT (ms)",
        full: &[0.0, 50.0, 200.0, 1000.0],
        quick: &[0.0, 200.0],
        point: rtt_point,
        images: Images::Option,
        method: Method::ByNet {
            relay: "RTT/2 one-way delay in each direction of every link: UDP relay for Glimpse, TCP delay proxy for the baseline.",
            netns: "RTT/2 one-way delay in each direction of every link, applied to IP packets by the worker's TUN link for both systems.",
        },
    },
    Row {
        sweep: "failure",
        id: "failure-seed",
        title: "Throughput vs worker failure rate (seed semantics)",
        x_label: "failure probability",
        full: &[0.0, 0.4, 0.8],
        quick: &[0.0, 0.4, 0.8],
        point: fail_rate_point,
        images: Images::Option,
        method: Method::Same(
            "Each request to worker 1 kills that worker with probability p (`--fail-rate p` on one worker only, so at most one of three dies, as in the seed); it stays dead for the rest of the run.",
        ),
    },
    Row {
        sweep: "failure",
        id: "failure-cycles",
        title: "Throughput under repeated crash/restart cycles",
        x_label: "crash interval (ms, 0 = none)",
        // Not sorted: the order of the full sweep's table and plot.
        full: &[0.0, 2000.0, 1000.0, 500.0],
        quick: &[0.0, 1000.0],
        point: crash_cycle_point,
        images: Images::Option,
        method: Method::Same(
            "Every interval one worker (round robin) is SIGKILLed and restarted 500 ms later on the same port.",
        ),
    },
];

fn point(x: f64, label: impl Into<String>, cluster: ClusterSpec) -> Point {
    Point {
        x,
        label: label.into(),
        cluster,
    }
}

/// `w` workers, nothing impaired.
fn workers_point(w: f64) -> Point {
    let w = w as usize;
    point(w as f64, w.to_string(), ClusterSpec::plain(w))
}

/// Three workers; each request/answer exchange lost with probability `p`.
fn exchange_loss_point(p: f64) -> Point {
    let mut c = ClusterSpec::plain(3);
    c.exchange_loss = p;
    point(p, format!("{p}"), c)
}

/// Three workers; `p` % random packet loss on every link.
fn packet_loss_point(p: f64) -> Point {
    let mut c = ClusterSpec::plain(3);
    if p > 0.0 {
        c.link = Some(format!("loss={p}%"));
    }
    point(p, format!("{p}%"), c)
}

/// Three workers; each answer held `ms` milliseconds (x and label in seconds).
fn answer_delay_point(ms: f64) -> Point {
    let ms = ms as u64;
    let mut c = ClusterSpec::plain(3);
    c.extra_delay_ms = ms;
    point(ms as f64 / 1000.0, format!("{} s", ms / 1000), c)
}

/// Three workers; `rtt` ms round trip, half of it in each direction of every link.
fn rtt_point(rtt: f64) -> Point {
    let rtt = rtt as u64;
    let mut c = ClusterSpec::plain(3);
    if rtt > 0 {
        c.link = Some(format!("delay={}ms", rtt / 2));
    }
    point(rtt as f64, format!("{rtt} ms"), c)
}

/// Three workers; each request kills the first with probability `p`.
fn fail_rate_point(p: f64) -> Point {
    let mut c = ClusterSpec::plain(3);
    c.fail_rate_one = p;
    point(p, format!("{p}"), c)
}

/// Three workers; one of them crashes every `ms` milliseconds (0 = never).
fn crash_cycle_point(ms: f64) -> Point {
    let ms = ms as u64;
    let mut c = ClusterSpec::plain(3);
    if ms > 0 {
        c.crash_every = Some(Duration::from_millis(ms));
    }
    let label = if ms == 0 {
        "none".to_string()
    } else {
        format!("every {ms} ms")
    };
    point(ms as f64, label, c)
}

impl Row {
    /// The experiment this row describes under the command line's options.
    fn experiment(&self, o: &LabOptions) -> Experiment {
        let params = if o.quick { self.quick } else { self.full };
        let images = match self.images {
            Images::Option => o.images,
            Images::HalfAtLeast6 => (o.images / 2).max(6),
            Images::Fixed { full, quick } => {
                if o.quick {
                    quick
                } else {
                    full
                }
            }
        };
        let method = match self.method {
            Method::Same(text) => text,
            Method::ByNet { relay, netns } => match o.net {
                NetMode::Relay => relay,
                NetMode::Netns => netns,
            },
        };
        Experiment {
            id: self.id.into(),
            title: self.title.into(),
            x_label: self.x_label.into(),
            points: params.iter().map(|&p| (self.point)(p)).collect(),
            images,
            method: method.replace("{service_ms}", &o.service_ms.to_string()),
        }
    }
}

/// The sweep names, in catalogue order.
fn sweeps() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for row in CATALOGUE {
        if !names.contains(&row.sweep) {
            names.push(row.sweep);
        }
    }
    names
}

/// The rows of one sweep; an unknown sweep is a usage error listing the known ones.
fn rows(sweep: &str) -> Result<Vec<&'static Row>, LabError> {
    let rows: Vec<&'static Row> = CATALOGUE.iter().filter(|r| r.sweep == sweep).collect();
    if rows.is_empty() {
        return Err(LabError::Usage(format!(
            "unknown sweep {sweep:?} ({})",
            sweeps().join(", ")
        )));
    }
    Ok(rows)
}

/// The experiments of a sweep (`workers`, `loss`, `delay`, `failure`), narrowed by
/// `--only` / `--points`, with the network mode stated in every method text.
pub fn experiments(sweep: &str, o: &LabOptions) -> Result<Vec<Experiment>, LabError> {
    let mut all: Vec<Experiment> = rows(sweep)?.iter().map(|r| r.experiment(o)).collect();
    if !o.only.is_empty() {
        let ids: Vec<String> = all.iter().map(|e| e.id.clone()).collect();
        if let Some(bad) = o.only.iter().find(|id| !ids.contains(id)) {
            return Err(LabError::Usage(format!(
                "--only {bad:?}: sweep {sweep} has experiments {}",
                ids.join(", ")
            )));
        }
        all.retain(|e| o.only.contains(&e.id));
    }
    if !o.points.is_empty() {
        for e in &mut all {
            e.points.retain(|p| {
                o.points
                    .iter()
                    .any(|q| *q == p.label || *q == p.x.to_string())
            });
        }
        all.retain(|e| !e.points.is_empty());
        if all.is_empty() {
            return Err(LabError::Usage(format!(
                "--points {}: no point of the selected experiments matches",
                o.points.join(",")
            )));
        }
    }
    for e in &mut all {
        e.method = format!("{} {}", e.method, o.net.describe());
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::harness::procs::Bins;
    use crate::harness::sweep::System;

    /// The options `glimpse-lab sweep` builds by default (48 images, 24 with `--quick`).
    fn options(quick: bool, net: NetMode) -> LabOptions {
        LabOptions {
            out: PathBuf::from("/nonexistent"),
            quick,
            model: "synthetic".into(),
            runs: 1,
            images: if quick { 24 } else { 48 },
            concurrency: 4,
            service_ms: 100,
            capacity: 1,
            bins: Bins {
                dir: PathBuf::from("/nonexistent"),
            },
            systems: vec![System::Glimpse, System::Baseline],
            site_extra: Vec::new(),
            request_timeout: Duration::from_secs(30),
            baseline_timeout: Duration::from_secs(5),
            client_attempts: 3,
            run_limit: Duration::from_secs(600),
            seed: 1,
            net,
            only: Vec::new(),
            points: Vec::new(),
        }
    }

    /// `(x, label)` of each point.
    type Points = Vec<(f64, String)>;

    /// `(id, images, points)` of every experiment of a sweep.
    fn shape(sweep: &str, o: &LabOptions) -> Vec<(String, usize, Points)> {
        experiments(sweep, o)
            .unwrap()
            .into_iter()
            .map(|e| {
                let pts = e.points.iter().map(|p| (p.x, p.label.clone())).collect();
                (e.id, e.images, pts)
            })
            .collect()
    }

    fn pts(xs: &[(f64, &str)]) -> Points {
        xs.iter().map(|(x, l)| (*x, l.to_string())).collect()
    }

    // Each sweep's experiments, images and points, full and `--quick`: a wrong row in the
    // catalogue shows up in one of these four.

    #[test]
    fn the_workers_sweep() {
        let full = options(false, NetMode::Relay);
        let quick = options(true, NetMode::Relay);
        let workers: Points = (1..=8).map(|w| (w as f64, w.to_string())).collect();
        assert_eq!(
            shape("workers", &full),
            vec![("workers".into(), 48, workers)]
        );
        assert_eq!(
            shape("workers", &quick),
            vec![(
                "workers".into(),
                24,
                pts(&[(1.0, "1"), (2.0, "2"), (4.0, "4"), (8.0, "8")])
            )]
        );
    }

    #[test]
    fn the_loss_sweep() {
        let full = options(false, NetMode::Relay);
        let quick = options(true, NetMode::Relay);
        let seed_loss = pts(&[(0.0, "0"), (0.4, "0.4"), (0.8, "0.8")]);
        assert_eq!(
            shape("loss", &full),
            vec![
                ("loss-seed".into(), 24, seed_loss.clone()),
                (
                    "loss-packet".into(),
                    24,
                    pts(&[
                        (0.0, "0%"),
                        (1.0, "1%"),
                        (5.0, "5%"),
                        (10.0, "10%"),
                        (20.0, "20%"),
                        (40.0, "40%"),
                        (80.0, "80%")
                    ])
                ),
            ]
        );
        assert_eq!(
            shape("loss", &quick),
            vec![
                ("loss-seed".into(), 12, seed_loss.clone()),
                (
                    "loss-packet".into(),
                    12,
                    pts(&[(0.0, "0%"), (5.0, "5%"), (20.0, "20%")])
                ),
            ]
        );
        // Half of --images, but never fewer than 6.
        let mut few = options(false, NetMode::Relay);
        few.images = 4;
        assert_eq!(shape("loss", &few)[0].1, 6);
    }

    #[test]
    fn the_delay_sweep() {
        let full = options(false, NetMode::Relay);
        let quick = options(true, NetMode::Relay);
        let holds = pts(&[(0.0, "0 s"), (5.0, "5 s"), (10.0, "10 s")]);
        assert_eq!(
            shape("delay", &full),
            vec![
                ("delay-seed".into(), 12, holds.clone()),
                (
                    "delay-rtt".into(),
                    48,
                    pts(&[
                        (0.0, "0 ms"),
                        (50.0, "50 ms"),
                        (200.0, "200 ms"),
                        (1000.0, "1000 ms")
                    ])
                ),
            ]
        );
        assert_eq!(
            shape("delay", &quick),
            vec![
                ("delay-seed".into(), 6, holds),
                (
                    "delay-rtt".into(),
                    24,
                    pts(&[(0.0, "0 ms"), (200.0, "200 ms")])
                ),
            ]
        );
    }

    #[test]
    fn the_failure_sweep() {
        let full = options(false, NetMode::Relay);
        let quick = options(true, NetMode::Relay);
        let seed_loss = pts(&[(0.0, "0"), (0.4, "0.4"), (0.8, "0.8")]);
        assert_eq!(
            shape("failure", &full),
            vec![
                ("failure-seed".into(), 48, seed_loss.clone()),
                (
                    "failure-cycles".into(),
                    48,
                    pts(&[
                        (0.0, "none"),
                        (2000.0, "every 2000 ms"),
                        (1000.0, "every 1000 ms"),
                        (500.0, "every 500 ms")
                    ])
                ),
            ]
        );
        assert_eq!(
            shape("failure", &quick),
            vec![
                ("failure-seed".into(), 24, seed_loss),
                (
                    "failure-cycles".into(),
                    24,
                    pts(&[(0.0, "none"), (1000.0, "every 1000 ms")])
                ),
            ]
        );
    }

    fn cluster(sweep: &str, id: &str, label: &str) -> ClusterSpec {
        let all = experiments(sweep, &options(false, NetMode::Relay)).unwrap();
        let e = all.into_iter().find(|e| e.id == id).unwrap();
        e.points
            .into_iter()
            .find(|p| p.label == label)
            .unwrap()
            .cluster
    }

    /// What each experiment varies in the cluster of a point.
    #[test]
    fn points_set_the_cluster() {
        assert_eq!(cluster("workers", "workers", "5").workers, 5);
        assert_eq!(cluster("loss", "loss-seed", "0.4").exchange_loss, 0.4);
        let packet = cluster("loss", "loss-packet", "5%");
        assert_eq!((packet.workers, packet.link), (3, Some("loss=5%".into())));
        assert_eq!(cluster("loss", "loss-packet", "0%").link, None);
        assert_eq!(cluster("delay", "delay-seed", "5 s").extra_delay_ms, 5000);
        assert_eq!(
            cluster("delay", "delay-rtt", "200 ms").link,
            Some("delay=100ms".into())
        );
        assert_eq!(cluster("delay", "delay-rtt", "0 ms").link, None);
        assert_eq!(cluster("failure", "failure-seed", "0.8").fail_rate_one, 0.8);
        assert_eq!(
            cluster("failure", "failure-cycles", "every 500 ms").crash_every,
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            cluster("failure", "failure-cycles", "none").crash_every,
            None
        );
    }

    /// Titles, axis labels and method texts: the service time and the network mode are
    /// filled in, and the two link experiments explain each mode differently.
    #[test]
    fn methods_name_the_network() {
        let relay = experiments("workers", &options(false, NetMode::Relay)).unwrap();
        assert_eq!(relay[0].title, "Throughput vs number of workers");
        assert_eq!(relay[0].x_label, "workers");
        assert!(relay[0].method.starts_with(
            "Each worker serves one image at a time (100 ms service time with the synthetic model); no impairment. Network `--net relay`"
        ));
        for (sweep, id) in [("loss", "loss-packet"), ("delay", "delay-rtt")] {
            let text = |net| {
                experiments(sweep, &options(false, net))
                    .unwrap()
                    .into_iter()
                    .find(|e| e.id == id)
                    .unwrap()
                    .method
            };
            let (r, n) = (text(NetMode::Relay), text(NetMode::Netns));
            assert!(
                r.contains("relay") && r.ends_with(NetMode::Relay.describe()),
                "{r}"
            );
            assert!(
                n.contains("TUN link") && n.ends_with(NetMode::Netns.describe()),
                "{n}"
            );
        }
    }

    /// Unknown sweeps, `--only` ids and `--points` are usage errors that list what exists.
    #[test]
    fn unknown_names_are_usage_errors() {
        let o = options(false, NetMode::Relay);
        let err = experiments("latency", &o).unwrap_err().to_string();
        assert_eq!(
            err,
            "usage: unknown sweep \"latency\" (workers, loss, delay, failure)"
        );
        let mut only = o.clone();
        only.only = vec!["loss-bits".into()];
        let err = experiments("loss", &only).unwrap_err().to_string();
        assert_eq!(
            err,
            "usage: --only \"loss-bits\": sweep loss has experiments loss-seed, loss-packet"
        );
        only.only = vec!["loss-packet".into()];
        only.points = vec!["5".into(), "20%".into()];
        assert_eq!(
            shape("loss", &only),
            vec![("loss-packet".into(), 24, pts(&[(5.0, "5%"), (20.0, "20%")]))]
        );
        only.points = vec!["3%".into()];
        assert!(experiments("loss", &only).is_err());
    }
}
