//! Fleet mode against a real etcd: three members of Debian's `etcd` on loopback
//! ports (started here, killed by PID), two or three `reconciler run --fleet`
//! instances over the same specs and the same real barman. Each instance appends
//! the steps it starts and ends to its own journal (`RECONCILER_STEP_JOURNAL`),
//! so the tests can tell who ran what when.
//!
//! TTLs are short (3 s) so the whole file stays within CI's budget; each test has
//! its own cluster, so a test that kills members disturbs no other.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestPipeline, free_port};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reconciler::fleet::guarded::{self, Guard, Outcome};
use reconciler::fleet::{FleetConfig, TlsFiles, keys};

const TTL_SECS: u64 = 3;

/// One etcd member: its process, ports and data directory.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// Three etcd members on 127.0.0.1, each killed by its PID when dropped.
struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

impl Etcd {
    fn up() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (0..3)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let mut etcd = Etcd { dir, members };
        for i in 0..3 {
            etcd.start(i);
        }
        etcd.wait_healthy(&[0, 1, 2]);
        etcd
    }

    fn cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts (or restarts, on its old data directory) member `i`.
    fn start(&mut self, i: usize) {
        let cluster = self.cluster();
        let data = self.dir.path().join(&self.members[i].name);
        let log = std::fs::File::create(self.dir.path().join(format!("m{i}.log"))).unwrap();
        let m = &mut self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "reconciler-fleet-test"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (apt-get install etcd-server)");
        m.child = Some(child);
    }

    fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client)
    }

    fn endpoints(&self) -> String {
        (0..3)
            .map(|i| self.endpoint(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn etcdctl(&self, endpoints: &str, args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoints, "--command-timeout=2s"])
            .args(args)
            .output()
            .expect("etcdctl (apt-get install etcd-client)")
    }

    fn wait_healthy(&self, members: &[usize]) {
        let start = Instant::now();
        for &i in members {
            while !self
                .etcdctl(&self.endpoint(i), &["endpoint", "health"])
                .status
                .success()
            {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "etcd member {i} never became healthy"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// The index of the Raft leader among the running members.
    fn leader(&self) -> usize {
        let live: Vec<usize> = (0..3)
            .filter(|&i| self.members[i].child.is_some())
            .collect();
        let eps: Vec<String> = live.iter().map(|&i| self.endpoint(i)).collect();
        let out = self.etcdctl(&eps.join(","), &["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for (n, s) in v.as_array().unwrap().iter().enumerate() {
            if s["Status"]["header"]["member_id"] == s["Status"]["leader"] {
                return live[n];
            }
        }
        panic!("no leader among {eps:?}: {v}");
    }

    /// The owner of `pipeline` as etcd says (empty: nobody).
    fn owner(&self, pipeline: &str) -> String {
        let out = self.etcdctl(
            &self.endpoints(),
            &["get", &keys::owner(pipeline), "--print-value-only"],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..3 {
            self.stop(i);
        }
    }
}

/// One `reconciler run --fleet` process.
struct Instance {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    journal: PathBuf,
    listen: String,
    _state: tempfile::TempDir,
}

impl Instance {
    fn start(name: &str, endpoints: &str, specs: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(name, endpoints, specs, env, &[])
    }

    /// [`Instance::start`] with more arguments for `run` (TLS, a user).
    fn start_with(
        name: &str,
        endpoints: &str,
        specs: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        let state = tempfile::tempdir().unwrap();
        let log = state.path().join("log");
        let journal = state.path().join("journal");
        let listen = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args(["run", "--fleet", endpoints, "--fleet-name", name])
            .args(["--fleet-ttl", &format!("{TTL_SECS}s"), "--resync", "2s"])
            .args(["--listen", &listen, "--specs"])
            .arg(specs)
            .arg("--state-dir")
            .arg(state.path())
            .args(args)
            .env("RECONCILER_LOG", "info")
            .env("RECONCILER_STEP_JOURNAL", &journal)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Instance {
            name: name.to_string(),
            child: Some(child),
            log,
            journal,
            listen,
            _state: state,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, text: &str, limit: Duration) {
        let start = Instant::now();
        while !self.log().contains(text) {
            assert!(
                start.elapsed() < limit,
                "{} never logged `{text}`:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the instance's `/status` says `text` (e.g. what it waits on).
    fn wait_status(&self, text: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            let (_, body) = self.get("/status");
            if body.contains(text) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "{}'s status never said `{text}`: {body}\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// (event, unix ms, pipeline, step) per journal line.
    fn journal(&self) -> Vec<(String, i64, String, String)> {
        std::fs::read_to_string(&self.journal)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (
                    f[0].to_string(),
                    f[1].parse().unwrap(),
                    f[2].to_string(),
                    f[3].to_string(),
                )
            })
            .collect()
    }

    fn starts(&self, pipeline: &str) -> Vec<i64> {
        self.journal()
            .into_iter()
            .filter(|(e, _, p, _)| e == "start" && p == pipeline)
            .map(|(_, at, _, _)| at)
            .collect()
    }

    fn get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(&self.listen) else {
            return (0, String::new());
        };
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let code = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, out)
    }

    fn kill(&mut self, signal: Signal) {
        let _ = kill(self.pid(), signal);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn pipeline_name(p: &TestPipeline) -> String {
    p.name.replace('_', "-")
}

/// A directory holding the specs of `pipelines`, the i-th placed on `hosts[i]`
/// when that is given.
fn shared_specs(dir: &Path, pipelines: &[(&TestPipeline, Option<&str>)]) {
    for (p, host) in pipelines {
        let mut text = std::fs::read_to_string(p.specs.join("pipeline.yaml")).unwrap();
        if let Some(host) = host {
            text.push_str(&format!("  placement:\n    hosts: [{host}]\n"));
        }
        std::fs::write(dir.join(format!("{}.yaml", p.name)), text).unwrap();
    }
}

/// `reconciler status --fleet`: exit code and output.
fn fleet_status(endpoints: &str, format: &str) -> (i32, String) {
    let (code, out, _) = fleet_status_with(endpoints, format, &[], &[]);
    (code, out)
}

/// `reconciler status --fleet` with more arguments and environment: exit code,
/// stdout and stderr.
fn fleet_status_with(
    endpoints: &str,
    format: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["status", "--fleet", endpoints, "--output", format])
        .args(args)
        .env_remove("RECONCILER_FLEET_PASSWORD")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until `status --fleet` says every pipeline is owned and Ready.
fn wait_converged(endpoints: &str, instances: &[&Instance]) {
    let start = Instant::now();
    loop {
        let (code, out) = fleet_status(endpoints, "text");
        if code == 0 {
            eprintln!("converged:\n{out}");
            return;
        }
        if start.elapsed() > Duration::from_secs(300) {
            for i in instances {
                eprintln!("--- {} log\n{}", i.name, i.log());
            }
            panic!("never converged:\n{out}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// No two instances ran steps of `pipeline` at overlapping times. An instance
/// killed mid-step has a start without an end: its step lasted until `killed_at`.
fn assert_never_concurrent(pipeline: &str, instances: &[&Instance], killed_at: Option<i64>) {
    let mut spans: Vec<(i64, i64, String)> = Vec::new();
    for i in instances {
        let mut open: Option<i64> = None;
        for (event, at, p, _) in i.journal() {
            if p != pipeline {
                continue;
            }
            match event.as_str() {
                "start" => open = Some(at),
                _ => {
                    if let Some(s) = open.take() {
                        spans.push((s, at, i.name.clone()));
                    }
                }
            }
        }
        if let Some(s) = open {
            spans.push((s, killed_at.unwrap_or(i64::MAX), i.name.clone()));
        }
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[0].2 == w[1].2 || w[0].1 <= w[1].0,
            "{pipeline}: {} and {} ran steps at once: {spans:?}",
            w[0].2,
            w[1].2
        );
    }
}

#[test]
fn each_pipeline_runs_on_one_instance_and_a_pinned_one_stays_on_its_host() {
    let etcd = Etcd::up();
    let free = TestPipeline::new("fleet_free", "{keep: 2}");
    let pinned = TestPipeline::new("fleet_pinned", "{keep: 2}");
    let specs = tempfile::tempdir().unwrap();
    shared_specs(specs.path(), &[(&free, None), (&pinned, Some("annex"))]);
    let eps = etcd.endpoints();
    let a = Instance::start("production", &eps, specs.path(), &[]);
    let b = Instance::start("annex", &eps, specs.path(), &[]);
    let c = Instance::start("spare", &eps, specs.path(), &[]);
    wait_converged(&eps, &[&a, &b, &c]);

    for p in [&free, &pinned] {
        let name = pipeline_name(p);
        let ran: Vec<&str> = [&a, &b, &c]
            .iter()
            .filter(|i| !i.starts(&name).is_empty())
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(ran.len(), 1, "{name} ran on {ran:?}");
        assert_never_concurrent(&name, &[&a, &b, &c], None);
    }
    assert!(
        !b.starts(&pipeline_name(&pinned)).is_empty(),
        "the pinned pipeline ran on its host"
    );
    assert_eq!(etcd.owner(&pipeline_name(&pinned)), "annex");

    let (_, json) = fleet_status(&eps, "json");
    let records: serde_json::Value = serde_json::from_str(&json).unwrap();
    for r in records.as_array().unwrap() {
        assert!(r["owner"].is_string(), "{r}");
        assert_eq!(r["owner"], r["published_by"], "{r}");
    }
    let (code, metrics) = b.get("/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("reconciler_fleet_etcd_up 1"), "{metrics}");
    assert!(
        metrics.contains("reconciler_fleet_owned_pipelines"),
        "{metrics}"
    );
}

#[test]
fn a_killed_owner_is_replaced_within_two_ttls_and_the_pipeline_converges() {
    let etcd = Etcd::up();
    let p = TestPipeline::new("fleet_kill", "{keep: 2}");
    let name = pipeline_name(&p);
    let eps = etcd.endpoints();
    // The first instance alone, so it owns the pipeline; it stops mid-recovery.
    let mut a = Instance::start(
        "a",
        &eps,
        &p.specs,
        &[("RECONCILER_PAUSE_AT", "recover:staged")],
    );
    a.wait_log("paused at recover:staged", Duration::from_secs(240));
    let b = Instance::start("b", &eps, &p.specs, &[]);
    b.wait_status("owned by a", Duration::from_secs(60));
    assert_eq!(etcd.owner(&name), "a");

    a.kill(Signal::SIGKILL);
    let killed_at = now_ms();
    let killed = Instant::now();
    while etcd.owner(&name) != "b" {
        assert!(
            killed.elapsed() < Duration::from_secs(2 * TTL_SECS + 1),
            "b did not take over within 2×TTL + 1 s:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_converged(&eps, &[&a, &b]);
    assert!(b.starts(&name).iter().all(|&s| s > killed_at));
    assert!(!b.starts(&name).is_empty(), "b ran the rest");
    assert_never_concurrent(&name, &[&a, &b], Some(killed_at));
}

#[test]
fn a_paused_owner_is_fenced_and_starts_nothing_when_it_resumes() {
    let etcd = Etcd::up();
    let p = TestPipeline::new("fleet_stop", "{keep: 2}");
    let name = pipeline_name(&p);
    let eps = etcd.endpoints();
    let mut a = Instance::start(
        "a",
        &eps,
        &p.specs,
        &[("RECONCILER_PAUSE_AT", "recover:staged")],
    );
    a.wait_log("paused at recover:staged", Duration::from_secs(240));
    let b = Instance::start("b", &eps, &p.specs, &[]);
    b.wait_status("owned by a", Duration::from_secs(60));

    a.kill(Signal::SIGSTOP);
    let stopped = Instant::now();
    while etcd.owner(&name) != "b" {
        assert!(stopped.elapsed() < Duration::from_secs(2 * TTL_SECS + 1));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Past its TTL b owns the pipeline, but the paused a still holds the volume's
    // lock (it is on the same host): b's worker is refused, not run beside a.
    b.wait_log("is working on", Duration::from_secs(60));
    assert!(b.starts(&name).is_empty());
    let resumed_at = now_ms();
    a.kill(Signal::SIGCONT);
    a.wait_log("lost ownership", Duration::from_secs(10));
    // It fenced itself by its own clock (the lease ran out while it was stopped),
    // before etcd had to reject anything it wrote.
    let log = a.log();
    assert!(
        log.contains("lease ran out") || log.contains("says the lease expired"),
        "{log}"
    );
    wait_converged(&eps, &[&a, &b]);
    assert!(
        a.starts(&name).iter().all(|&s| s < resumed_at),
        "the fenced instance started a step after it resumed: {:?}",
        a.journal()
    );
    assert_eq!(etcd.owner(&name), "b");
    assert!(!b.starts(&name).is_empty(), "b finished the work");
    assert_never_concurrent(&name, &[&a, &b], None);
    // The status in etcd is b's: a's resumed pass published nothing over it.
    let (_, json) = fleet_status(&eps, "json");
    assert!(json.contains("\"published_by\": \"b\""), "{json}");
}

/// The guard itself, without a reconciler: once another instance owns the
/// pipeline, a write guarded by the former owner's key is refused by etcd.
#[tokio::test]
async fn etcd_rejects_a_write_guarded_by_a_former_owners_key() {
    let etcd = Etcd::up();
    let config = |name: &str| FleetConfig {
        endpoints: vec![etcd.endpoint(0), etcd.endpoint(1), etcd.endpoint(2)],
        name: name.to_string(),
        ttl: Duration::from_secs(TTL_SECS),
        tls: TlsFiles::default(),
        user: None,
    };
    let client = reconciler::fleet::connect(&config("a")).await.unwrap();
    let mut kv = client.kv_client();
    let mut lease = client.lease_client();
    let put_owner = |lease_id: i64, owner: &'static str| {
        let mut kv = kv.clone();
        async move {
            kv.put(
                keys::owner("pg"),
                owner,
                Some(etcd_client::PutOptions::new().with_lease(lease_id)),
            )
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision()
        }
    };
    let first = lease.grant(TTL_SECS as i64, None).await.unwrap().id();
    let created = put_owner(first, "a").await;
    let old = Guard {
        create_revision: created,
        lease: first,
    };
    let t = Duration::from_secs(2);
    let write = |g: Guard| guarded::put(&client, "pg", g, keys::status("pg"), b"{}".to_vec(), t);
    assert_eq!(write(old).await.unwrap(), Outcome::Written);
    // a's lease runs out (as while it was paused); b takes the pipeline.
    lease.revoke(first).await.unwrap();
    let second = lease.grant(TTL_SECS as i64, None).await.unwrap().id();
    let created = put_owner(second, "b").await;
    assert_eq!(write(old).await.unwrap(), Outcome::Rejected);
    let new = Guard {
        create_revision: created,
        lease: second,
    };
    assert_eq!(write(new).await.unwrap(), Outcome::Written);
    kv.delete(keys::owner("pg"), None).await.unwrap();
}

#[test]
fn without_quorum_no_step_starts_and_a_lost_leader_does_not_stop_the_work() {
    let mut etcd = Etcd::up();
    let p = TestPipeline::new("fleet_quorum", "{keep: 2}");
    let name = pipeline_name(&p);
    let eps = etcd.endpoints();
    // Two of three members down: no quorum.
    etcd.stop(1);
    etcd.stop(2);
    let a = Instance::start("a", &eps, &p.specs, &[]);
    let b = Instance::start("b", &eps, &p.specs, &[]);
    // Several TTLs without quorum: nothing starts, and both say why.
    let start = Instant::now();
    loop {
        let (code, body) = a.get("/healthz");
        if code == 503 && body.contains("etcd unreachable") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "healthz: {code} {body}\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3 * TTL_SECS));
    let (_, metrics) = b.get("/metrics");
    assert!(metrics.contains("reconciler_fleet_etcd_up 0"), "{metrics}");
    assert!(a.journal().is_empty() && b.journal().is_empty());

    // Quorum returns: the work starts.
    etcd.start(1);
    etcd.wait_healthy(&[0, 1]);
    let quorum_back = now_ms();
    let start = Instant::now();
    while a.starts(&name).is_empty() && b.starts(&name).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(200));
    }
    // The Raft leader dies while the pipeline is being worked on: 2 of 3 remain
    // once the third is back, and the work goes on.
    etcd.start(2);
    etcd.wait_healthy(&[0, 1, 2]);
    let leader = etcd.leader();
    etcd.stop(leader);
    let live: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| etcd.endpoint(i))
        .collect();
    wait_converged(&live.join(","), &[&a, &b]);
    for i in [&a, &b] {
        assert!(i.starts(&name).iter().all(|&s| s > quorum_back));
    }
    assert_never_concurrent(&name, &[&a, &b], None);
}

/// One etcd member as a production fleet would have it: clients over TLS only,
/// each with a certificate signed by the fleet's CA, and etcd's authentication
/// on, with a user `reconciler` that may read and write only under
/// `/reconciler/`. Certificates come from `openssl`, made afresh per test.
struct SecureEtcd {
    dir: tempfile::TempDir,
    endpoint: String,
    child: Child,
}

impl SecureEtcd {
    const PASSWORD: &'static str = "fleet-s3cret";

    fn up() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: String| {
            let mut cmd = Command::new("openssl");
            cmd.args(args.split_whitespace()).current_dir(d);
            common::run_checked(cmd, &format!("openssl {args}"));
        };
        openssl(
            "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=fleet-test-CA \
             -keyout ca.key -out ca.pem"
                .into(),
        );
        for (who, cn, usage) in [
            ("server", "127.0.0.1", "serverAuth"),
            ("client", "reconciler", "clientAuth"),
        ] {
            openssl(format!(
                "req -newkey rsa:2048 -nodes -subj /CN={cn} \
                 -addext subjectAltName=IP:127.0.0.1,DNS:{who} -addext extendedKeyUsage={usage} \
                 -keyout {who}.key -out {who}.csr"
            ));
            openssl(format!(
                "x509 -req -in {who}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
                 -copy_extensions copyall -out {who}.pem"
            ));
        }
        let endpoint = format!("https://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let child = Command::new("etcd")
            .args(["--name", "secure", "--data-dir"])
            .arg(d.join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("secure={peer}")])
            .arg("--cert-file")
            .arg(d.join("server.pem"))
            .arg("--key-file")
            .arg(d.join("server.key"))
            .arg("--trusted-ca-file")
            .arg(d.join("ca.pem"))
            .arg("--client-cert-auth")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("etcd.log")).unwrap())
            .spawn()
            .expect("etcd (apt-get install etcd-server)");
        let etcd = SecureEtcd {
            dir,
            endpoint,
            child,
        };
        let start = Instant::now();
        while !etcd.etcdctl(None, &["endpoint", "health"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "etcd never became healthy: {}",
                std::fs::read_to_string(etcd.dir.path().join("etcd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let password = format!("reconciler:{}", Self::PASSWORD);
        for args in [
            &["user", "add", "root:root-pw"][..],
            &["user", "add", &password],
            &["role", "add", "fleet"],
            &[
                "role",
                "grant-permission",
                "fleet",
                "--prefix=true",
                "readwrite",
                keys::PREFIX,
            ],
            &["user", "grant-role", "reconciler", "fleet"],
            &["auth", "enable"],
        ] {
            let out = etcd.etcdctl(None, args);
            assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        }
        etcd
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn etcdctl(&self, user: Option<&str>, args: &[&str]) -> std::process::Output {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint, "--command-timeout=2s"])
            .args(["--cacert", &self.file("ca.pem")])
            .args(["--cert", &self.file("client.pem")])
            .args(["--key", &self.file("client.key")]);
        if let Some(user) = user {
            command.args(["--user", user]);
        }
        command
            .args(args)
            .output()
            .expect("etcdctl (apt-get install etcd-client)")
    }

    /// The fleet's TLS flags, as an operator passes them to `run` and `status`.
    fn tls_args(&self) -> Vec<String> {
        vec![
            "--fleet-cacert".into(),
            self.file("ca.pem"),
            "--fleet-cert".into(),
            self.file("client.pem"),
            "--fleet-key".into(),
            self.file("client.key"),
            "--fleet-user".into(),
            "reconciler".into(),
        ]
    }
}

impl Drop for SecureEtcd {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// TLS with client certificates and etcd's own users, as the flags promise: the
/// owner converges its pipeline through them, `status --fleet` reads it back
/// with the password from a file, the password appears in no log, and a wrong
/// password or an unknown CA ends `status` with an error that says so, not a
/// hang or a panic.
#[test]
fn a_fleet_works_over_tls_with_etcd_users_and_keeps_the_password_out_of_logs() {
    let etcd = SecureEtcd::up();
    let p = TestPipeline::new("fleet_tls", "{keep: 2}");
    let name = pipeline_name(&p);
    let tls = etcd.tls_args();
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let a = Instance::start_with(
        "secure",
        &etcd.endpoint,
        &p.specs,
        &[("RECONCILER_FLEET_PASSWORD", SecureEtcd::PASSWORD)],
        &tls,
    );
    let password_file = etcd.dir.path().join("password");
    std::fs::write(&password_file, format!("{}\n", SecureEtcd::PASSWORD)).unwrap();
    let password_file = password_file.display().to_string();
    let mut with_file = tls.clone();
    with_file.extend(["--fleet-password-file", password_file.as_str()]);
    let start = Instant::now();
    let json = loop {
        let (code, out, err) = fleet_status_with(&etcd.endpoint, "json", &with_file, &[]);
        if code == 0 {
            break out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "never converged over TLS: {code} {out}{err}\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let records: serde_json::Value = serde_json::from_str(&json).unwrap();
    let record = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pipeline"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} missing from {json}"));
    assert_eq!(record["owner"], "secure", "{json}");
    assert!(!a.starts(&name).is_empty(), "the owner ran the steps");
    // etcd itself says the owner is `secure`, to its root user.
    let owner = etcd.etcdctl(
        Some("root:root-pw"),
        &["get", &keys::owner(&name), "--print-value-only"],
    );
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), "secure");
    assert!(
        !a.log().contains(SecureEtcd::PASSWORD),
        "the password reached the log:\n{}",
        a.log()
    );

    let (code, out, err) = fleet_status_with(
        &etcd.endpoint,
        "text",
        &tls,
        &[("RECONCILER_FLEET_PASSWORD", "not-the-password")],
    );
    assert_eq!(code, 2, "a wrong password: {out}{err}");
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");

    let mut without_ca = tls.clone();
    without_ca.drain(0..2);
    let (code, out, err) = fleet_status_with(
        &etcd.endpoint,
        "text",
        &without_ca,
        &[("RECONCILER_FLEET_PASSWORD", SecureEtcd::PASSWORD)],
    );
    assert_eq!(
        code, 2,
        "a server certificate no CA vouches for: {out}{err}"
    );
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
