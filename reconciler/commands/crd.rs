//! `reconciler crd`: print the CustomResourceDefinitions of the kinds, as YAML
//! documents `kubectl apply -f -` reads. The CRDs themselves are built in
//! `spec::crd`; this only chooses and prints.

use crate::cli::{CrdArgs, Kind};
use crate::spec::crd::{CrdKind, crd_yaml};

use super::ExitStatus;

/// Runs the command.
pub fn crd(args: &CrdArgs) -> anyhow::Result<ExitStatus> {
    let kinds: Vec<CrdKind> = match args.kind {
        Some(Kind::BackupPipeline) => vec![CrdKind::BackupPipeline],
        Some(Kind::RestoreTarget) => vec![CrdKind::RestoreTarget],
        None => CrdKind::ALL.to_vec(),
    };
    for (i, kind) in kinds.into_iter().enumerate() {
        // Each CRD is its own YAML document; the first needs no separator, so
        // one kind's output is byte for byte its file under `schemas/`.
        if i > 0 {
            outln!("---");
        }
        out!("{}", crd_yaml(kind)?);
    }
    Ok(ExitStatus::Success)
}
