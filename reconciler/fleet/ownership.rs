//! The instance's lease and the pipelines it owns through it.
//!
//! A background task renews the lease every third of its TTL and campaigns for
//! each wanted pipeline with a transaction that creates the ownership key only
//! if it is absent (create revision 0), bound to the lease. The key vanishes when
//! the lease does, so a dead or paused owner's pipelines are free after one TTL.
//!
//! Self-fencing: the lease is taken to be valid until the last successful renewal
//! was *sent* plus the TTL etcd granted. Past that instant the instance owns
//! nothing: it starts no step, cancels the fence token of every running one (the
//! same token a shutdown cancels, so a step stops where a shutdown would stop it),
//! and publishes nothing. etcd stays the judge of every write ([`super::guarded`]);
//! the local clock only makes the instance give up early, never late.
//!
//! Must not: decide what a pipeline needs, run a step, or read the specs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::guarded::{self, Guard, Outcome};
use super::{FleetConfig, FleetError, keys, placement, request_timeout};

/// What `/healthz` and the metrics say about the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetHealth {
    /// Whether etcd answered the last renewal or campaign.
    pub etcd_up: bool,
    /// How many pipelines this instance owns.
    pub owned: usize,
    /// Why no step starts here, when etcd cannot be reached.
    pub trouble: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    id: i64,
    valid_until: Instant,
}

#[derive(Debug, Default)]
struct State {
    lease: Option<Lease>,
    /// Pipelines this instance owns, with the guard of each.
    owned: BTreeMap<String, Guard>,
    /// Who else owns what, as the last campaign saw.
    others: BTreeMap<String, String>,
    /// Pipelines to campaign for (placement allows it), and those placed elsewhere.
    wanted: BTreeSet<String>,
    placed_elsewhere: BTreeMap<String, String>,
    etcd_error: Option<String>,
    /// Cancelled when the pipeline's ownership is lost.
    fences: HashMap<String, CancellationToken>,
}

impl State {
    fn lose(&mut self, pipeline: &str, why: &str) {
        if self.owned.remove(pipeline).is_some() {
            tracing::warn!(
                pipeline,
                reason = why,
                "lost ownership: no new step starts; cancelling the running one"
            );
        }
        if let Some(fence) = self.fences.remove(pipeline) {
            fence.cancel();
        }
    }

    fn lose_all(&mut self, why: &str) {
        let names: Vec<String> = self.owned.keys().cloned().collect();
        for name in names {
            self.lose(&name, why);
        }
        for (_, fence) in self.fences.drain() {
            fence.cancel();
        }
    }

    /// The lease, if it is still valid by the local clock.
    fn valid_lease(&self) -> Option<Lease> {
        self.lease.filter(|l| l.valid_until > Instant::now())
    }
}

/// This instance's standing in the fleet. Cheap to clone.
#[derive(Clone)]
pub struct Ownership {
    client: Client,
    config: Arc<FleetConfig>,
    state: Arc<Mutex<State>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Ownership {
    /// Starts the renewal and campaign task.
    pub fn spawn(
        client: Client,
        config: FleetConfig,
        wake: mpsc::UnboundedSender<()>,
        shutdown: CancellationToken,
    ) -> Self {
        let ownership = Ownership {
            client,
            config: Arc::new(config),
            state: Arc::default(),
            shutdown,
        };
        tokio::spawn(ownership.clone().keep(wake));
        ownership
    }

    /// This instance's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The documents the specs hold now, with each one's `placement.hosts`:
    /// campaign for those placement allows, give up any others.
    pub fn want(&self, documents: &[(String, Option<Vec<String>>)]) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.wanted.clear();
        state.placed_elsewhere.clear();
        for (name, hosts) in documents {
            match placement::placed_elsewhere(self.name(), hosts.as_deref()) {
                None => {
                    state.wanted.insert(name.clone());
                }
                Some(why) => {
                    state.placed_elsewhere.insert(name.clone(), why);
                }
            }
        }
    }

    /// Why this instance may not start a step for `pipeline` now; `None` when it
    /// owns it and its lease is valid.
    pub fn wait_reason(&self, pipeline: &str) -> Option<String> {
        let Ok(state) = self.state.lock() else {
            return Some("fleet state unreadable".to_string());
        };
        if let Some(why) = state.placed_elsewhere.get(pipeline) {
            return Some(why.clone());
        }
        if state.valid_lease().is_none() {
            return Some(match &state.etcd_error {
                Some(e) => format!("etcd unreachable ({e}): no step starts without a lease"),
                None => "no etcd lease yet: no step starts without one".to_string(),
            });
        }
        if state.owned.contains_key(pipeline) {
            return None;
        }
        Some(match state.others.get(pipeline) {
            Some(owner) => format!("owned by {owner}"),
            None => "campaigning for ownership".to_string(),
        })
    }

    /// Claims the next step in etcd before it starts (a guarded write of what
    /// and when): `Ok` with the token that is cancelled if ownership is lost
    /// while the step runs, or why the step must not start.
    pub async fn claim_step(
        &self,
        pipeline: &str,
        step: &str,
    ) -> Result<CancellationToken, String> {
        if let Some(why) = self.wait_reason(pipeline) {
            return Err(why);
        }
        let guard = self.guard(pipeline).ok_or("not the owner")?;
        let claim = serde_json::json!({
            "instance": self.name(),
            "step": step,
            "at": jiff::Timestamp::now().to_string(),
        });
        let outcome = guarded::put(
            &self.client,
            pipeline,
            guard,
            keys::step(pipeline),
            claim.to_string().into_bytes(),
            request_timeout(self.config.ttl),
        )
        .await;
        match outcome {
            Ok(Outcome::Written) => {
                let Ok(mut state) = self.state.lock() else {
                    return Err("fleet state unreadable".to_string());
                };
                // Ownership may have been lost while the claim was in flight.
                if !state.owned.contains_key(pipeline) {
                    return Err("ownership lost while claiming the step".to_string());
                }
                let fence = self.shutdown.child_token();
                state.fences.insert(pipeline.to_string(), fence.clone());
                Ok(fence)
            }
            Ok(Outcome::Rejected) => {
                if let Ok(mut state) = self.state.lock() {
                    state.lose(pipeline, "etcd rejected the step claim");
                }
                tracing::warn!(
                    pipeline,
                    step,
                    "etcd rejected the step claim: another instance owns the pipeline"
                );
                Err("etcd rejected the step claim: not the owner any more".to_string())
            }
            Err(e) => Err(format!(
                "cannot claim the step in etcd: {}",
                crate::errors::error_chain(&e)
            )),
        }
    }

    /// The step of `pipeline` ended: its fence is no longer needed.
    pub fn step_ended(&self, pipeline: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.fences.remove(pipeline);
        }
    }

    /// Publishes `status` (JSON) as `pipeline`'s, if this instance owns it; a
    /// non-owner publishes nothing. Logs a rejected or failed write.
    pub async fn publish(&self, pipeline: &str, status: &serde_json::Value) {
        if self.wait_reason(pipeline).is_some() {
            return;
        }
        let Some(guard) = self.guard(pipeline) else {
            return;
        };
        let record = serde_json::json!({ "owner": self.name(), "status": status });
        match guarded::put(
            &self.client,
            pipeline,
            guard,
            keys::status(pipeline),
            record.to_string().into_bytes(),
            request_timeout(self.config.ttl),
        )
        .await
        {
            Ok(Outcome::Written) => {}
            Ok(Outcome::Rejected) => {
                tracing::warn!(
                    pipeline,
                    "etcd rejected a status write: another instance owns the pipeline"
                );
                if let Ok(mut state) = self.state.lock() {
                    state.lose(pipeline, "etcd rejected a status write");
                }
            }
            Err(e) => {
                tracing::warn!(pipeline, error = %crate::errors::error_chain(&e), "cannot publish status to etcd");
            }
        }
    }

    /// What `/healthz` and the metrics say.
    pub fn health(&self) -> FleetHealth {
        let Ok(state) = self.state.lock() else {
            return FleetHealth {
                etcd_up: false,
                owned: 0,
                trouble: Some("fleet state unreadable".to_string()),
            };
        };
        let lease_valid = state.valid_lease().is_some();
        FleetHealth {
            etcd_up: state.etcd_error.is_none() && lease_valid,
            owned: if lease_valid { state.owned.len() } else { 0 },
            trouble: state
                .etcd_error
                .as_ref()
                .map(|e| format!("etcd unreachable ({e}): no step starts here")),
        }
    }

    fn guard(&self, pipeline: &str) -> Option<Guard> {
        self.state.lock().ok()?.owned.get(pipeline).copied()
    }

    fn owned_names(&self) -> BTreeSet<String> {
        self.state
            .lock()
            .map(|s| s.owned.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Renews and campaigns until shutdown, then gives everything up.
    async fn keep(self, wake: mpsc::UnboundedSender<()>) {
        let every = request_timeout(self.config.ttl);
        loop {
            let before = self.owned_names();
            self.renew().await;
            self.campaign().await;
            if self.owned_names() != before {
                let _ = wake.send(());
            }
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
        // Revoking the lease frees every pipeline at once instead of after a TTL.
        let lease = self.state.lock().ok().and_then(|s| s.lease);
        if let Some(lease) = lease {
            let mut client = self.client.clone();
            let _ = tokio::time::timeout(every, client.lease_revoke(lease.id)).await;
        }
    }

    fn set_etcd(&self, result: Result<(), FleetError>) {
        if let Ok(mut state) = self.state.lock() {
            match result {
                Ok(()) => {
                    if state.etcd_error.take().is_some() {
                        tracing::info!("etcd reachable again");
                    }
                }
                Err(e) => {
                    let text = crate::errors::error_chain(&e);
                    if state.etcd_error.is_none() {
                        tracing::warn!(error = %text, "etcd unreachable: no new step starts here");
                    }
                    state.etcd_error = Some(text);
                }
            }
        }
    }

    async fn renew(&self) {
        let ttl = self.config.ttl;
        let timeout = request_timeout(ttl);
        let lease = {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            if let Some(l) = state.lease
                && l.valid_until <= Instant::now()
            {
                // Renewals failed (or the process was paused) for a whole TTL.
                state.lose_all("the lease ran out before it could be renewed");
                state.lease = None;
            }
            state.lease
        };
        let mut client = self.client.clone();
        let sent = Instant::now();
        match lease {
            None => {
                let granted = tokio::time::timeout(
                    timeout,
                    client.lease_grant(ttl.as_secs().max(1) as i64, None),
                )
                .await
                .map_err(|_| FleetError::Timeout(timeout))
                .and_then(|r| r.map_err(FleetError::Request));
                match granted {
                    Ok(g) => {
                        if let Ok(mut state) = self.state.lock() {
                            state.lease = Some(Lease {
                                id: g.id(),
                                valid_until: sent + Duration::from_secs(g.ttl().max(0) as u64),
                            });
                        }
                        self.set_etcd(Ok(()));
                    }
                    Err(e) => self.set_etcd(Err(e)),
                }
            }
            Some(lease) => {
                let renewed = tokio::time::timeout(timeout, async {
                    let (mut keeper, mut stream) = client.lease_keep_alive(lease.id).await?;
                    keeper.keep_alive().await?;
                    stream.message().await
                })
                .await
                .map_err(|_| FleetError::Timeout(timeout))
                .and_then(|r| r.map_err(FleetError::Request));
                match renewed {
                    Ok(Some(r)) if r.ttl() > 0 => {
                        if let Ok(mut state) = self.state.lock()
                            && let Some(l) = state.lease.as_mut()
                            && l.id == lease.id
                        {
                            l.valid_until = sent + Duration::from_secs(r.ttl() as u64);
                        }
                        self.set_etcd(Ok(()));
                    }
                    Ok(_) => {
                        // etcd says the lease is gone: its keys are gone with it.
                        if let Ok(mut state) = self.state.lock() {
                            state.lose_all("etcd says the lease expired");
                            state.lease = None;
                        }
                        self.set_etcd(Ok(()));
                    }
                    Err(e) => self.set_etcd(Err(e)),
                }
            }
        }
    }

    async fn campaign(&self) {
        let (lease, wanted, owned) = {
            let Ok(state) = self.state.lock() else {
                return;
            };
            let Some(lease) = state.valid_lease() else {
                return;
            };
            (lease, state.wanted.clone(), state.owned.clone())
        };
        let timeout = request_timeout(self.config.ttl);
        // Give up what is no longer ours to hold (removed, or placed elsewhere).
        for (name, guard) in owned.iter().filter(|(n, _)| !wanted.contains(*n)) {
            let _ = guarded::release(&self.client, name, *guard, timeout).await;
            if let Ok(mut state) = self.state.lock() {
                state.lose(name, "no longer this instance's to own");
            }
        }
        for name in wanted.iter().filter(|n| !owned.contains_key(*n)) {
            let key = keys::owner(name);
            let txn = Txn::new()
                .when(vec![Compare::create_revision(
                    key.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(vec![TxnOp::put(
                    key.clone(),
                    self.name(),
                    Some(PutOptions::new().with_lease(lease.id)),
                )])
                .or_else(vec![TxnOp::get(key, None)]);
            let mut kv = self.client.kv_client();
            let answer = tokio::time::timeout(timeout, kv.txn(txn))
                .await
                .map_err(|_| FleetError::Timeout(timeout))
                .and_then(|r| r.map_err(FleetError::Request));
            let response = match answer {
                Ok(r) => r,
                Err(e) => {
                    self.set_etcd(Err(e));
                    return;
                }
            };
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            if response.succeeded() {
                let revision = response.header().map_or(0, |h| h.revision());
                tracing::info!(pipeline = %name, instance = self.name(), "took ownership");
                state.others.remove(name);
                state.owned.insert(
                    name.clone(),
                    Guard {
                        create_revision: revision,
                        lease: lease.id,
                    },
                );
                continue;
            }
            for op in response.op_responses() {
                let TxnOpResponse::Get(get) = op else {
                    continue;
                };
                let Some(kv) = get.kvs().first() else {
                    continue;
                };
                let owner = String::from_utf8_lossy(kv.value()).into_owned();
                if owner == self.name() && kv.lease() == lease.id {
                    // Ours already: an earlier answer was lost on the way.
                    state.owned.insert(
                        name.clone(),
                        Guard {
                            create_revision: kv.create_revision(),
                            lease: lease.id,
                        },
                    );
                } else {
                    state.others.insert(name.clone(), owner);
                }
            }
        }
    }
}
