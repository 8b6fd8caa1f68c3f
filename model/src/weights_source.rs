//! Where the weights come from ([`WeightsSource`], [`LoadOptions`]) and what was loaded
//! ([`WeightsIdentity`]): the user-facing side of loading, which `--weights` parses into.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::googlenet::weights::WEIGHTS_URL;

/// Where the weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    /// torchvision's official `googlenet-1378be20.pth` from the cache directory, downloaded
    /// (and SHA-256 checked) on first use.
    Auto,
    /// A torchvision-format `.pth`, or a Burn-native `.bpk` written by
    /// [`Classifier::save_native`](crate::Classifier::save_native).
    Path(PathBuf),
    /// Seeded, deterministic, untrained weights: for transport and load tests, never for labels.
    Random {
        /// Same seed, same weights, on every machine and version.
        seed: u64,
    },
}

impl FromStr for WeightsSource {
    type Err = String;

    /// `auto`, `random` (seed 0), `random:SEED`, or a path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err("empty weights source: expected auto, random or a path".to_string()),
            "auto" => Ok(WeightsSource::Auto),
            "random" => Ok(WeightsSource::Random { seed: 0 }),
            _ => match s.strip_prefix("random:") {
                Some(seed) => seed
                    .parse()
                    .map(|seed| WeightsSource::Random { seed })
                    .map_err(|_| format!("bad seed in {s:?}: expected random:INTEGER")),
                None => Ok(WeightsSource::Path(PathBuf::from(s))),
            },
        }
    }
}

impl fmt::Display for WeightsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsSource::Auto => f.write_str("auto"),
            WeightsSource::Path(p) => write!(f, "{}", p.display()),
            WeightsSource::Random { seed } => write!(f, "random:{seed}"),
        }
    }
}

/// What the loaded weights are, for display next to every answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightsIdentity {
    /// `googlenet-1378be20` for the official weights, `random-seed-N`, or the file's stem.
    pub name: String,
    /// False for random weights: their labels mean nothing and must be shown as untrained.
    pub trained: bool,
    /// SHA-256 of the weights file, when loaded from one.
    pub sha256: Option<String>,
}

/// How [`WeightsSource::Auto`] finds its file. `Default` is what the CLI uses.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Cache directory; `None` = [`default_cache_dir`](crate::default_cache_dir).
    pub cache_dir: Option<PathBuf>,
    /// Where to download from when nothing is cached. Default: [`WEIGHTS_URL`].
    pub url: String,
    /// Whether downloading is allowed at all. Default: true.
    pub download: bool,
    /// Whether to draw a progress bar on stderr while downloading. Default: true
    /// (indicatif hides it when stderr is not a terminal).
    pub progress: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            cache_dir: None,
            url: WEIGHTS_URL.to_string(),
            download: true,
            progress: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_source_parses() {
        assert_eq!("auto".parse(), Ok(WeightsSource::Auto));
        assert_eq!("random".parse(), Ok(WeightsSource::Random { seed: 0 }));
        assert_eq!("random:42".parse(), Ok(WeightsSource::Random { seed: 42 }));
        assert!("random:x".parse::<WeightsSource>().is_err());
        assert_eq!(
            "/tmp/w.pth".parse(),
            Ok(WeightsSource::Path(PathBuf::from("/tmp/w.pth")))
        );
    }
}
