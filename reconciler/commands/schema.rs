//! `reconciler schema`: print the JSON Schema of a kind.

use crate::cli::{Kind, SchemaArgs};

use super::ExitStatus;

/// Runs the command.
pub fn schema(args: &SchemaArgs) -> anyhow::Result<ExitStatus> {
    let schema = match args.kind {
        Kind::BackupPipeline => crate::spec::backup_pipeline_schema(),
        Kind::RestoreTarget => crate::spec::restore_target_schema(),
    };
    outln!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitStatus::Success)
}
