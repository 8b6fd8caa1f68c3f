//! `glimpse-node classify` as a user runs it: a real process, real files (issue 2's acceptance).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_glimpse-node");

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// Peak resident set size of the child (ru_maxrss from wait4), in KiB.
    max_rss_kib: i64,
    elapsed: Duration,
}

/// Runs the binary and reaps it with wait4(2), which reports the peak RSS of exactly this
/// child (the kernel's own accounting: nothing the child says about itself).
fn run(args: &[&str]) -> Run {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn glimpse-node");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: zeroed rusage is a valid value for the out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own un-reaped child; both pointers are valid for the call.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4 failed");
    let elapsed = started.elapsed();
    // The child is reaped; `Child` must not wait on it again (dropping it does not).
    std::mem::forget(child);
    let code = if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else {
        None
    };
    Run {
        code,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
        max_rss_kib: usage.ru_maxrss,
        elapsed,
    }
}

fn write_jpeg(path: &Path) {
    let img = image::RgbImage::from_fn(320, 240, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    img.save_with_format(path, image::ImageFormat::Jpeg)
        .expect("write jpeg");
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A few-KB PNG that claims 50000×50000 RGB pixels (7.5 GB decoded): a decompression bomb.
/// Its zlib stream holds only the first 4 KiB of zeros, which is all an attacker needs to send.
fn write_png_bomb(path: &Path) {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, RGB, deflate, no filter, no interlace
    png_chunk(&mut png, b"IHDR", &ihdr);
    let mut zlib = vec![0x78, 0x01];
    let block = 4096u16;
    zlib.push(0); // stored block, not final
    zlib.extend_from_slice(&block.to_le_bytes());
    zlib.extend_from_slice(&(!block).to_le_bytes());
    zlib.extend(std::iter::repeat_n(0u8, usize::from(block)));
    png_chunk(&mut png, b"IDAT", &zlib);
    png_chunk(&mut png, b"IEND", &[]);
    assert!(png.len() < 8 * 1024);
    std::fs::write(path, png).expect("write png");
}

#[test]
fn random_weights_json_prints_five_entries_per_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jpg = dir.path().join("gradient.jpg");
    write_jpeg(&jpg);
    let r = run(&[
        "classify",
        "--weights",
        "random",
        "--json",
        jpg.to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("stdout is JSON");
    let entries = v.as_array().expect("array");
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e["file"], jpg.to_str().expect("utf8"));
    let top = e["top"].as_array().expect("top");
    assert_eq!(top.len(), 5);
    let mut last = f64::INFINITY;
    for t in top {
        let index = t["index"].as_u64().expect("index");
        assert!(index < 1000);
        assert!(!t["label"].as_str().expect("label").is_empty());
        let p = t["probability"].as_f64().expect("probability");
        assert!((0.0..=1.0).contains(&p) && p <= last);
        last = p;
    }
    for k in ["decode", "preprocess", "infer"] {
        assert!(e["timings_ms"][k].as_f64().expect(k) >= 0.0);
    }
    assert_eq!(
        e["trained"], false,
        "random weights must be marked untrained"
    );
}

#[test]
fn text_output_marks_untrained_weights_and_top_k_is_respected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jpg = dir.path().join("a.jpg");
    write_jpeg(&jpg);
    let r = run(&[
        "classify",
        "--weights",
        "random",
        "--top-k",
        "3",
        jpg.to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert!(r.stdout.contains("UNTRAINED"), "{}", r.stdout);
    // The fast path (flex with the fused operators) is the default.
    let header = r.stdout.lines().next().unwrap_or_default();
    assert!(header.ends_with("backend flex"), "{header}");
    let ranks = r
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .count();
    assert_eq!(ranks, 3, "{}", r.stdout);
}

#[test]
fn missing_weights_file_is_a_one_line_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jpg = dir.path().join("a.jpg");
    write_jpeg(&jpg);
    let r = run(&[
        "classify",
        "--weights",
        "/nonexistent",
        jpg.to_str().expect("utf8"),
    ]);
    assert_ne!(r.code, Some(0));
    assert!(r.code.is_some(), "must exit, not crash");
    assert_eq!(r.stderr.trim().lines().count(), 1, "stderr: {:?}", r.stderr);
    assert!(r.stderr.contains("nonexistent"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
}

#[test]
fn corrupt_pth_is_a_one_line_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jpg = dir.path().join("a.jpg");
    write_jpeg(&jpg);
    let pth = dir.path().join("corrupt.pth");
    // A zip signature followed by junk: looks like a torch file at first glance.
    let mut junk = b"PK\x03\x04".to_vec();
    junk.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    std::fs::write(&pth, junk).expect("write pth");
    let r = run(&[
        "classify",
        "--weights",
        pth.to_str().expect("utf8"),
        jpg.to_str().expect("utf8"),
    ]);
    assert_ne!(r.code, Some(0));
    assert!(r.code.is_some(), "must exit, not crash");
    assert_eq!(r.stderr.trim().lines().count(), 1, "stderr: {:?}", r.stderr);
    assert!(r.stdout.is_empty());
}

#[test]
fn png_bomb_is_refused_fast_in_little_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let png = dir.path().join("bomb.png");
    write_png_bomb(&png);
    let r = run(&[
        "classify",
        "--weights",
        "random",
        "--json",
        png.to_str().expect("utf8"),
    ]);
    // Nothing could be classified: non-zero exit, but an error entry, not a crash.
    assert_eq!(r.code, Some(1), "stderr: {}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    let e = &v.as_array().expect("array")[0];
    assert!(e["error"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
    assert!(e.get("top").is_none());
    // The refusal itself (read + header check) took under a second; the whole process, model
    // set-up included, gets a generous bound for a loaded machine.
    let refused_in = e["elapsed_ms"].as_f64().expect("elapsed_ms");
    assert!(refused_in < 1000.0, "took {refused_in} ms to refuse");
    assert!(r.elapsed < Duration::from_secs(60), "{:?}", r.elapsed);
    assert!(
        r.max_rss_kib < 200 * 1024,
        "peak RSS {} KiB (limit 200 MiB)",
        r.max_rss_kib
    );
}

#[test]
fn one_bad_file_among_good_ones_still_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.jpg");
    write_jpeg(&good);
    let bad = dir.path().join("bad.jpg");
    std::fs::write(&bad, b"not an image at all").expect("write");
    let missing = dir.path().join("missing.jpg");
    let r = run(&[
        "classify",
        "--weights",
        "random",
        "--json",
        good.to_str().expect("utf8"),
        bad.to_str().expect("utf8"),
        missing.to_str().expect("utf8"),
        good.to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    let entries = v.as_array().expect("array");
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0]["top"].as_array().map(Vec::len), Some(5));
    assert!(entries[1]["error"].is_string());
    assert!(entries[2]["error"].is_string());
    // The same image twice in one batch gets the same labels, and both went through one pass.
    let indices = |e: &serde_json::Value| -> Vec<u64> {
        e["top"]
            .as_array()
            .expect("top")
            .iter()
            .filter_map(|t| t["index"].as_u64())
            .collect()
    };
    assert_eq!(indices(&entries[0]), indices(&entries[3]));
    assert_eq!(entries[3]["timings_ms"]["batch_size"], 2);
}
