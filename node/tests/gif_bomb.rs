//! The security issue's acceptance, with real processes: 16 copies of the 62-byte GIF that
//! declares a 16000×4000 screen, in one burst, to two `glimpse-node serve` processes running
//! GoogLeNet (random weights, real decoding) under a decode budget.
//!
//! Each copy decodes to a 256 MB RGBA canvas (~262 MB with the decoder's rows and slack, as
//! the probe estimates). A 512 MiB budget holds two at a time per node; the node's peak
//! resident memory must stay under the budget plus 300 MB. Every copy is answered exactly
//! once and decoded exactly once: the images that wait in a node's budget queue have not
//! started, so the front-end never runs them on the other node as well.
//!
//! Random weights give a *result* for every copy (five meaningless labels), not an error:
//! the GIF is well-formed, 16000×4000 is exactly the 64-Mpx cap and within 16384 per side,
//! and its decode (~262 MB) fits the budget.

use std::time::{Duration, Instant};

use common::{Cluster, NodeProc, gif_bomb, localhost_any_port, wait_node_ready};

use crate::common;

const BUDGET: u64 = 512 << 20;
const HEADROOM: u64 = 300_000_000;

/// The `decoded` count a node logs in its final stats line on shutdown.
fn logged_decoded(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("node stopped"))
        .find_map(|l| {
            let rest = &l[l.find("decoded: ")? + "decoded: ".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no final stats in the node log:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_gif_bombs_stay_within_the_decode_budget_and_decode_once_each() {
    let bomb = gif_bomb();
    assert_eq!(bomb.len(), 62, "the issue's GIF is 62 bytes");
    // It really is a 16000×4000 image to the decoder (no budget in this test process).
    let probed =
        glimpse_model::probe(&bomb, &glimpse_model::DecodeLimits::default()).expect("probe");
    assert_eq!((probed.width, probed.height), (16000, 4000));
    let decoded = image::load_from_memory(&bomb).expect("the image crate decodes it");
    assert_eq!((decoded.width(), decoded.height()), (16000, 4000));
    drop(decoded);

    let cluster = Cluster::new();
    let budget = BUDGET.to_string();
    let extra = ["--decode-budget-bytes", budget.as_str()];
    let mut nodes: Vec<NodeProc> = ["a", "b"]
        .iter()
        .map(|n| NodeProc::spawn_googlenet(&cluster, n, localhost_any_port(), &extra))
        .collect();
    let d = cluster.dispatcher(&[("a", nodes[0].addr), ("b", nodes[1].addr)]);
    for n in ["a", "b"] {
        assert!(wait_node_ready(&d, n, Duration::from_secs(60)).await, "{n}");
    }
    let idle_rss: Vec<u64> = nodes.iter().map(|n| n.status_bytes("VmHWM")).collect();

    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (d, bomb) = (d.clone(), bomb.clone());
        tasks.push(tokio::spawn(
            async move { d.classify(bomb, 5, |_| {}).await },
        ));
    }
    let mut answered = 0;
    for task in tasks {
        let c = tokio::time::timeout(Duration::from_secs(240), task)
            .await
            .expect("answered in time")
            .expect("task")
            .expect("random weights answer a well-formed GIF within the budget");
        assert_eq!(c.answer.top.len(), 5);
        answered += 1;
    }
    let wall = t.elapsed();
    assert_eq!(answered, 16);

    let hwm: Vec<u64> = nodes.iter().map(|n| n.status_bytes("VmHWM")).collect();
    let stats = d.stats();
    for n in &mut nodes {
        n.signal(libc::SIGTERM);
        assert!(n.wait_exit(Duration::from_secs(60)).success());
    }
    let decoded: Vec<u64> = nodes
        .iter()
        .map(|n| logged_decoded(&n.log_text()))
        .collect();
    eprintln!(
        "16 GIF bombs in {wall:?}; node VmHWM {:?} MB (idle {:?} MB, budget {} MB); \
         decoded {decoded:?}; dispatch {stats:?}",
        hwm.iter().map(|b| b / 1_000_000).collect::<Vec<_>>(),
        idle_rss.iter().map(|b| b / 1_000_000).collect::<Vec<_>>(),
        BUDGET / 1_000_000,
    );
    for (n, peak) in nodes.iter().zip(&hwm) {
        assert!(
            *peak < BUDGET + HEADROOM,
            "node {} peaked at {peak} bytes, over the budget plus 300 MB",
            n.name
        );
    }
    assert_eq!(
        decoded.iter().sum::<u64>(),
        16,
        "each copy decoded exactly once"
    );
    assert_eq!(stats.succeeded, 16, "{stats:?}");
    // Any copy sent twice was only ever *waiting* at the first node, and was cancelled
    // there before it started (so it was not decoded twice: see `decoded`).
    assert_eq!(stats.retries, stats.unstarted_cancels, "{stats:?}");
}
