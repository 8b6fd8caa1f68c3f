//! `--weights auto`: the official weights from the user's cache, downloaded once.
//!
//! Layout of the cache directory (`$XDG_CACHE_HOME/glimpse`, usually `~/.cache/glimpse`):
//! - `googlenet-1378be20.pth`: torchvision's file, byte for byte, SHA-256 checked;
//! - `googlenet-1378be20.pth.sha256`: its full digest, written once it was checked;
//! - `googlenet-1378be20.folded.bpk`: the BatchNorm-folded network in Burn's native format,
//!   written after the first successful load, so later starts skip pickle parsing and folding.
//!
//! Every file is written to a temporary name in the same directory and renamed into place,
//! so a crash or a concurrent start never leaves a half-written file under the final name.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::ModelError;
use crate::googlenet::weights::{WEIGHTS_FILE, WEIGHTS_SHA256_PREFIX};

/// The default cache directory: `dirs::cache_dir()/glimpse` (honours `XDG_CACHE_HOME`).
pub fn default_cache_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("glimpse"))
}

pub(crate) fn pth_path(dir: &Path) -> PathBuf {
    dir.join(WEIGHTS_FILE)
}

pub(crate) fn digest_path(dir: &Path) -> PathBuf {
    dir.join(format!("{WEIGHTS_FILE}.sha256"))
}

pub(crate) fn native_path(dir: &Path) -> PathBuf {
    dir.join(WEIGHTS_FILE.replace(".pth", ".folded.bpk"))
}

/// A temporary sibling of `path`, unique to this process.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// SHA-256 of a file, hex.
pub(crate) fn sha256_file(path: &Path) -> io::Result<String> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Returns the cached `.pth` and its verified digest, downloading it first if needed.
pub(crate) fn ensure_pth(
    dir: &Path,
    url: &str,
    download: bool,
    progress: bool,
) -> Result<(PathBuf, String), ModelError> {
    let pth = pth_path(dir);
    if pth.exists() {
        let digest = sha256_file(&pth).map_err(|source| ModelError::Cache {
            path: pth.clone(),
            source,
        })?;
        if digest.starts_with(WEIGHTS_SHA256_PREFIX) {
            write_digest(dir, &digest);
            return Ok((pth, digest));
        }
        tracing::warn!(path = %pth.display(), %digest, "cached weights fail the SHA-256 check; downloading again");
    }
    if !download {
        return Err(unavailable(&pth, url, "downloading is disabled"));
    }
    fs::create_dir_all(dir).map_err(|source| ModelError::Cache {
        path: dir.to_path_buf(),
        source,
    })?;
    let tmp = temp_path(&pth);
    let result = download_to(url, &tmp, progress);
    let digest = match result {
        Ok(digest) => digest,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(match e {
                DownloadError::Network(reason) => unavailable(&pth, url, &reason),
                DownloadError::Io(source) => ModelError::Cache { path: tmp, source },
            });
        }
    };
    if !digest.starts_with(WEIGHTS_SHA256_PREFIX) {
        let _ = fs::remove_file(&tmp);
        return Err(ModelError::Checksum {
            url: url.to_string(),
            expected_prefix: WEIGHTS_SHA256_PREFIX.to_string(),
            actual: digest,
        });
    }
    fs::rename(&tmp, &pth).map_err(|source| ModelError::Cache {
        path: pth.clone(),
        source,
    })?;
    write_digest(dir, &digest);
    tracing::info!(path = %pth.display(), %digest, "downloaded GoogLeNet weights");
    Ok((pth, digest))
}

/// The digest recorded beside a verified `.pth`, if any (used when starting from the
/// Burn-native copy, which is only ever written from a verified file).
pub(crate) fn read_digest(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(digest_path(dir)).ok()?;
    let digest = text.trim();
    (digest.len() == 64
        && digest.starts_with(WEIGHTS_SHA256_PREFIX)
        && digest.bytes().all(|b| b.is_ascii_hexdigit()))
    .then(|| digest.to_string())
}

fn write_digest(dir: &Path, digest: &str) {
    let path = digest_path(dir);
    if read_digest(dir).as_deref() == Some(digest) {
        return;
    }
    let tmp = temp_path(&path);
    let written = fs::write(&tmp, format!("{digest}\n")).and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        tracing::warn!(path = %path.display(), error = %e, "cannot record the weights digest");
    }
}

fn unavailable(pth: &Path, url: &str, reason: &str) -> ModelError {
    ModelError::WeightsUnavailable {
        cached: pth.to_path_buf(),
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

enum DownloadError {
    Network(String),
    Io(io::Error),
}

/// Streams `url` into `dest`, hashing as it goes; returns the hex SHA-256.
fn download_to(url: &str, dest: &Path, progress: bool) -> Result<String, DownloadError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_body(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .map_err(|e| DownloadError::Network(e.to_string()))?;
    let total = response.body().content_length();
    let bar = if progress {
        let bar = indicatif::ProgressBar::with_draw_target(
            total,
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("downloading {WEIGHTS_FILE}"));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut reader = response.body_mut().as_reader();
    let mut file = File::create(dest).map_err(DownloadError::Io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| DownloadError::Network(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(DownloadError::Io)?;
        bar.inc(n as u64);
    }
    file.sync_all().map_err(DownloadError::Io)?;
    bar.finish_and_clear();
    Ok(hex(&hasher.finalize()))
}
