//! The scheduled jobs function: on each EventBridge tick it runs the API-key
//! lifecycle sweep (`pharmagate_shared::lifecycle`): expire dead keys, flag
//! old ones for rotation, purge what TTL does not. The event's content is
//! not used (any schedule event starts one run); a failed run fails the
//! invocation, so EventBridge's retry and the template's error alarm see it.

use std::sync::Arc;
use tracing::Instrument;

use lambda_runtime::LambdaEvent;
use pharmagate_shared::clock::Clock;
use pharmagate_shared::config::Backend;
use pharmagate_shared::lifecycle::{self, LifecyclePolicy, SweepReport};
use pharmagate_shared::ports::ItemStore;
use pharmagate_shared::repo::{KeyRepo, RepoError};
use serde_json::Value;

pub struct Jobs {
    keys: KeyRepo,
    store: Arc<dyn ItemStore>,
    policy: LifecyclePolicy,
    clock: Clock,
}

impl Jobs {
    pub fn new(backend: &Backend) -> Self {
        Jobs {
            keys: backend.keys(),
            store: backend.store.clone(),
            policy: backend.settings.lifecycle,
            clock: Clock::system(),
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<SweepReport, lambda_runtime::Error> {
        // Instrumented, not entered: a guard held across an await would put
        // other tasks' lines in this span.
        let span = tracing::info_span!("jobs", lambda_request_id = %event.context.request_id);
        async {
            self.run().await.map_err(|e| {
                tracing::error!(error = %e, "key lifecycle sweep failed");
                e.into()
            })
        }
        .instrument(span)
        .await
    }

    /// One run of every job.
    pub async fn run(&self) -> Result<SweepReport, RepoError> {
        lifecycle::sweep(&self.keys, self.store.as_ref(), &self.policy, self.clock.now()).await
    }
}
