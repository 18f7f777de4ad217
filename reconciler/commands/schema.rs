//! `reconciler schema`: print the JSON Schema of the `BackupPipeline` kind.

use super::ExitStatus;

/// Runs the command.
pub fn schema() -> anyhow::Result<ExitStatus> {
    let schema = crate::spec::backup_pipeline_schema();
    outln!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitStatus::Success)
}
