//! # reconciler
//!
//! Keeps a PostgreSQL backup pipeline converged on desired state written in YAML:
//! barman base backups no older than a maximum age, retention, a volume holding the
//! newest backup recovered with its WAL fully replayed, a starport copy of it and
//! its off-site mirrors, and restore targets on the hosts that consume it.
//!
//! ```text
//!  specs/*.yaml ──load──▶ spec ─┐
//!                               ├──▶ plan (pure) ──▶ execute ──▶ drivers ──▶ barman, postgres,
//!  barman, volume, ──observe──▶ observed ─┘          (one step,                 rsync, Docker
//!  starport, containers                                then re-plan)
//! ```
//!
//! ## Where to start reading
//! 1. [`reconcile`]: the one code path `diff`, `apply` and `run` share, in about a
//!    hundred lines: observe, plan, run one step, observe again.
//! 2. [`plan`]: the only place that decides. [`plan::plan`] is a pure function of
//!    (spec, observed, now); its tests (`tests/planner_*.rs`, `tests/stuck.rs`) read
//!    as a table of situations and answers.
//! 3. [`observed`]: the plain data the planner reads, and [`spec`]: the documents.
//! 4. [`execute`] and [`drivers`]: how a step is carried out, and the only code
//!    with side effects.
//! 5. [`runtime`]: `reconciler run` (triggers, backoff, status, metrics, health).
//!
//! ## Layers (each imports only from those listed before it; `tests/layers.rs`)
//! - [`errors`]: one-line rendering of an error and its sources.
//! - [`spec`]: the `BackupPipeline` and `RestoreTarget` kinds, their validated values,
//!   the YAML loader, and their Kubernetes CRDs (`spec::crd`).
//! - [`observed`]: plain-data snapshots of what exists; no I/O, no driver.
//! - [`drivers`]: barman, volume, replay, starport, mirrors, restore targets, Docker.
//! - [`observe`]: asks the drivers and assembles [`observed`] data.
//! - [`plan`]: conditions, steps and waits; sees only [`spec`] and [`observed`].
//! - [`clock`]: the real now, read once per pass for the planner.
//! - [`execute`]: carries out one step through the drivers; decides nothing.
//! - [`reconcile`]: observe → plan → execute, shared by every command.
//! - [`fleet`]: fleet mode only (`run --fleet`): which instance owns each pipeline,
//!   through etcd leases and guarded writes.
//! - [`runtime`]: the long-running loop.
//! - [`cli`] and [`commands`]: the command line.

pub mod cli;
pub mod clock;
pub mod commands;
pub mod drivers;
pub mod errors;
pub mod execute;
pub mod fleet;
pub mod observe;
pub mod observed;
pub mod plan;
pub mod reconcile;
pub mod runtime;
pub mod spec;
