//! Fleet mode (`reconciler run --fleet`): several instances load the same specs,
//! and etcd decides which one owns each pipeline. Only the owner starts steps for
//! a pipeline and writes its status to etcd.
//!
//! - [`placement`]: which pipelines an instance campaigns for (pure).
//! - [`ownership`]: the instance's lease, kept alive; one ownership key per
//!   pipeline bound to it; self-fencing when the lease cannot be renewed.
//! - [`guarded`]: every write to etcd, in a transaction that holds only while the
//!   writer still owns the pipeline (the ownership key's create revision and lease).
//! - [`read`]: what `reconciler status --fleet` shows.
//!
//! The runtime asks two things of it: "may I start a step for P now?" and
//! "publish P's status". This module must not decide what a pipeline needs (the
//! planner does), run a step, or read the specs; without `--fleet` none of it runs.

pub mod guarded;
pub mod keys;
pub mod ownership;
pub mod placement;
pub mod read;

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use self::ownership::{FleetHealth, Ownership};

/// How an instance joins the fleet.
#[derive(Clone)]
pub struct FleetConfig {
    /// etcd's client URLs (`http://…` or `https://…`).
    pub endpoints: Vec<String>,
    /// This instance's name: what `placement.hosts` and the ownership keys say.
    pub name: String,
    /// The lease's time to live: how long a silent owner keeps its pipelines.
    pub ttl: Duration,
    /// TLS files, all PEM.
    pub tls: TlsFiles,
    /// etcd's user and password, when etcd has authentication on.
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for FleetConfig {
    // The password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetConfig")
            .field("endpoints", &self.endpoints)
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .field("tls", &self.tls)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// TLS towards etcd: the CA that signed its certificates, and this client's
/// certificate and key when etcd asks for one.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// The CA bundle.
    pub ca: Option<PathBuf>,
    /// The client certificate.
    pub cert: Option<PathBuf>,
    /// The client key.
    pub key: Option<PathBuf>,
}

/// Why the fleet could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A TLS file could not be read.
    #[error("cannot read {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A client certificate without its key, or the other way round.
    #[error("--fleet-cert and --fleet-key go together")]
    HalfIdentity,
    /// The client could not be built.
    #[error("cannot connect to etcd at {endpoints}")]
    Connect {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// etcd's client error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd answered with an error, or not at all.
    #[error("etcd request failed")]
    Request(#[source] etcd_client::Error),
    /// etcd did not answer in time (no quorum, or unreachable).
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
}

/// How long one etcd request may take: a third of the TTL, so a renewal that
/// hangs leaves time for the next before the lease runs out.
pub fn request_timeout(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(500))
}

/// A client for `config`'s etcd (it connects lazily: an etcd that is down now is
/// not an error yet).
pub async fn connect(config: &FleetConfig) -> Result<Client, FleetError> {
    let mut options = ConnectOptions::new()
        .with_timeout(request_timeout(config.ttl))
        .with_connect_timeout(request_timeout(config.ttl))
        // A member cut off from the others says so at once instead of waiting.
        .with_require_leader(true);
    if let Some((user, password)) = &config.user {
        options = options.with_user(user.clone(), password.clone());
    }
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| FleetError::ReadFile {
            path: path.clone(),
            source,
        })
    };
    let tls = &config.tls;
    if tls.ca.is_some() || tls.cert.is_some() {
        let mut t = TlsOptions::new();
        if let Some(ca) = &tls.ca {
            t = t.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => t = t.identity(Identity::from_pem(read(cert)?, read(key)?)),
            (None, None) => {}
            _ => return Err(FleetError::HalfIdentity),
        }
        options = options.with_tls(t);
    }
    Client::connect(&config.endpoints, Some(options))
        .await
        .map_err(|source| FleetError::Connect {
            endpoints: config.endpoints.join(","),
            source,
        })
}

/// Joins the fleet: connects, and starts keeping a lease and campaigning for the
/// pipelines [`Ownership::want`] names. `wake` is told when ownership changes, so
/// the loop looks again at once; everything stops with `shutdown`.
pub async fn join(
    config: FleetConfig,
    wake: mpsc::UnboundedSender<()>,
    shutdown: CancellationToken,
) -> Result<Ownership, FleetError> {
    let client = connect(&config).await?;
    Ok(Ownership::spawn(client, config, wake, shutdown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_never_prints_the_password() {
        let config = FleetConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            name: "annex".to_string(),
            ttl: Duration::from_secs(10),
            tls: TlsFiles::default(),
            user: Some(("reconciler".to_string(), "s3cret".to_string())),
        };
        let printed = format!("{config:?}");
        assert!(printed.contains("reconciler") && !printed.contains("s3cret"));
    }

    #[test]
    fn requests_give_up_within_a_third_of_the_ttl() {
        assert_eq!(
            request_timeout(Duration::from_secs(9)),
            Duration::from_secs(3)
        );
        assert_eq!(
            request_timeout(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
    }
}
