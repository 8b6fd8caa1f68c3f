//! Which CPU backend runs the network, chosen at run time (`--backend`).

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// The CPU backend that runs the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// burn-ndarray: the long-standing pure-Rust CPU backend (deprecated upstream in 0.22).
    Ndarray,
    /// burn-flex: upstream's replacement for burn-ndarray in 0.22; about 2.5x faster on
    /// GoogLeNet here (see BENCHMARKS.md), hence the default.
    #[default]
    Flex,
}

impl Backend {
    /// All backends, for tests and benchmarks.
    pub const ALL: [Backend; 2] = [Backend::Ndarray, Backend::Flex];

    pub(crate) fn device(self) -> Device {
        match self {
            #[allow(deprecated)] // still supported in 0.22, and our users asked for it by name
            Backend::Ndarray => Device::ndarray(),
            Backend::Flex => Device::flex(),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Ndarray => "ndarray",
            Backend::Flex => "flex",
        })
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ndarray" => Ok(Backend::Ndarray),
            "flex" => Ok(Backend::Flex),
            other => Err(format!(
                "unknown backend {other:?}: expected \"ndarray\" or \"flex\""
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_parses_and_prints() {
        for b in Backend::ALL {
            assert_eq!(b.to_string().parse::<Backend>(), Ok(b));
        }
        assert!("cuda".parse::<Backend>().is_err());
        assert_eq!(Backend::default(), Backend::Flex);
    }
}
