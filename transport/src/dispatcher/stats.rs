//! The dispatcher's counters: one plain struct, kept inside the cluster state
//! ([`super::Cluster`]) and copied out for `/metrics`, so each counter is named once.

use serde::Serialize;

use super::DispatchError;

/// Front-end totals since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DispatchStats {
    /// `classify` calls.
    pub requests: u64,
    /// Calls answered.
    pub succeeded: u64,
    /// Calls ended by a non-retryable rejection.
    pub rejected: u64,
    /// Calls ended by the deadline.
    pub deadline_exceeded: u64,
    /// Calls ended after `max_attempts`.
    pub attempts_exhausted: u64,
    /// Calls ended with no node available.
    pub no_nodes: u64,
    /// Attempts sent (first tries, retries and hedges).
    pub attempts: u64,
    /// Retries after a failed attempt.
    pub retries: u64,
    /// Hedge copies sent.
    pub hedges: u64,
    /// Requests won by the hedge copy.
    pub hedge_wins: u64,
    /// Attempts ended by a stream reset/stop from a node.
    pub resets: u64,
    /// Attempts that outlived the per-attempt timeout: the image was reopened on another node
    /// while the slow attempt went on (it may still win), or, when it had not started, was
    /// cancelled (counted again in `unstarted_cancels`).
    pub timeouts: u64,
    /// Overdue attempts that had not started on a node that sends Started frames: the image
    /// was still waiting in that node's queue, so it was reopened elsewhere and the waiting
    /// attempt cancelled, instead of letting both nodes work on it.
    pub unstarted_cancels: u64,
    /// Attempts ended by a lost connection.
    pub connection_losses: u64,
    /// Times a connected node went silent (no control frame within the silence timeout).
    pub silences: u64,
    /// Attempts on a silent node whose image was reopened on another node because of it.
    pub silence_reopens: u64,
    /// Attempts ended by a retryable typed error (overloaded, draining, internal).
    pub retryable_errors: u64,
    /// Request bytes written (headers + images, retries included).
    pub bytes_sent: u64,
}

impl DispatchStats {
    /// Counts how one request ended.
    pub(crate) fn count_outcome<T>(&mut self, result: &Result<T, DispatchError>) {
        let counter = match result {
            Ok(_) => &mut self.succeeded,
            Err(DispatchError::Rejected(_)) => &mut self.rejected,
            Err(DispatchError::NoNodes) => &mut self.no_nodes,
            Err(DispatchError::DeadlineExceeded { .. }) => &mut self.deadline_exceeded,
            Err(DispatchError::AttemptsExhausted { .. }) => &mut self.attempts_exhausted,
        };
        *counter += 1;
    }

    /// Adds another front-end's counters to these (a fleet's totals).
    pub fn merge(&mut self, other: &DispatchStats) {
        let DispatchStats {
            requests,
            succeeded,
            rejected,
            deadline_exceeded,
            attempts_exhausted,
            no_nodes,
            attempts,
            retries,
            hedges,
            hedge_wins,
            resets,
            timeouts,
            unstarted_cancels,
            connection_losses,
            silences,
            silence_reopens,
            retryable_errors,
            bytes_sent,
        } = other;
        self.requests += requests;
        self.succeeded += succeeded;
        self.rejected += rejected;
        self.deadline_exceeded += deadline_exceeded;
        self.attempts_exhausted += attempts_exhausted;
        self.no_nodes += no_nodes;
        self.attempts += attempts;
        self.retries += retries;
        self.hedges += hedges;
        self.hedge_wins += hedge_wins;
        self.resets += resets;
        self.timeouts += timeouts;
        self.unstarted_cancels += unstarted_cancels;
        self.connection_losses += connection_losses;
        self.silences += silences;
        self.silence_reopens += silence_reopens;
        self.retryable_errors += retryable_errors;
        self.bytes_sent += bytes_sent;
    }

    /// Requests that ended, one way or another.
    pub fn finished(&self) -> u64 {
        self.succeeded
            + self.rejected
            + self.no_nodes
            + self.deadline_exceeded
            + self.attempts_exhausted
    }
}
