//! Which CPU backend runs the network, chosen at run time (`--backend`).

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// The CPU backend that runs the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// burn-flex with Glimpse's fused channels-last operators (the fast path), hence the
    /// default.
    #[default]
    Flex,
    /// burn-flex's own stock operators, the reference: what the fast path is checked against,
    /// and a way out should the fused operators misbehave on some machine.
    FlexStock,
    /// burn-ndarray: the long-standing pure-Rust CPU backend (deprecated upstream in 0.22),
    /// about 2.5x slower than stock flex on GoogLeNet here (see BENCHMARKS.md).
    Ndarray,
}

impl Backend {
    /// All backends, for tests and benchmarks.
    pub const ALL: [Backend; 3] = [Backend::Flex, Backend::FlexStock, Backend::Ndarray];

    /// Whether the network should run Glimpse's fused operators (true only for
    /// [`Backend::Flex`]); the other backends run Burn's stock operators.
    pub fn fused(self) -> bool {
        self == Backend::Flex
    }

    /// The Burn device: both flex variants run on burn-flex, and differ only in the operators
    /// the network calls.
    pub(crate) fn device(self) -> Device {
        match self {
            #[allow(deprecated)] // still supported in 0.22, and our users asked for it by name
            Backend::Ndarray => Device::ndarray(),
            Backend::Flex | Backend::FlexStock => Device::flex(),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Flex => "flex",
            Backend::FlexStock => "flex-stock",
            Backend::Ndarray => "ndarray",
        })
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "flex" => Ok(Backend::Flex),
            "flex-stock" => Ok(Backend::FlexStock),
            "ndarray" => Ok(Backend::Ndarray),
            other => Err(format!(
                "unknown backend {other:?}: expected \"flex\", \"flex-stock\" or \"ndarray\""
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
        assert_eq!("Flex-Stock".parse::<Backend>(), Ok(Backend::FlexStock));
        let err = "cuda".parse::<Backend>().expect_err("no such backend");
        for name in ["flex", "flex-stock", "ndarray"] {
            assert!(err.contains(&format!("\"{name}\"")), "{err}");
        }
        assert_eq!(Backend::default(), Backend::Flex);
    }

    #[test]
    fn only_flex_is_fused() {
        let fused: Vec<Backend> = Backend::ALL.into_iter().filter(|b| b.fused()).collect();
        assert_eq!(fused, [Backend::Flex]);
    }
}
