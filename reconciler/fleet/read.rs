//! What `reconciler status --fleet` shows: every pipeline etcd knows, its owner
//! (from the ownership key, which vanishes with the owner's lease), the status its
//! owner last published and the step it last claimed. Reads only; a record that
//! does not parse is shown as absent, not an error.

use std::collections::BTreeMap;

use etcd_client::{Client, GetOptions};

use super::{FleetError, keys};

/// One pipeline as etcd holds it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FleetRecord {
    /// The pipeline.
    pub pipeline: String,
    /// The instance that owns it now; `None` while nobody does.
    pub owner: Option<String>,
    /// The status its owner last published.
    pub status: Option<serde_json::Value>,
    /// The instance that published it.
    pub published_by: Option<String>,
    /// The step last claimed (instance, step, at).
    pub last_claim: Option<serde_json::Value>,
}

/// Every pipeline under the fleet's prefix.
pub async fn read_fleet(client: &Client) -> Result<Vec<FleetRecord>, FleetError> {
    let mut kv = client.kv_client();
    let response = kv
        .get(keys::PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(FleetError::Request)?;
    let mut records: BTreeMap<String, FleetRecord> = BTreeMap::new();
    for item in response.kvs() {
        let key = String::from_utf8_lossy(item.key()).into_owned();
        let Some((kind, pipeline)) = keys::parse(&key) else {
            continue;
        };
        let record = records
            .entry(pipeline.to_string())
            .or_insert_with(|| FleetRecord {
                pipeline: pipeline.to_string(),
                ..Default::default()
            });
        let json = || serde_json::from_slice::<serde_json::Value>(item.value()).ok();
        match kind {
            "owner" => record.owner = Some(String::from_utf8_lossy(item.value()).into_owned()),
            "status" => {
                let value = json();
                record.published_by = value
                    .as_ref()
                    .and_then(|v| v["owner"].as_str())
                    .map(str::to_string);
                record.status = value.map(|mut v| v["status"].take());
            }
            "step" => record.last_claim = json(),
            _ => {}
        }
    }
    Ok(records.into_values().collect())
}
