//! `glimpse-node classify`: label local image files, no network involved.
//!
//! Images are decoded and preprocessed one by one (each error stays with its file), then run
//! through the model in batches of up to `--max-batch` images, one forward pass per batch, on
//! `--lanes` lanes sharing `--threads` threads exactly as `serve` runs them (see
//! [`crate::lanes`]). Timings are reported per image: decode and preprocess are that image's
//! own; `infer` is its share of the forward pass (the batch's wall time divided by the batch
//! size), and the batch's size, total time, start and lane are reported next to it so nothing
//! is hidden (and a benchmark can tell how busy the lanes were).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use glimpse_model::{Backend, Classifier, DecodeLimits, ImageTensor, WeightsSource};
use parking_lot::Mutex;
use serde::Serialize;

use crate::config::DEFAULT_MAX_IMAGE_BYTES;
use crate::lanes::{LaneArgs, Parallelism, lane_pool, prepare_classifier};

/// `glimpse-node classify` flags.
#[derive(Debug, Clone, Args)]
pub struct ClassifyArgs {
    /// GoogLeNet weights: `auto` (cached torchvision file, downloaded once with a SHA-256
    /// check), a path to a `.pth`, or `random` (untrained: labels are meaningless).
    /// Default: auto.
    #[arg(long, env = "GLIMPSE_WEIGHTS", default_value = "auto")]
    pub weights: String,
    /// Compute backend: `flex` (burn-flex with Glimpse's fused channels-last operators, the
    /// fast path), `flex-stock` (burn-flex's own operators, the reference) or `ndarray`.
    /// Default: flex.
    #[arg(long, env = "GLIMPSE_BACKEND")]
    pub backend: Option<String>,
    /// How many labels to print per image. Default: 5.
    #[arg(long, env = "GLIMPSE_TOP_K", default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub top_k: u16,
    /// Print a JSON array (one object per image) instead of text. Default: text.
    #[arg(long, env = "GLIMPSE_JSON")]
    pub json: bool,
    /// Largest forward pass in images. Default: 8 (bounds memory with many files).
    #[arg(long, env = "GLIMPSE_MAX_BATCH", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub max_batch: u16,
    /// Largest accepted image file in bytes. Default: 33554432 (32 MiB).
    #[arg(long, env = "GLIMPSE_MAX_IMAGE_BYTES", default_value_t = DEFAULT_MAX_IMAGE_BYTES)]
    pub max_image_bytes: usize,
    /// `--threads` and `--lanes`.
    #[command(flatten)]
    pub lanes: LaneArgs,
    /// Image files (JPEG, PNG, GIF, WebP, BMP).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// One label in the output.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopEntry {
    /// ImageNet class index, 0..1000.
    pub index: usize,
    /// torchvision's name for the class.
    pub label: &'static str,
    /// Softmax probability over all 1000 classes.
    pub probability: f32,
}

/// Per-image timings in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimingsMs {
    /// Reading the file and decoding it to RGB.
    pub decode: f64,
    /// Resizing, cropping and normalizing the decoded image into the network's input tensor.
    pub preprocess: f64,
    /// This image's share of its batch's forward pass.
    pub infer: f64,
    /// Wall time of the whole forward pass this image was part of.
    pub batch_infer: f64,
    /// Images in that forward pass.
    pub batch_size: usize,
    /// When that forward pass started, from the start of classification (after the model
    /// loaded).
    pub batch_started: f64,
    /// The lane that ran it, from 0.
    pub lane: usize,
}

/// The result for one file: labels, or the error that stopped it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum FileResult {
    /// The file was classified.
    Ok {
        /// The path as given on the command line.
        file: String,
        /// The `--top-k` most probable labels, best first.
        top: Vec<TopEntry>,
        /// Where the time went for this file.
        timings_ms: TimingsMs,
        /// Weights identity, e.g. "googlenet-1378be20" or "random-seed-0".
        weights: String,
        /// False for random weights: the labels are then meaningless.
        trained: bool,
    },
    /// The file could not be read, decoded or classified.
    Err {
        /// The path as given on the command line.
        file: String,
        /// Why, on one line.
        error: String,
        /// Time spent on the file before it failed.
        elapsed_ms: f64,
    },
}

impl FileResult {
    fn is_ok(&self) -> bool {
        matches!(self, FileResult::Ok { .. })
    }
}

/// Exit status when the model could not be loaded or the arguments are unusable.
pub const EXIT_MODEL: u8 = 2;
/// Exit status when no image could be classified.
pub const EXIT_NOTHING_CLASSIFIED: u8 = 1;

/// Runs the command, printing to stdout (results) and stderr (errors). Returns the exit status.
pub fn run(args: &ClassifyArgs) -> u8 {
    let parallelism = match args.lanes.parallelism() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("glimpse-node: error: {}", one_line(&e.to_string()));
            return EXIT_MODEL;
        }
    };
    let classifier = match load(args) {
        Ok(c) => prepare_classifier(c, parallelism.lanes()),
        Err(e) => {
            eprintln!("glimpse-node: error: {}", one_line(&e));
            return EXIT_MODEL;
        }
    };
    tracing::info!(
        threads = parallelism.threads(),
        lanes = parallelism.lanes(),
        threads_per_lane = ?parallelism.threads_per_lane(),
        "classifying"
    );
    let results = match classify_files(&classifier, args, parallelism) {
        Ok(results) => results,
        Err(e) => {
            eprintln!("glimpse-node: error: could not start the inference lanes: {e}");
            return EXIT_MODEL;
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let printed = if args.json {
        serde_json::to_writer_pretty(&mut out, &results)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        print_text(&mut out, &classifier, &results)
    };
    if let Err(e) = printed {
        eprintln!("glimpse-node: error: cannot write results: {e}");
        return EXIT_NOTHING_CLASSIFIED;
    }
    if results.iter().any(FileResult::is_ok) {
        0
    } else {
        EXIT_NOTHING_CLASSIFIED
    }
}

fn load(args: &ClassifyArgs) -> Result<Classifier, String> {
    let weights: WeightsSource = args
        .weights
        .parse()
        .map_err(|e| format!("--weights {}: {e}", args.weights))?;
    let backend: Backend = match &args.backend {
        Some(b) => b.parse().map_err(|e| format!("--backend {b}: {e}"))?,
        None => Backend::default(),
    };
    Classifier::load(&weights, backend).map_err(|e| format!("could not load the model: {e}"))
}

/// Errors are printed on one line: a multi-line message would break scripts that read stderr.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// An image decoded and preprocessed, waiting for its batch.
struct Ready {
    slot: usize,
    tensor: ImageTensor,
    decode: Duration,
    preprocess: Duration,
}

/// What stays of a [`Ready`] image while its tensor is in the forward pass.
struct Meta {
    slot: usize,
    decode: Duration,
    preprocess: Duration,
}

/// Why the lanes of `classify` could not start.
#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    /// The OS refused a lane's thread.
    #[error("{0}")]
    Spawn(#[source] std::io::Error),
    /// rayon could not build a lane's pool.
    #[error("{0}")]
    Pool(#[source] rayon::ThreadPoolBuildError),
}

/// Decodes, preprocesses and classifies every file; results come back in argument order.
///
/// This thread decodes; each lane thread runs whole batches on its own pool. At most one
/// batch per lane waits for a free lane, which bounds memory with many files.
// Over 80 lines on purpose: the classify command's pipeline (decode on a pool, batches through the lanes, results in input order) shares its channels and progress.
pub fn classify_files(
    classifier: &Classifier,
    args: &ClassifyArgs,
    parallelism: Parallelism,
) -> Result<Vec<FileResult>, LaneError> {
    let limits = DecodeLimits {
        max_bytes: args.max_image_bytes,
        ..DecodeLimits::default()
    };
    let max_batch = usize::from(args.max_batch).max(1);
    let results: Mutex<Vec<Option<FileResult>>> = Mutex::new(vec![None; args.images.len()]);
    let epoch = Instant::now();
    let (batch_tx, batch_rx) = mpsc::sync_channel::<Vec<Ready>>(parallelism.lanes());
    let batch_rx = Mutex::new(batch_rx);
    std::thread::scope(|scope| {
        let (up_tx, up_rx) = mpsc::channel();
        for (lane, threads) in parallelism.threads_per_lane().into_iter().enumerate() {
            let (batch_rx, results, up) = (&batch_rx, &results, up_tx.clone());
            let lane_thread = std::thread::Builder::new().name(format!("glimpse-lane{lane}-0"));
            let spawned = lane_thread.spawn_scoped(scope, move || {
                let pool = match lane_pool(lane, threads) {
                    Ok(pool) => {
                        let _ = up.send(Ok(()));
                        pool
                    }
                    Err(e) => {
                        let _ = up.send(Err(e));
                        return;
                    }
                };
                drop(up);
                loop {
                    let next = batch_rx.lock().recv();
                    let Ok(batch) = next else { break };
                    let done = pool.install(|| run_batch(classifier, args, batch, lane, epoch));
                    let mut results = results.lock();
                    for (slot, result) in done {
                        results[slot] = Some(result);
                    }
                }
            });
            if let Err(e) = spawned {
                return Err(LaneError::Spawn(e));
            }
        }
        drop(up_tx);
        for _ in 0..parallelism.lanes() {
            match up_rx.recv() {
                Ok(Ok(())) => {}
                // Dropping the sender on return closes the queue: the lanes already up exit.
                Ok(Err(e)) => return Err(LaneError::Pool(e)),
                Err(_) => break,
            }
        }
        let mut pending: Vec<Ready> = Vec::with_capacity(max_batch);
        for (slot, path) in args.images.iter().enumerate() {
            let started = Instant::now();
            match prepare_file(path, &limits) {
                Ok((tensor, decode, preprocess)) => {
                    pending.push(Ready {
                        slot,
                        tensor,
                        decode,
                        preprocess,
                    });
                    if pending.len() >= max_batch {
                        let full = std::mem::replace(&mut pending, Vec::with_capacity(max_batch));
                        if batch_tx.send(full).is_err() {
                            break;
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(file = %path.display(), %error, "image rejected");
                    results.lock()[slot] = Some(FileResult::Err {
                        file: display(path),
                        error: one_line(&error),
                        elapsed_ms: ms(started.elapsed()),
                    });
                }
            }
        }
        if !pending.is_empty() {
            let _ = batch_tx.send(pending);
        }
        drop(batch_tx);
        Ok(())
    })?;
    let results = results.into_inner();
    Ok(results
        .into_iter()
        .enumerate()
        .map(|(slot, r)| {
            r.unwrap_or_else(|| FileResult::Err {
                file: display(&args.images[slot]),
                error: "internal: image was never classified".into(),
                elapsed_ms: 0.0,
            })
        })
        .collect())
}

/// One forward pass over `pending`, on the calling lane: each image's slot and result.
fn run_batch(
    classifier: &Classifier,
    args: &ClassifyArgs,
    pending: Vec<Ready>,
    lane: usize,
    epoch: Instant,
) -> Vec<(usize, FileResult)> {
    let identity = classifier.identity();
    let mut tensors: Vec<ImageTensor> = Vec::with_capacity(pending.len());
    let mut batch: Vec<Meta> = Vec::with_capacity(pending.len());
    for ready in pending {
        tensors.push(ready.tensor);
        batch.push(Meta {
            slot: ready.slot,
            decode: ready.decode,
            preprocess: ready.preprocess,
        });
    }
    let started = Instant::now();
    let outcome = classifier.classify_batch(&tensors, usize::from(args.top_k));
    let batch_time = started.elapsed();
    drop(tensors);
    let size = batch.len();
    match outcome {
        Ok(all) if all.len() == size => batch
            .into_iter()
            .zip(all)
            .map(|(ready, preds)| {
                let result = FileResult::Ok {
                    file: display(&args.images[ready.slot]),
                    top: preds
                        .into_iter()
                        .map(|p| TopEntry {
                            index: p.index,
                            label: p.label,
                            probability: p.probability,
                        })
                        .collect(),
                    timings_ms: TimingsMs {
                        decode: ms(ready.decode),
                        preprocess: ms(ready.preprocess),
                        infer: ms(batch_time) / size as f64,
                        batch_infer: ms(batch_time),
                        batch_size: size,
                        batch_started: ms(started.saturating_duration_since(epoch)),
                        lane,
                    },
                    weights: identity.name.clone(),
                    trained: identity.trained,
                };
                (ready.slot, result)
            })
            .collect(),
        other => {
            let error = match other {
                Ok(all) => format!("model returned {} answers for {size} images", all.len()),
                Err(e) => format!("inference failed: {e}"),
            };
            batch
                .into_iter()
                .map(|ready| {
                    let result = FileResult::Err {
                        file: display(&args.images[ready.slot]),
                        error: one_line(&error),
                        elapsed_ms: ms(ready.decode + ready.preprocess + batch_time),
                    };
                    (ready.slot, result)
                })
                .collect()
        }
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Reads, decodes and preprocesses one file, refusing oversized files before reading them.
fn prepare_file(
    path: &Path,
    limits: &DecodeLimits,
) -> Result<(ImageTensor, Duration, Duration), String> {
    let started = Instant::now();
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if len > limits.max_bytes as u64 {
        return Err(format!(
            "file is {len} bytes, more than the limit of {} (--max-image-bytes)",
            limits.max_bytes
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let rgb = glimpse_model::decode(&bytes, limits).map_err(|e| e.to_string())?;
    drop(bytes);
    let decode = started.elapsed();
    let t = Instant::now();
    let tensor = glimpse_model::preprocess(&rgb);
    Ok((tensor, decode, t.elapsed()))
}

fn print_text(
    out: &mut impl Write,
    classifier: &Classifier,
    results: &[FileResult],
) -> std::io::Result<()> {
    let identity = classifier.identity();
    writeln!(
        out,
        "model: googlenet, weights {}, backend {}",
        identity.name,
        classifier.backend()
    )?;
    if !identity.trained {
        writeln!(
            out,
            "WARNING: UNTRAINED (random) weights: the labels below are meaningless"
        )?;
    }
    for result in results {
        match result {
            FileResult::Ok {
                file,
                top,
                timings_ms: t,
                trained,
                ..
            } => {
                let tag = if *trained { "" } else { "  [untrained]" };
                writeln!(
                    out,
                    "{file}{tag}\n  decode {:.1} ms, preprocess {:.1} ms, infer {:.1} ms \
                     (share of a {:.1} ms forward pass over {} image(s))",
                    t.decode, t.preprocess, t.infer, t.batch_infer, t.batch_size
                )?;
                for (rank, entry) in top.iter().enumerate() {
                    writeln!(
                        out,
                        "  {:>2}. {:6.2}%  {} (class {})",
                        rank + 1,
                        entry.probability * 100.0,
                        entry.label,
                        entry.index
                    )?;
                }
            }
            FileResult::Err { file, error, .. } => writeln!(out, "{file}\n  error: {error}")?,
        }
    }
    Ok(())
}
