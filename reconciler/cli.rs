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
#[command(name = "reconciler", version = VERSION, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log level on stderr; RUST_LOG overrides it.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "LEVEL",
        default_value_t = LogLevel::Info,
        env = "RECONCILER_LOG"
    )]
    pub log_level: LogLevel,
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
    /// Print the Kubernetes CustomResourceDefinitions of both kinds (or of
    /// `--kind`) as YAML, e.g. `reconciler crd | kubectl apply -f -`.
    Crd(CrdArgs),
    /// Print a shell completion script, e.g.
    /// `reconciler completions bash > /etc/bash_completion.d/reconciler`.
    Completions(CompletionsArgs),
    /// Print the manual page (roff), e.g. `reconciler man | man -l -`, or write a
    /// page per subcommand too with `--dir`.
    Man(ManArgs),
}

/// `reconciler man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `reconciler.1` and a `reconciler-SUBCOMMAND.1` per subcommand into this
    /// directory instead of printing `reconciler.1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The version `--version` prints: the package's, and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RECONCILER_COMMIT"),
    ")"
);

/// `reconciler completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Log levels, quietest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and what may become one.
    Warn,
    /// What the reconciler does (the default).
    Info,
    /// Also what it observes and decides.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The level as a tracing filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// `--max-parallel`: a whole number, at least 1.
fn parse_max_parallel(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1: with 0 no step could ever run".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a whole number (at least 1)")),
    }
}

/// `--listen`: `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`, a host name being resolved
/// (its first address is used).
pub fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "`{text}` has no port; write HOST:PORT, e.g. 127.0.0.1:9187 or localhost:9187"
        ));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!(
            "`{text}` is not HOST:PORT (a port is 0 to 65535), e.g. 127.0.0.1:9187 or localhost:9187"
        ));
    }
    match text.to_socket_addrs() {
        Ok(mut addresses) => addresses
            .next()
            .ok_or_else(|| format!("host `{host}` has no address")),
        Err(e) => Err(format!("cannot resolve host `{host}`: {e}")),
    }
}

/// `--at`: an RFC 3339 instant, or a date alone meaning its midnight UTC.
pub fn parse_at(text: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(at);
    }
    match text.parse::<jiff::civil::Date>() {
        Ok(date) if !text.contains(['T', 't', ' ']) => jiff::tz::TimeZone::UTC
            .to_timestamp(date.at(0, 0, 0, 0))
            .map_err(|e| e.to_string()),
        _ => Err(format!(
            "`{text}` is neither an instant (RFC 3339, e.g. 2026-11-27T17:00:00Z) nor a date (e.g. 2026-11-27, its midnight UTC)"
        )),
    }
}

/// `reconciler schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// The kind whose schema to print.
    #[arg(long, value_enum, default_value_t = Kind::BackupPipeline)]
    pub kind: Kind,
}

/// `reconciler crd`.
#[derive(Debug, Args)]
pub struct CrdArgs {
    /// Only this kind's CRD (default: both, as two YAML documents).
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
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
    /// `HOST:PORT`; a host name is resolved.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:19187", value_parser = parse_listen)]
    pub listen: std::net::SocketAddr,
    /// Look at every pipeline at least this often, e.g. `5m`.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub resync: String,
    /// At most this many pipelines run steps at once.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = parse_max_parallel)]
    pub max_parallel: usize,
    /// After SIGTERM, wait at most this long for running steps to stop cleanly.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub shutdown_timeout: String,
    /// /healthz fails once no pass completed for this long (default: 3 resyncs + 1m).
    #[arg(long, value_name = "DURATION")]
    pub stall_after: Option<String>,
    #[command(flatten)]
    /// Fleet mode: several instances coordinated by etcd.
    pub fleet: FleetRunArgs,
}

/// How `run` joins a fleet; without `--fleet` it runs alone and needs no etcd.
#[derive(Debug, Args)]
pub struct FleetRunArgs {
    #[command(flatten)]
    /// How etcd is reached.
    pub etcd: FleetConnectArgs,
    /// This instance's name in the fleet, as `placement.hosts` says it (default:
    /// the host name).
    #[arg(long, value_name = "NAME", requires = "endpoints")]
    pub fleet_name: Option<String>,
    /// How long an owner that stops renewing its etcd lease keeps its pipelines,
    /// e.g. `10s`; at least 2s. A paused or cut-off owner gives them up (and
    /// cancels its running steps) within this.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub fleet_ttl: String,
}

/// How etcd is reached in fleet mode (`run` and `status`).
#[derive(Debug, Args)]
pub struct FleetConnectArgs {
    /// etcd's client URLs, comma-separated (e.g.
    /// `https://etcd1:2379,https://etcd2:2379`): run as one instance of a fleet.
    #[arg(long = "fleet", value_name = "ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// The CA certificate (PEM) that signed etcd's.
    #[arg(long, value_name = "FILE", requires = "endpoints")]
    pub fleet_cacert: Option<PathBuf>,
    /// This client's certificate (PEM), when etcd asks for one.
    #[arg(long, value_name = "FILE", requires = "fleet_key")]
    pub fleet_cert: Option<PathBuf>,
    /// This client's key (PEM).
    #[arg(long, value_name = "FILE", requires = "fleet_cert")]
    pub fleet_key: Option<PathBuf>,
    /// etcd's user; the password comes from `RECONCILER_FLEET_PASSWORD` or
    /// `--fleet-password-file`, never from the command line.
    #[arg(long, value_name = "USER", requires = "endpoints")]
    pub fleet_user: Option<String>,
    /// A file holding etcd's password (its first line).
    #[arg(long, value_name = "FILE", requires = "fleet_user")]
    pub fleet_password_file: Option<PathBuf>,
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
    #[command(flatten)]
    /// With `--fleet`: read every pipeline's owner and status from etcd instead.
    pub fleet: FleetConnectArgs,
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
    /// Evaluate at this instant instead of now (RFC 3339, e.g. 2026-11-27T17:00:00Z,
    /// or a date, 2026-11-27, meaning its midnight UTC): "what will have drifted by Friday".
    #[arg(long, value_name = "RFC3339", value_parser = parse_at)]
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
