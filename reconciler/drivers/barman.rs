//! barman, driven through its command line with `-f json`.
//!
//! One barman call per fact: `list-backups` answers everything the planner needs
//! about backups (status, end time, size), so observation costs one call. Output is
//! parsed into plain data; anything unexpected becomes a [`BarmanError`], never a
//! guess. Where the command runs is the [`CommandRunner`]'s business.
//!
//! Over 600 lines with the tests of barman's captured outputs (a fifth of it);
//! the parsers sit next to the calls whose output they read.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use serde_json::Value;

use super::command::{CommandError, CommandLine, CommandOutput, OnCancel, RunAs};
use super::placement::{Placement, Placer};
use crate::observed::{Backup, BackupActivity, BackupStatus, CheckItem, WalHealth};
use crate::spec::BarmanSpec;

/// barman's Python start-up alone takes ~0.4 s; a catalogue read that takes a
/// minute means something is stuck.
const QUICK_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Extra time given to `barman backup` beyond its own `--wait-timeout`, for the
/// copy itself to finish and for barman to write its answer.
const BACKUP_GRACE: Duration = Duration::from_secs(300);

/// What can go wrong talking to barman.
#[derive(Debug, thiserror::Error)]
pub enum BarmanError {
    /// The command could not be run.
    #[error("running barman failed")]
    Command(#[source] CommandError),
    /// barman said no.
    #[error("barman {action} failed: {message}")]
    Failed {
        /// What was asked (`list-backups`, `backup`, …).
        action: &'static str,
        /// barman's `_ERROR` messages, or its last words.
        message: String,
    },
    /// Another barman process holds the lock (a backup is already running).
    #[error("barman is busy: {message}")]
    Busy {
        /// barman's words.
        message: String,
    },
    /// barman refused to delete below its minimum redundancy.
    #[error("barman refused to delete backup {backup_id}: {message}")]
    DeleteRefused {
        /// The backup.
        backup_id: String,
        /// barman's warning.
        message: String,
    },
    /// The output was not what barman 3.x prints.
    #[error("unexpected output from barman {action}: {problem}")]
    Unparsable {
        /// The command.
        action: &'static str,
        /// What was wrong with it.
        problem: String,
    },
}

impl BarmanError {
    /// True for errors that mean "wait and look again", not "broken".
    pub fn is_busy(&self) -> bool {
        matches!(self, BarmanError::Busy { .. })
    }
}

/// What the reconciler asks of barman.
#[async_trait]
pub trait BarmanDriver: Send + Sync + std::fmt::Debug {
    /// Every backup of the server.
    async fn list_backups(&self, barman: &BarmanSpec) -> Result<Vec<Backup>, BarmanError>;
    /// Every backup of the server, read now even behind a cache.
    async fn list_backups_uncached(&self, barman: &BarmanSpec) -> Result<Vec<Backup>, BarmanError> {
        self.list_backups(barman).await
    }
    /// Whether a `barman backup` of the server is alive: its lock and the
    /// `pg_basebackup` copies running where barman runs (see [`super::backup_activity`]).
    async fn backup_activity(&self, barman: &BarmanSpec) -> Result<BackupActivity, BarmanError>;
    /// Takes a base backup and waits for it; returns its id.
    async fn take_backup(
        &self,
        barman: &BarmanSpec,
        timeout: Duration,
    ) -> Result<String, BarmanError>;
    /// Deletes one backup.
    async fn delete_backup(&self, barman: &BarmanSpec, backup_id: &str) -> Result<(), BarmanError>;
    /// Closes the primary's current WAL segment (`barman switch-wal`, without
    /// waiting for it): the name of the segment it closed, or `None` when the
    /// primary wrote nothing since its last switch.
    async fn switch_wal(&self, barman: &BarmanSpec) -> Result<Option<String>, BarmanError>;
    /// WAL streaming health, from `barman -f json check` (whose exit status says
    /// nothing useful: it fails before the first backup, barman-facts P8).
    async fn wal_health(&self, barman: &BarmanSpec) -> Result<WalHealth, BarmanError>;
    /// `barman cron`: starts receive-wal when it is not running, archives WAL.
    /// Returns once `check` sees receive-wal running, or after `timeout`.
    async fn cron(&self, barman: &BarmanSpec, timeout: Duration) -> Result<(), BarmanError>;
    /// Drops and re-creates the server's replication slot (receive-wal must be
    /// stopped for the drop; `cron` starts it again).
    async fn reset_slot(&self, barman: &BarmanSpec) -> Result<(), BarmanError>;
    /// The uid and gid of account `name` where barman runs (the owner of what it
    /// recovers).
    async fn account(&self, barman: &BarmanSpec, name: &str) -> Result<RunAs, BarmanError>;
    /// Recovers a backup into `destination`, which must not exist yet.
    async fn recover(
        &self,
        barman: &BarmanSpec,
        backup_id: &str,
        destination: &Path,
        timeout: Duration,
    ) -> Result<(), BarmanError>;
    /// The archived WAL files from `first` on, consecutive, at most `limit`
    /// (`barman get-wal --peek`): it stops at the first one missing. For a history
    /// file, that file alone when archived.
    async fn list_wal(
        &self,
        barman: &BarmanSpec,
        first: &str,
        limit: u32,
    ) -> Result<Vec<String>, BarmanError> {
        let _ = (barman, first, limit);
        Err(BarmanError::Failed {
            action: "get-wal",
            message: "this barman driver cannot list WAL".to_string(),
        })
    }
    /// Copies one archived WAL file into `directory` (as barman sees it), under its
    /// own name (`barman get-wal --output-directory`).
    async fn fetch_wal(
        &self,
        barman: &BarmanSpec,
        name: &str,
        directory: &Path,
    ) -> Result<(), BarmanError> {
        let _ = (barman, name, directory);
        Err(BarmanError::Failed {
            action: "get-wal",
            message: "this barman driver cannot fetch WAL".to_string(),
        })
    }
}

/// barman's command line, where [`Placement::of_barman`] places it.
#[derive(Debug, Clone)]
pub struct BarmanCli {
    placer: Placer,
    program: String,
}

impl BarmanCli {
    /// barman run where `placer` places it: on this host, or by exec in the
    /// container a spec names.
    pub fn new(placer: Placer) -> Self {
        Self {
            placer,
            program: "barman".to_string(),
        }
    }

    /// `barman [-c CONFIG] -f json ACTION …`: the global options must precede the action.
    fn command(&self, barman: &BarmanSpec, action: &'static str, timeout: Duration) -> CommandLine {
        let mut cmd = CommandLine::new(&self.program, timeout);
        if let Some(config) = &barman.config {
            cmd = cmd.arg("-c").arg(config.as_path());
        }
        cmd.args(["-f", "json", action])
    }

    async fn run(
        &self,
        barman: &BarmanSpec,
        cmd: CommandLine,
    ) -> Result<CommandOutput, BarmanError> {
        self.placer
            .runner(&Placement::of_barman(barman))
            .run(&cmd)
            .await
            .map_err(BarmanError::Command)
    }

    /// `barman [-c CONFIG] get-wal …` without `-f json`: `--peek` prints one name a
    /// line only in the console format.
    fn get_wal(&self, barman: &BarmanSpec) -> CommandLine {
        let mut cmd = CommandLine::new(&self.program, QUICK_CALL_TIMEOUT);
        if let Some(config) = &barman.config {
            cmd = cmd.arg("-c").arg(config.as_path());
        }
        cmd.arg("get-wal")
    }

    /// `id -u NAME` / `id -g NAME` where barman runs.
    async fn id(&self, barman: &BarmanSpec, flag: &str, name: &str) -> Result<u32, BarmanError> {
        let cmd = CommandLine::new("id", QUICK_CALL_TIMEOUT)
            .arg(flag)
            .arg(name);
        let out = self.run(barman, cmd).await?;
        out.stdout
            .trim()
            .parse()
            .ok()
            .filter(|_| out.success())
            .ok_or_else(|| BarmanError::Failed {
                action: "id",
                message: format!(
                    "no account `{name}` where barman runs: {}",
                    out.last_words()
                ),
            })
    }
}

#[async_trait]
impl BarmanDriver for BarmanCli {
    async fn wal_health(&self, barman: &BarmanSpec) -> Result<WalHealth, BarmanError> {
        let cmd = self
            .command(barman, "check", QUICK_CALL_TIMEOUT * 4)
            .arg(barman.server.as_str());
        let out = self.run(barman, cmd).await?;
        match parse_check(barman.server.as_str(), &out.stdout) {
            // No answer to read (a missing configuration, an unknown server): what
            // barman said instead is the reason.
            Err(BarmanError::Unparsable { .. }) if !out.success() => Err(failure("check", &out)),
            parsed => parsed,
        }
    }

    async fn cron(&self, barman: &BarmanSpec, timeout: Duration) -> Result<(), BarmanError> {
        // `cron` acts on every server of the configuration, as barman's own
        // every-minute cron job does; there is no per-server form.
        let cmd = self.command(barman, "cron", timeout);
        let out = self.run(barman, cmd).await?;
        if !out.success() {
            return Err(failure("cron", &out));
        }
        // cron starts receive-wal in the background: wait until it is seen running.
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let health = self.wal_health(barman).await?;
            if health.receive_wal_running.as_ref().is_some_and(|c| c.ok) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BarmanError::Failed {
                    action: "cron",
                    message: format!(
                        "receive-wal still not running after barman cron: {}",
                        health
                            .receive_wal_running
                            .map_or("not reported".to_string(), |c| c.hint)
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn reset_slot(&self, barman: &BarmanSpec) -> Result<(), BarmanError> {
        let receive_wal = |flag: &str| {
            self.command(barman, "receive-wal", QUICK_CALL_TIMEOUT * 10)
                .arg(flag)
                .arg(barman.server.as_str())
        };
        let out = self.run(barman, receive_wal("--stop")).await?;
        if !out.success() {
            return Err(failure("receive-wal", &out));
        }
        // pg_receivewal may hold the slot a moment after --stop returned.
        let mut attempts = 0;
        loop {
            let out = self.run(barman, receive_wal("--drop-slot")).await?;
            let words = out.last_words();
            if out.success() || words.contains("does not exist") {
                break;
            }
            attempts += 1;
            if !words.contains("active") || attempts >= 10 {
                return Err(failure("receive-wal", &out));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let out = self.run(barman, receive_wal("--create-slot")).await?;
        if out.success() {
            Ok(())
        } else {
            Err(failure("receive-wal", &out))
        }
    }

    async fn account(&self, barman: &BarmanSpec, name: &str) -> Result<RunAs, BarmanError> {
        if Placement::of_barman(barman) == Placement::Host {
            // On this host: the account database, no process needed.
            return super::fsutil::lookup_account(name).map_err(|e| BarmanError::Failed {
                action: "id",
                message: e.to_string(),
            });
        }
        Ok(RunAs {
            uid: self.id(barman, "-u", name).await?,
            gid: self.id(barman, "-g", name).await?,
        })
    }

    async fn list_backups(&self, barman: &BarmanSpec) -> Result<Vec<Backup>, BarmanError> {
        let cmd = self
            .command(barman, "list-backups", QUICK_CALL_TIMEOUT)
            .arg(barman.server.as_str());
        let out = self.run(barman, cmd).await?;
        if !out.success() {
            return Err(failure("list-backups", &out));
        }
        parse_list_backups(barman.server.as_str(), &out.stdout)
    }

    async fn backup_activity(&self, barman: &BarmanSpec) -> Result<BackupActivity, BarmanError> {
        let server = barman.server.as_str();
        let cmd = self
            .command(barman, "show-server", QUICK_CALL_TIMEOUT)
            .arg(server);
        let out = self.run(barman, cmd).await?;
        if !out.success() {
            return Err(failure("show-server", &out));
        }
        let paths =
            super::backup_activity::parse_show_server(server, &out.stdout).map_err(|problem| {
                BarmanError::Unparsable {
                    action: "show-server",
                    problem,
                }
            })?;
        let probe = CommandLine::new("python3", QUICK_CALL_TIMEOUT)
            .args(["-c", super::backup_activity::PROBE])
            .arg(paths.backup_lock(server))
            .arg(&paths.basebackups_directory);
        let out = self.run(barman, probe).await?;
        if !out.success() {
            return Err(failure("backup-activity probe", &out));
        }
        super::backup_activity::parse_probe(&out.stdout).map_err(|problem| {
            BarmanError::Unparsable {
                action: "backup-activity probe",
                problem,
            }
        })
    }

    async fn take_backup(
        &self,
        barman: &BarmanSpec,
        timeout: Duration,
    ) -> Result<String, BarmanError> {
        let cmd = self
            .command(barman, "backup", timeout + BACKUP_GRACE)
            .arg(barman.server.as_str())
            .args(["--wait", "--wait-timeout"])
            .arg(timeout.as_secs().max(1).to_string())
            // Killing barman mid-backup would orphan pg_basebackup and leave a
            // STARTED entry; let it finish on its own instead.
            .on_cancel(OnCancel::LeaveRunning)
            .pause_at("backup:running");
        let out = self.run(barman, cmd).await?;
        parse_backup_result(&out)
    }

    async fn delete_backup(&self, barman: &BarmanSpec, backup_id: &str) -> Result<(), BarmanError> {
        let cmd = self
            .command(barman, "delete", QUICK_CALL_TIMEOUT * 10)
            .arg(barman.server.as_str())
            .arg(backup_id)
            .pause_at("delete:running");
        let out = self.run(barman, cmd).await?;
        parse_delete_result(backup_id, &out)
    }

    async fn switch_wal(&self, barman: &BarmanSpec) -> Result<Option<String>, BarmanError> {
        // No --force: that needs a superuser (barman 3.4), and pg_switch_wal() does
        // nothing when no WAL was written since the last switch anyway. No
        // --archive: with nothing to switch it waits for *any* new segment, its
        // whole timeout on an idle primary; the caller waits for the closed one.
        let cmd = self
            .command(barman, "switch-wal", QUICK_CALL_TIMEOUT)
            .arg(barman.server.as_str());
        let out = self.run(barman, cmd).await?;
        if out.success() {
            parse_switch_wal(&out.stdout)
        } else {
            Err(failure("switch-wal", &out))
        }
    }

    async fn recover(
        &self,
        barman: &BarmanSpec,
        backup_id: &str,
        destination: &Path,
        timeout: Duration,
    ) -> Result<(), BarmanError> {
        let cmd = self
            .command(barman, "recover", timeout)
            .arg(barman.server.as_str())
            .arg(backup_id)
            .arg(destination)
            .pause_at("recover:running");
        let out = self.run(barman, cmd).await?;
        if out.success() {
            Ok(())
        } else {
            Err(failure("recover", &out))
        }
    }

    async fn list_wal(
        &self,
        barman: &BarmanSpec,
        first: &str,
        limit: u32,
    ) -> Result<Vec<String>, BarmanError> {
        let cmd = self
            .get_wal(barman)
            .arg("--peek")
            .arg(limit.max(1).to_string())
            .arg(barman.server.as_str())
            .arg(first);
        let out = self.run(barman, cmd).await?;
        if !out.success() {
            return Err(failure("get-wal", &out));
        }
        Ok(parse_peek(&out.stdout))
    }

    async fn fetch_wal(
        &self,
        barman: &BarmanSpec,
        name: &str,
        directory: &Path,
    ) -> Result<(), BarmanError> {
        let cmd = self
            .get_wal(barman)
            .arg("--output-directory")
            .arg(directory)
            .arg(barman.server.as_str())
            .arg(name);
        let out = self.run(barman, cmd).await?;
        if out.success() {
            Ok(())
        } else {
            Err(failure("get-wal", &out))
        }
    }
}

/// The names `get-wal --peek` printed, one a line; anything else (a warning barman
/// printed on stdout) is not a WAL file name and is left out.
pub fn parse_peek(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| {
            let name = l.strip_suffix(".history").unwrap_or(l);
            !name.is_empty() && name.len() <= 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .map(String::from)
        .collect()
}

/// The segment `barman -f json switch-wal` says it closed (`"The WAL file
/// 000000010000000000000003 has been closed on server 'montagu'"` in `_INFO`), or
/// `None` when it says no switch was required.
pub fn parse_switch_wal(stdout: &str) -> Result<Option<String>, BarmanError> {
    let value: Value =
        serde_json::from_str(stdout.trim()).map_err(|e| BarmanError::Unparsable {
            action: "switch-wal",
            problem: format!("{e}: {}", stdout.lines().next().unwrap_or("").trim()),
        })?;
    let said: Vec<&str> = value
        .get("_INFO")
        .and_then(Value::as_array)
        .map(|info| info.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for line in &said {
        if let Some(rest) = line.strip_prefix("The WAL file ") {
            let name = rest.split_whitespace().next().unwrap_or("");
            if name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(Some(name.to_string()));
            }
        }
        if line.starts_with("No switch required") || line.starts_with("No switch performed") {
            return Ok(None);
        }
    }
    Err(BarmanError::Unparsable {
        action: "switch-wal",
        problem: format!(
            "neither a closed WAL file nor \"no switch\": {}",
            said.join("; ")
        ),
    })
}

/// The `_ERROR` list of a JSON answer, joined.
fn json_errors(value: &Value) -> Option<String> {
    let errors = value.get("_ERROR")?.as_array()?;
    let text: Vec<&str> = errors.iter().filter_map(Value::as_str).collect();
    (!text.is_empty()).then(|| text.join("; "))
}

fn failure(action: &'static str, out: &CommandOutput) -> BarmanError {
    let message = serde_json::from_str::<Value>(&out.stdout)
        .ok()
        .and_then(|v| json_errors(&v))
        .unwrap_or_else(|| out.last_words());
    if message.contains("Another") && message.contains("process is running") {
        return BarmanError::Busy { message };
    }
    BarmanError::Failed { action, message }
}

/// Parses `barman -f json check SERVER`: `{"SERVER": {"item": {"status", "hint"}}}`.
pub fn parse_check(server: &str, json: &str) -> Result<WalHealth, BarmanError> {
    let unparsable = |problem: String| BarmanError::Unparsable {
        action: "check",
        problem,
    };
    let value: Value =
        serde_json::from_str(json).map_err(|e| unparsable(format!("not JSON ({e})")))?;
    if let Some(message) = json_errors(&value) {
        return Err(BarmanError::Failed {
            action: "check",
            message,
        });
    }
    let items = value
        .get(server)
        .and_then(Value::as_object)
        .ok_or_else(|| unparsable(format!("no `{server}` object")))?;
    let item = |key: &str| {
        let entry = items.get(key)?;
        Some(CheckItem {
            ok: entry.get("status").and_then(Value::as_str) == Some("OK"),
            hint: entry
                .get("hint")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    };
    Ok(WalHealth {
        receive_wal_running: item("receive_wal_running"),
        replication_slot: item("replication_slot"),
        postgresql: item("postgresql"),
        postgresql_streaming: item("postgresql_streaming"),
        archiver_errors: item("archiver_errors"),
        wal_maximum_age: item("wal_maximum_age"),
    })
}

/// Parses `barman -f json list-backups SERVER`: `{"SERVER": [ {...}, … ]}`.
pub fn parse_list_backups(server: &str, json: &str) -> Result<Vec<Backup>, BarmanError> {
    let unparsable = |problem: String| BarmanError::Unparsable {
        action: "list-backups",
        problem,
    };
    let value: Value =
        serde_json::from_str(json).map_err(|e| unparsable(format!("not JSON ({e})")))?;
    if let Some(message) = json_errors(&value) {
        return Err(BarmanError::Failed {
            action: "list-backups",
            message,
        });
    }
    let entries = match value.get(server) {
        Some(Value::Array(entries)) => entries,
        // barman prints `{}` for a server without backups in some versions.
        None if value.as_object().is_some_and(|o| o.is_empty()) => return Ok(Vec::new()),
        Some(_) => return Err(unparsable(format!("`{server}` is not a list"))),
        None => return Err(unparsable(format!("no entry for server `{server}`"))),
    };
    entries
        .iter()
        .map(|entry| {
            let id = entry
                .get("backup_id")
                .and_then(Value::as_str)
                .ok_or_else(|| unparsable("an entry has no backup_id".into()))?;
            let status = entry
                .get("status")
                .and_then(Value::as_str)
                .map(BackupStatus::from_barman)
                .ok_or_else(|| unparsable(format!("backup {id} has no status")))?;
            let end_time = match entry.get("end_time_timestamp") {
                None | Some(Value::Null) => None,
                Some(v) => Some(parse_epoch(v).ok_or_else(|| {
                    unparsable(format!(
                        "backup {id} has an unreadable end_time_timestamp {v}"
                    ))
                })?),
            };
            let size_bytes = entry.get("size_bytes").and_then(Value::as_u64);
            Ok(Backup {
                id: id.to_string(),
                status,
                end_time,
                size_bytes,
            })
        })
        .collect()
}

/// barman prints epoch seconds as a string (`"1795459022"`); accept a number too.
fn parse_epoch(value: &Value) -> Option<Timestamp> {
    let seconds = match value {
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    if !seconds.is_finite() {
        return None;
    }
    Timestamp::from_second(seconds.trunc() as i64).ok()
}

/// Parses `barman -f json backup SERVER --wait`: the backup's info, plus `_ERROR` on failure.
pub fn parse_backup_result(out: &CommandOutput) -> Result<String, BarmanError> {
    let value: Option<Value> = serde_json::from_str(&out.stdout).ok();
    let status = value
        .as_ref()
        .and_then(|v| v.get("status"))
        .and_then(Value::as_str);
    let id = value
        .as_ref()
        .and_then(|v| v.get("backup_id"))
        .and_then(Value::as_str);
    match (out.success(), status, id) {
        (true, Some("DONE"), Some(id)) => Ok(id.to_string()),
        (_, Some("FAILED"), id) => {
            let detail = value
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(Value::as_str)
                .map(String::from)
                .or_else(|| value.as_ref().and_then(json_errors))
                .unwrap_or_else(|| out.last_words());
            Err(BarmanError::Failed {
                action: "backup",
                message: format!("backup {} FAILED: {detail}", id.unwrap_or("(unknown id)")),
            })
        }
        (true, Some(other), Some(id)) => Err(BarmanError::Failed {
            action: "backup",
            message: format!("backup {id} ended with status {other}, not DONE"),
        }),
        (true, _, _) => Err(BarmanError::Unparsable {
            action: "backup",
            problem: "no backup_id and status in its answer".into(),
        }),
        (false, _, _) => Err(failure("backup", out)),
    }
}

/// Parses `barman -f json delete SERVER ID`.
pub fn parse_delete_result(backup_id: &str, out: &CommandOutput) -> Result<(), BarmanError> {
    if out.success() {
        return Ok(());
    }
    let value: Option<Value> = serde_json::from_str(&out.stdout).ok();
    let warning = value
        .as_ref()
        .and_then(|v| v.get("_WARNING"))
        .and_then(Value::as_array)
        .and_then(|w| {
            w.iter()
                .filter_map(Value::as_str)
                .find(|m| m.contains("minimum redundancy"))
        })
        .map(String::from);
    match warning {
        Some(message) => Err(BarmanError::DeleteRefused {
            backup_id: backup_id.to_string(),
            message,
        }),
        None => Err(failure("delete", out)),
    }
}

/// A barman catalogue: (config file, server).
type CatalogueKey = (Option<String>, Option<std::path::PathBuf>, String);

fn catalogue_key(barman: &BarmanSpec) -> CatalogueKey {
    (
        barman.container.as_ref().map(|c| c.to_string()),
        barman.config.as_ref().map(|c| c.as_path().to_path_buf()),
        barman.server.to_string(),
    )
}

/// One server's catalogue for the pass: filled by the first look, shared by the rest.
type CatalogueCell = Arc<tokio::sync::OnceCell<Vec<Backup>>>;

/// Remembers `list-backups` (and `check`) answers for the length of one pass, so that
/// pipelines sharing a barman server cost one barman call of each per pass, not one each. Everything
/// else goes straight through; executing steps never goes through a cache.
///
/// Pipelines are observed at once, so two looks at one server can overlap: the
/// second waits for the first's answer instead of asking barman again. A failed
/// look is not remembered: the next pipeline of that server asks again.
#[derive(Debug)]
pub struct PassCache {
    inner: Arc<dyn BarmanDriver>,
    answers: std::sync::Mutex<std::collections::HashMap<CatalogueKey, CatalogueCell>>,
    checks: std::sync::Mutex<std::collections::HashMap<CatalogueKey, CheckCell>>,
}

/// One server's `barman check` for the pass, shared like its catalogue.
type CheckCell = Arc<tokio::sync::OnceCell<WalHealth>>;

/// The cell of `key` in `map`, made on first use; `None` if the map's lock is poisoned.
fn cell_of<T>(
    map: &std::sync::Mutex<std::collections::HashMap<CatalogueKey, Arc<tokio::sync::OnceCell<T>>>>,
    key: CatalogueKey,
) -> Option<Arc<tokio::sync::OnceCell<T>>> {
    // Held only to find the cell, never across barman's call.
    Some(map.lock().ok()?.entry(key).or_default().clone())
}

impl PassCache {
    /// A fresh cache in front of `inner`.
    pub fn new(inner: Arc<dyn BarmanDriver>) -> Self {
        Self {
            inner,
            answers: std::sync::Mutex::default(),
            checks: std::sync::Mutex::default(),
        }
    }
}

#[async_trait]
impl BarmanDriver for PassCache {
    async fn list_backups(&self, barman: &BarmanSpec) -> Result<Vec<Backup>, BarmanError> {
        let Some(cell) = cell_of(&self.answers, catalogue_key(barman)) else {
            return self.inner.list_backups(barman).await;
        };
        cell.get_or_try_init(|| self.inner.list_backups(barman))
            .await
            .cloned()
    }

    async fn backup_activity(&self, barman: &BarmanSpec) -> Result<BackupActivity, BarmanError> {
        self.inner.backup_activity(barman).await
    }

    async fn list_backups_uncached(&self, barman: &BarmanSpec) -> Result<Vec<Backup>, BarmanError> {
        self.inner.list_backups(barman).await
    }

    async fn take_backup(
        &self,
        barman: &BarmanSpec,
        timeout: Duration,
    ) -> Result<String, BarmanError> {
        self.inner.take_backup(barman, timeout).await
    }

    async fn delete_backup(&self, barman: &BarmanSpec, backup_id: &str) -> Result<(), BarmanError> {
        self.inner.delete_backup(barman, backup_id).await
    }

    async fn wal_health(&self, barman: &BarmanSpec) -> Result<WalHealth, BarmanError> {
        let Some(cell) = cell_of(&self.checks, catalogue_key(barman)) else {
            return self.inner.wal_health(barman).await;
        };
        cell.get_or_try_init(|| self.inner.wal_health(barman))
            .await
            .cloned()
    }

    async fn cron(&self, barman: &BarmanSpec, timeout: Duration) -> Result<(), BarmanError> {
        self.inner.cron(barman, timeout).await
    }

    async fn reset_slot(&self, barman: &BarmanSpec) -> Result<(), BarmanError> {
        self.inner.reset_slot(barman).await
    }

    async fn account(&self, barman: &BarmanSpec, name: &str) -> Result<RunAs, BarmanError> {
        self.inner.account(barman, name).await
    }

    async fn switch_wal(&self, barman: &BarmanSpec) -> Result<Option<String>, BarmanError> {
        self.inner.switch_wal(barman).await
    }

    async fn recover(
        &self,
        barman: &BarmanSpec,
        backup_id: &str,
        destination: &Path,
        timeout: Duration,
    ) -> Result<(), BarmanError> {
        self.inner
            .recover(barman, backup_id, destination, timeout)
            .await
    }

    async fn list_wal(
        &self,
        barman: &BarmanSpec,
        first: &str,
        limit: u32,
    ) -> Result<Vec<String>, BarmanError> {
        self.inner.list_wal(barman, first, limit).await
    }

    async fn fetch_wal(
        &self,
        barman: &BarmanSpec,
        name: &str,
        directory: &Path,
    ) -> Result<(), BarmanError> {
        self.inner.fetch_wal(barman, name, directory).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn switch_wal_names_the_closed_segment_or_none() {
        let closed = r#"{"_INFO": ["The WAL file 00000001000000000000002A has been closed on server 'montagu'"]}"#;
        assert_eq!(
            super::parse_switch_wal(closed).unwrap().as_deref(),
            Some("00000001000000000000002A")
        );
        let idle = r#"{"_INFO": ["No switch required for server 'montagu'"]}"#;
        assert_eq!(super::parse_switch_wal(idle).unwrap(), None);
        assert!(super::parse_switch_wal(r#"{"_INFO": ["something else"]}"#).is_err());
        assert!(super::parse_switch_wal("not json").is_err());
    }

    use super::*;

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/barman-3.4")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn check_items_are_read_by_key_whatever_the_exit_code() {
        let healthy = parse_check("montagu", &fixture("check-after-backup.json")).unwrap();
        assert!(healthy.receive_wal_running.unwrap().ok);
        assert!(healthy.replication_slot.unwrap().ok);
        let stopped = parse_check("montagu", &fixture("check-receive-wal-stopped.json")).unwrap();
        assert!(!stopped.receive_wal_running.unwrap().ok);
        let slot = stopped.replication_slot.unwrap();
        assert!(!slot.ok);
        assert!(slot.hint.contains("not active"), "{}", slot.hint);
        let down = parse_check("montagu", &fixture("check-postgres-down.json")).unwrap();
        assert!(!down.postgresql.unwrap().ok);
        assert_eq!(down.postgresql_streaming, None, "barman omits it then");
        assert!(parse_check("other", &fixture("check-after-backup.json")).is_err());
        assert!(parse_check("montagu", "{\"montagu\": {\"receive_wal").is_err());
    }

    fn output(code: i32, stdout: String) -> CommandOutput {
        CommandOutput {
            code: Some(code),
            signal: None,
            stdout,
            stderr: String::new(),
        }
    }

    #[test]
    fn peek_keeps_wal_and_history_names_only() {
        let out = "000000010000000000000045\n000000010000000000000046\n00000002.history\nWARNING: something\n\n";
        assert_eq!(
            parse_peek(out),
            vec![
                "000000010000000000000045",
                "000000010000000000000046",
                "00000002.history"
            ]
        );
    }

    #[test]
    fn list_backups_reads_done_entries_with_end_times() {
        let backups = parse_list_backups(
            "montagu",
            &fixture("list-backups-during-running-backup.json"),
        )
        .unwrap();
        assert_eq!(backups.len(), 3);
        assert_eq!(backups[0].status, BackupStatus::Started);
        assert_eq!(backups[0].end_time, None);
        assert_eq!(backups[1].id, "20261123T183702");
        assert_eq!(backups[1].status, BackupStatus::Done);
        assert_eq!(
            backups[1].end_time,
            Some(Timestamp::from_second(1_795_459_022).unwrap())
        );
        assert_eq!(backups[1].size_bytes, Some(23_248_661));
    }

    #[test]
    fn list_backups_reads_failed_entries() {
        let backups =
            parse_list_backups("montagu", &fixture("list-backups-with-failed.json")).unwrap();
        assert_eq!(backups[0].status, BackupStatus::Failed);
        assert!(backups[1..].iter().all(|b| b.status == BackupStatus::Done));
    }

    #[test]
    fn list_backups_of_all_fixtures_parse() {
        for name in [
            "list-backups-1.json",
            "list-backups-all.json",
            "list-backups-4-big.json",
            "list-backups-4-before-cron.json",
            "list-backups-postgres-down.json",
        ] {
            let backups = parse_list_backups("montagu", &fixture(name)).unwrap();
            assert!(!backups.is_empty(), "{name}");
        }
    }

    #[test]
    fn list_backups_rejects_truncated_and_foreign_output() {
        let full = fixture("list-backups-with-failed.json");
        let truncated = &full[..full.len() / 2];
        assert!(matches!(
            parse_list_backups("montagu", truncated),
            Err(BarmanError::Unparsable { .. })
        ));
        assert!(matches!(
            parse_list_backups("other", &full),
            Err(BarmanError::Unparsable { .. })
        ));
        assert!(matches!(
            parse_list_backups("montagu", r#"{"montagu": [{"status": "DONE"}]}"#),
            Err(BarmanError::Unparsable { .. })
        ));
        assert!(matches!(
            parse_list_backups(
                "montagu",
                r#"{"montagu": [{"backup_id": "x", "status": "DONE", "end_time_timestamp": "soon"}]}"#
            ),
            Err(BarmanError::Unparsable { .. })
        ));
    }

    #[test]
    fn unknown_statuses_are_kept_as_other() {
        let backups = parse_list_backups(
            "montagu",
            r#"{"montagu": [{"backup_id": "x", "status": "SYNCING"}]}"#,
        )
        .unwrap();
        assert_eq!(backups[0].status, BackupStatus::Other("SYNCING".into()));
    }

    #[test]
    fn backup_result_gives_the_new_id() {
        assert_eq!(
            parse_backup_result(&output(0, fixture("backup-wait.json"))).unwrap(),
            "20261123T183702"
        );
    }

    #[test]
    fn failed_backup_reports_barmans_error() {
        let err = parse_backup_result(&output(1, fixture("backup-failed.json"))).unwrap_err();
        assert!(
            err.to_string()
                .contains("20261123T184649 FAILED: failure copying files"),
            "{err}"
        );
    }

    #[test]
    fn concurrent_backup_is_busy_not_failed() {
        let err =
            parse_backup_result(&output(1, fixture("backup-concurrent-error.json"))).unwrap_err();
        assert!(err.is_busy(), "{err}");
    }

    #[test]
    fn postgres_down_is_a_failure() {
        let err = parse_backup_result(&output(1, fixture("backup-postgres-down-error.json")))
            .unwrap_err();
        assert!(!err.is_busy());
        assert!(
            err.to_string().contains("Impossible to start the backup"),
            "{err}"
        );
    }

    #[test]
    fn delete_refused_by_minimum_redundancy_is_recognised() {
        let err = parse_delete_result(
            "20261123T183849",
            &output(1, fixture("delete-min-redundancy-refused.json")),
        )
        .unwrap_err();
        match err {
            BarmanError::DeleteRefused { message, .. } => {
                assert!(message.contains("minimum redundancy = 1"))
            }
            other => panic!("{other}"),
        }
        assert!(parse_delete_result("x", &output(0, fixture("delete-oldest.json"))).is_ok());
    }
}
