//! Dry runs reach the reconciler through a queue and are answered between
//! its passes: from the same look and plan as an apply, never racing with
//! one, and without changing anything.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::model::DryRunResponse;
use crate::spec::Desired;

/// How many dry runs may wait for the reconciler at once; more are refused
/// as busy rather than queued without bound.
const QUEUE: usize = 16;

/// One dry run for the reconciler to answer.
pub struct DryRunRequest {
    /// The desired generation it is compared against (for the answer).
    pub generation: i64,
    pub desired: Desired,
    pub answer: oneshot::Sender<DryRunResponse>,
}

/// Why a dry run got no answer.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error("the daemon is stopping: no dry run is answered any more")]
    Stopped,
    #[error("the reconciler did not get to the dry run within {} s (a long apply is running, or {QUEUE} dry runs wait); try again", .0.as_secs())]
    Busy(Duration),
}

/// The queue between the API and the reconciler.
pub struct DryRuns {
    sender: mpsc::Sender<DryRunRequest>,
    /// Taken by the reconciler that answers them.
    inbox: std::sync::Mutex<Option<mpsc::Receiver<DryRunRequest>>>,
}

impl Default for DryRuns {
    fn default() -> Self {
        let (sender, inbox) = mpsc::channel(QUEUE);
        DryRuns { sender, inbox: std::sync::Mutex::new(Some(inbox)) }
    }
}

impl DryRuns {
    /// The requests, for the one reconciler that answers them.
    pub fn take_inbox(&self) -> Option<mpsc::Receiver<DryRunRequest>> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Hands a dry run to the reconciler and waits (at most `wait`) for its answer.
    pub async fn ask(&self, generation: i64, desired: Desired, wait: Duration) -> Result<DryRunResponse, DryRunError> {
        let (answer, answered) = oneshot::channel();
        let request = DryRunRequest { generation, desired, answer };
        self.sender.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DryRunError::Busy(wait),
            mpsc::error::TrySendError::Closed(_) => DryRunError::Stopped,
        })?;
        match tokio::time::timeout(wait, answered).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(DryRunError::Stopped),
            Err(_) => Err(DryRunError::Busy(wait)),
        }
    }
}
