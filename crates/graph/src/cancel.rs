//! Cooperative cancellation: `/interrupt`, shutdown and execution timeouts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::NodeError;

/// Shared flag a running node polls between units of work (sampler steps, tiles, images).
#[derive(Clone, Default, Debug)]
pub struct CancelToken {
    interrupted: Arc<AtomicBool>,
    /// When set, `check` fails with a timeout once this instant has passed.
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the running work to stop at its next check.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
    }

    /// Clears the flag and any deadline (done at the start of every prompt).
    pub fn reset(&self) {
        self.interrupted.store(false, Ordering::SeqCst);
        if let Ok(mut d) = self.deadline.lock() {
            *d = None;
        }
    }

    /// Sets (or clears) the instant after which `check` reports a timeout.
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        if let Ok(mut d) = self.deadline.lock() {
            *d = deadline;
        }
    }

    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// `Err(Interrupted)` after an interrupt, `Err(timeout)` past the deadline, else `Ok`.
    pub fn check(&self) -> Result<(), NodeError> {
        if self.is_interrupted() {
            return Err(NodeError::Interrupted);
        }
        let deadline = self.deadline.lock().ok().and_then(|d| *d);
        if let Some(deadline) = deadline {
            if Instant::now() >= deadline {
                return Err(NodeError::timeout("Prompt execution exceeded its time limit"));
            }
        }
        Ok(())
    }
}
