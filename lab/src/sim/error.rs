//! Why a simulation could not run, or what it caught the dispatcher doing wrong.

/// Why a simulation could not run or broke an invariant of the dispatcher.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Config(String),
    /// Nothing left to happen while images still wait for an answer.
    #[error("the simulation ran out of events with {unsettled} image(s) unsettled")]
    OutOfEvents {
        /// Images still without an answer.
        unsettled: usize,
    },
    /// A request kept asking to be woken at the same instant without progress.
    #[error("request {0} is stuck: its timer fires again and again at one instant")]
    Stuck(u64),
    /// An invariant of the driver contract was broken (a second Done, credit not returned).
    #[error("invariant broken: {0}")]
    Invariant(String),
    /// Writing results failed.
    #[error("writing {path}: {message}")]
    Output {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}
