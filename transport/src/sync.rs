//! The one poison-tolerant lock helper of the workspace.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data even if a thread panicked while holding it. Every critical
/// section that uses this keeps its data consistent at each step (a few assignments, or a
/// state machine's event handler), so a panic elsewhere must not take every later caller
/// down with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
