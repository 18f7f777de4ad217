//! # reconciler
//!
//! Keeps a PostgreSQL backup pipeline converged on desired state written in YAML:
//! barman base backups no older than a maximum age, retention, a volume holding the
//! newest backup recovered with its WAL fully replayed, and a starport copy of it.
//!
//! ```text
//!  specs/*.yaml ──load──▶ spec ─┐
//!                                ├──▶ plan (pure) ──▶ execute ──▶ drivers ──▶ barman, postgres,
//!  barman, volume, ──observe──▶ observed ─┘          (one step,                 rsync, filesystem
//!  starport                                           then re-plan)
//! ```
//!
//! ## Layout
//! - [`spec`]: the `BackupPipeline` kind, its validated values, and the YAML loader.
//! - [`observe`]: plain-data snapshots of what exists; [`observe::observe`] fills them.
//! - [`plan`]: the pure planner, the only place that decides; conditions and steps.
//! - [`execute`]: carries out one step through the drivers; decides nothing.
//! - [`drivers`]: barman, volume, replay, starport, host; the only code with side effects.
//! - [`reconcile`]: the one code path `diff`, `apply` and `run` share.
//! - [`runtime`]: `reconciler run`: triggers, scheduling, backoff, status, metrics, health.
//! - [`cli`] and [`commands`]: the command line.

pub mod cli;
pub mod commands;
pub mod drivers;
pub mod execute;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod runtime;
pub mod spec;
