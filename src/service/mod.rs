//! The gateway as a service: what the API offers, whatever speaks HTTP.
//! [`Gateway`] owns the apply protocol (under the write lock: read the
//! stored generation, build and validate the new state, store it, remember
//! its validated form; then wake the reconciler and wait, bounded, for the
//! pass that covers it), and answers previews, status, traffic and events.
//! `api` turns HTTP into these calls and their results into answers.

use std::sync::Arc;
use std::time::Instant;

use crate::clock::now_unix;
use crate::events::Subscription;
use crate::model::{DryRunResponse, GatewayConfig, StatusInfo, TrafficInfo};
use crate::spec::Desired;
use crate::store::{ApplyRecord, StoreError};
use crate::traffic::{QueryError, TrafficQuery};
use crate::validate::{Context, Problems, host_ports_of, new_host_ports, validate};

mod dry_run;
mod state;
mod tokens;

pub use dry_run::{DryRunError, DryRunRequest, DryRuns};
pub use state::{Lifecycle, Seen, SeenNetwork, Settings, Shared, first_event_id};
pub use tokens::{ApiToken, Scope, TokenSet, TokenSources};

/// Why a change was not taken (nothing was stored).
#[derive(Debug)]
pub enum Refused {
    /// A stop began.
    ShuttingDown,
    /// `If-Match` named another generation than the stored one.
    PreconditionFailed {
        expected: i64,
        stored: i64,
    },
    /// The new state is invalid, or needs a port another program holds.
    Invalid(Problems),
    Store(StoreError),
    DryRun(DryRunError),
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        Refused::Store(e)
    }
}

impl From<DryRunError> for Refused {
    fn from(e: DryRunError) -> Self {
        Refused::DryRun(e)
    }
}

/// How an apply ended for the caller.
#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    /// The generation stored.
    pub generation: i64,
    /// The pass that covered it; `None`: the wait ended first.
    pub record: Option<ApplyRecord>,
    /// The applied generation when the wait ended.
    pub applied_so_far: i64,
    pub duration_ms: u64,
}

/// The service; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    pub fn new(shared: Arc<Shared>) -> Self {
        Gateway { shared }
    }

    fn running(&self) -> Result<(), Refused> {
        (self.shared.lifecycle() == Lifecycle::Running).then_some(()).ok_or(Refused::ShuttingDown)
    }

    /// The desired state as stored, with its generation.
    pub async fn config(&self) -> Result<(i64, GatewayConfig), StoreError> {
        self.shared.store().desired().await
    }

    /// Builds the new desired state from the stored one under the write
    /// lock (`expected`: the generation `If-Match` asks for), validates it,
    /// stores it, wakes the reconciler and waits for the result. Once a
    /// stop began nothing is stored; a request that stored its generation
    /// before is answered when the reconciler has ended (pending if its
    /// generation was not applied by then).
    pub async fn apply(&self, expected: Option<i64>, build: impl FnOnce(&GatewayConfig) -> GatewayConfig) -> Result<ApplyOutcome, Refused> {
        let shared = &self.shared;
        let start = Instant::now();
        let mut finished = shared.passes();
        self.running()?;
        let generation = {
            let _guard = shared.write_lock.lock().await;
            self.running()?;
            // Read, compared with If-Match, built and stored under the one lock:
            // no other write can come between the check and the store.
            let (_, config, desired) = self.build_checked(expected, build).await?;
            let built = start.elapsed();
            let stored = shared.store().save_desired(&config, now_unix()).await;
            tracing::debug!(
                built_ms = built.as_millis() as u64,
                stored_ms = (start.elapsed() - built).as_millis() as u64,
                "apply: state built, validated and stored"
            );
            shared.store_outcome("config", &stored);
            let generation = stored?;
            shared.remember_accepted(generation, Arc::new(config), Arc::new(desired));
            shared.metrics().set_generation("desired", generation);
            generation
        };
        shared.wake();
        let mut lifecycle = shared.lifecycle_changes();
        let applied = finished.wait_for(|r| r.as_ref().is_some_and(|r| r.generation >= generation));
        tokio::select! {
            _ = tokio::time::timeout(shared.settings().apply_wait, applied) => {}
            _ = lifecycle.wait_for(|l| *l == Lifecycle::Stopped) => {}
        }
        // Whichever ended the wait, the last pass may have covered this generation.
        let record = shared.last_pass().filter(|r| r.generation >= generation);
        let applied_so_far = shared.last_pass().as_ref().map(|r| r.applied_generation).unwrap_or(0);
        Ok(ApplyOutcome { generation, record, applied_so_far, duration_ms: start.elapsed().as_millis() as u64 })
    }

    /// Builds and validates the new desired state exactly as an apply would,
    /// then lets the reconciler say what applying it would do; stores nothing.
    pub async fn preview(
        &self,
        expected: Option<i64>,
        build: impl FnOnce(&GatewayConfig) -> GatewayConfig,
    ) -> Result<DryRunResponse, Refused> {
        self.running()?;
        let (generation, _, desired) = self.build_checked(expected, build).await?;
        Ok(self.shared.dry_runs.ask(generation, desired, self.shared.settings().apply_wait).await?)
    }

    /// The current generation, the new state built on it, and that state
    /// validated: the same for a preview and an apply, so both refuse the
    /// same way. Validation keeps the networks of the accepted state given
    /// as they were (checking only the others) and the public keys of those
    /// that keep their private key. A stale `expected` generation
    /// (`If-Match`) is refused before anything is built.
    async fn build_checked(
        &self,
        expected: Option<i64>,
        build: impl FnOnce(&GatewayConfig) -> GatewayConfig,
    ) -> Result<(i64, GatewayConfig, Desired), Refused> {
        let shared = &self.shared;
        let (generation, current, previous) = self.current_state().await?;
        if let Some(expected) = expected.filter(|e| *e != generation) {
            return Err(Refused::PreconditionFailed { expected, stored: generation });
        }
        let opened_before = host_ports_of(&current);
        let config = build(&current);
        let previous_config = previous.is_some().then_some(&*current);
        let ctx = Context { previous: previous.as_deref(), previous_config, ..shared.settings().validation() };
        let desired = validate(&config, &ctx).map_err(Refused::Invalid)?;
        // Then the system: a port another program holds would fail nginx (or
        // WireGuard) at the apply, so it is refused before it is stored.
        let held = shared.ports_held_by_others(&new_host_ports(&opened_before, &desired));
        if !held.is_empty() {
            return Err(Refused::Invalid(held.into_iter().collect()));
        }
        Ok((generation, config, desired))
    }

    /// The stored generation, its state, and that state validated (kept
    /// from its apply; `None` if it no longer validates).
    async fn current_state(&self) -> Result<(i64, Arc<GatewayConfig>, Option<Arc<Desired>>), StoreError> {
        let stored = self.shared.stored_state().await?;
        Ok((stored.generation, stored.config, stored.desired.ok()))
    }

    /// What is on the system now, plus generations and the last apply.
    pub async fn status(&self) -> Result<StatusInfo, StoreError> {
        crate::status::collect(&self.shared).await
    }

    /// Recorded traffic (see [`TrafficQuery`]).
    pub async fn traffic(&self, query: &TrafficQuery) -> Result<TrafficInfo, QueryError> {
        crate::traffic::query(self.shared.store(), query).await
    }

    /// The event stream from after event `after` (or from now).
    pub fn events(&self, after: Option<u64>) -> Subscription {
        self.shared.events().subscribe(after)
    }
}
