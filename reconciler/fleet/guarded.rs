//! Writes that hold only while the writer owns the pipeline. Each is one etcd
//! transaction: compare the ownership key's create revision and lease with the
//! owner's own, then put. A former owner that was paused past its lease (and a
//! new owner took the pipeline meanwhile) finds the comparison false and writes
//! nothing; etcd, not the writer's clock, is the judge. Must not decide whether
//! to write: the caller has asked already.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, Txn, TxnOp};

use super::FleetError;
use super::keys;

/// What an owner holds: its ownership key was created at `create_revision`
/// bound to `lease`. A new owner's key has another create revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    /// The ownership key's create revision.
    pub create_revision: i64,
    /// The lease the key is bound to.
    pub lease: i64,
}

/// Whether etcd took the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The guard held: the write is in.
    Written,
    /// The guard failed: someone else owns the pipeline now (or nobody).
    Rejected,
}

fn compares(pipeline: &str, guard: Guard) -> Vec<Compare> {
    let owner = keys::owner(pipeline);
    vec![
        Compare::create_revision(owner.clone(), CompareOp::Equal, guard.create_revision),
        Compare::lease(owner, CompareOp::Equal, guard.lease),
    ]
}

/// Puts `value` at `key` if `guard` still owns `pipeline`.
pub async fn put(
    client: &Client,
    pipeline: &str,
    guard: Guard,
    key: String,
    value: Vec<u8>,
    timeout: Duration,
) -> Result<Outcome, FleetError> {
    let txn = Txn::new()
        .when(compares(pipeline, guard))
        .and_then(vec![TxnOp::put(key, value, None)]);
    run(client, txn, timeout).await
}

/// Gives the pipeline up: deletes its ownership key if `guard` still owns it.
pub async fn release(
    client: &Client,
    pipeline: &str,
    guard: Guard,
    timeout: Duration,
) -> Result<Outcome, FleetError> {
    let txn = Txn::new()
        .when(compares(pipeline, guard))
        .and_then(vec![TxnOp::delete(
            keys::owner(pipeline),
            None::<DeleteOptions>,
        )]);
    run(client, txn, timeout).await
}

async fn run(client: &Client, txn: Txn, timeout: Duration) -> Result<Outcome, FleetError> {
    let mut kv = client.kv_client();
    let response = tokio::time::timeout(timeout, kv.txn(txn))
        .await
        .map_err(|_| FleetError::Timeout(timeout))?
        .map_err(FleetError::Request)?;
    Ok(if response.succeeded() {
        Outcome::Written
    } else {
        Outcome::Rejected
    })
}
