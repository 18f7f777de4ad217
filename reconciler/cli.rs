//! The command line, as clap types only: parsing, no behaviour.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Keeps a PostgreSQL backup pipeline (barman base backups, a recovered and replayed
/// volume, its starport copy) and the volumes restored from it on consumer hosts
/// converged on the desired state declared in YAML.
///
/// Exit codes: 0 = converged / valid / no drift; 1 = drift, not converged, or invalid
/// specs; 2 = error (a spec could not be loaded for diff/apply, something could not be
/// observed, bad arguments).
#[derive(Debug, Parser)]
#[command(name = "reconciler", version, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log level on stderr (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info", env = "RECONCILER_LOG")]
    pub log_level: String,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check spec files: exit 0 when valid, 1 with `file:line:col: message` lines on stderr.
    Validate(SpecsArgs),
    /// Show drift: conditions and the steps that would converge each pipeline.
    /// Exit 0 no drift, 1 drift, 2 error.
    Diff(DiffArgs),
    /// Run one reconcile pass: execute steps until converged or a step fails.
    /// Exit 0 converged, 1 not converged, 2 error.
    Apply(ApplyArgs),
    /// Reconcile continuously: on spec changes, at deadlines, periodically and on
    /// SIGHUP; serve /metrics, /healthz and /status. Stops cleanly on SIGTERM/SIGINT.
    Run(RunArgs),
    /// Show the status `run` records in its state directory.
    Status(StatusArgs),
    /// Print the JSON Schema of a kind (`BackupPipeline` unless `--kind` says).
    Schema(SchemaArgs),
}

/// `reconciler schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// The kind whose schema to print.
    #[arg(long, value_enum, default_value_t = Kind::BackupPipeline)]
    pub kind: Kind,
}

/// The kinds of document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Backups, a recovered volume, the starport and its mirrors.
    #[value(name = "BackupPipeline")]
    BackupPipeline,
    /// A consumer volume restored from a starport.
    #[value(name = "RestoreTarget")]
    RestoreTarget,
}

/// `reconciler run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    /// Where the specs are.
    pub specs: SpecsArgs,
    #[command(flatten)]
    /// Where status files and the instance lock live.
    pub state: StateDirArgs,
    /// Address of /metrics, /healthz and /status. Loopback unless you mean otherwise.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:19187")]
    pub listen: std::net::SocketAddr,
    /// Look at every pipeline at least this often, e.g. `5m`.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub resync: String,
    /// At most this many pipelines run steps at once.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub max_parallel: usize,
    /// After SIGTERM, wait at most this long for running steps to stop cleanly.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub shutdown_timeout: String,
    /// /healthz fails once no pass completed for this long (default: 3 resyncs + 1m).
    #[arg(long, value_name = "DURATION")]
    pub stall_after: Option<String>,
}

/// `reconciler status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    /// The state directory of `reconciler run`.
    pub state: StateDirArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Where the specs are.
#[derive(Debug, Args)]
pub struct SpecsArgs {
    /// A spec file or a directory of `*.yaml` files (repeatable).
    #[arg(long = "specs", value_name = "PATH", default_value = "./specs")]
    pub specs: Vec<PathBuf>,
}

/// Where `run` keeps its status and lock, and `status` reads them.
#[derive(Debug, Args)]
pub struct StateDirArgs {
    /// The state directory: status files and the instance lock (one `run` per directory).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/reconciler",
        env = "RECONCILER_STATE_DIR"
    )]
    pub state_dir: PathBuf,
}

/// `reconciler diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    /// Where the specs are.
    pub specs: SpecsArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Evaluate at this instant instead of now (RFC 3339, e.g. 2026-11-27T17:00:00Z):
    /// "what will have drifted by Friday".
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<jiff::Timestamp>,
    /// Only these pipelines (default: all).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

/// `reconciler apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    /// Where the specs are.
    pub specs: SpecsArgs,
    /// Plan and print, execute nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format of the final report.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Only these pipelines (default: all).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// For programs; documented in README and stable.
    Json,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event.
    Text,
    /// One JSON object per event.
    Json,
}
