#!/usr/bin/env python3
"""Benchmarks of the reconciler against doing the same work by hand.

Sets up a real primary (pgbench data), a barman server streaming from it and a
pipeline, then measures, side by side on this machine:

  1. a converged `reconciler diff` vs the one barman call a hand check would make;
  2. `reconciler apply` refreshing a stale volume and starport vs a shell script
     running the same barman recover, postgres replay and rsync;
  3. `reconciler run`'s reaction to a spec edit (median and worst of EDITS edits);
  4. `reconciler run`'s idle cost on a converged pipeline;
  5. one pass over 100 pipelines against one barman (time, barman calls);
  6. bytes written by recover and sent by rsync, first and second refresh;
  7. a converged `diff` with every look switched on (walStreaming, a mirror over
     ssh), over one pipeline and over SERVERS barman servers x PER_SERVER pipelines,
     as a ratio to one `barman -f json list-backups`;
  8. the refresh of 2. on an idle primary (nothing writes WAL) and a busy one;
  9. the nightly refresh as it now runs (full recovery after a new base backup, catch-up
     otherwise): bytes written and sent as ratios of the volume, the catch-up against the
     same by hand, replay time against WAL (scripts/bench_refresh.py).

Each numbered section is one function `section_*(e, rows)` appending its rows, so a
new measurement is a new function and a line in SECTIONS.

Every figure is a median of RUNS runs with min and max. The planner's own scale
(1, 100, 10,000 pipelines) comes from `cargo bench --bench planner`, which this runs too.
Writes BENCHMARKS.md.

env: RUNS (5), SCALE (70 => about 1 GB of pgbench data), EDITS (30), IDLE_SECS (180),
     SERVERS (2), PER_SERVER (10), SECTIONS (all; e.g. "1,7" runs only those, after setup),
     DAY_TX (2000 pgbench transactions make a day), DAY_SIZES (500,2000,8000: replay against WAL)
Run as root: scripts/bench
"""

import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTENV = REPO / "scripts" / "testenv"
BIN = REPO / "target" / "release" / "reconciler"
PGBIN = "/usr/lib/postgresql/15/bin"
RUNS = int(os.environ.get("RUNS", "5"))
SCALE = int(os.environ.get("SCALE", "70"))
EDITS = int(os.environ.get("EDITS", "30"))
IDLE_SECS = int(os.environ.get("IDLE_SECS", "180"))
SERVERS = int(os.environ.get("SERVERS", "2"))
PER_SERVER = int(os.environ.get("PER_SERVER", "10"))
DAY_TX = int(os.environ.get("DAY_TX", "2000"))
DAY_SIZES = [int(x) for x in os.environ.get("DAY_SIZES", "500,2000,8000").split(",")]
NAME = "bench"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def run(args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kw)


def timed(args, env=None, check=True):
    """Runs a command; returns (wall seconds, CPU seconds of it and its children, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if check and proc.returncode not in (0, 1):
        raise RuntimeError(f"{args} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, cpu, proc.stdout


def stats(values):
    return statistics.median(values), min(values), max(values)


def fmt(values, unit="s", scale=1.0, digits=2):
    med, lo, hi = stats([v * scale for v in values])
    return f"{med:.{digits}f} {unit} ({lo:.{digits}f}–{hi:.{digits}f})"


class Env:
    def __init__(self):
        self.work = Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
        os.chmod(self.work, 0o755)
        self.primary = self.work / "primary"
        self.barman = self.primary / "servers" / NAME
        self.nightly = self.work / "nightly"
        self.starport = self.work / "starport"
        self.specs = self.work / "specs"
        self.volume = self.nightly / "bench_db_volume"
        self.busy = True
        self.idle = False
        self.extra = []

    def up(self):
        run([TESTENV, "install"])
        run([TESTENV, "primary-up", self.primary])
        env = dict(l.split("=", 1) for l in (self.primary / "env").read_text().split() if "=" in l)
        self.port = env["PRIMARY_PORT"]
        log(f"pgbench -i -s {SCALE}")
        run([TESTENV, "pgbench-init", self.primary, SCALE])
        self.conf = run([TESTENV, "barman-up", self.primary, self.barman, NAME]).stdout.strip()
        for d in (self.nightly, self.starport, self.specs):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.nightly, "barman", "barman")
        threading.Thread(target=self.keep_busy, daemon=True).start()
        self.write_spec(keep=3)

    def keep_busy(self):
        # A production primary always writes some WAL; an idle one makes barman's
        # switch-wal wait 13-23 s (barman-facts P1). Emit a tiny record every 0.3 s
        # (paused, not stopped, while `self.idle` is set: section 8).
        self.idle = False
        while self.busy:
            if self.idle:
                time.sleep(0.1)
                continue
            subprocess.run([f"{PGBIN}/psql", "-X", "-q", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres",
                            "-c", "select pg_logical_emit_message(false,'bench','busy')"], capture_output=True)
            time.sleep(0.3)

    def write_spec(self, keep, directory=None, name="bench", volume=None, starport=True,
                   server=NAME, conf=None, wal_streaming=False, mirror=None, volume_max_age="24h"):
        """A pipeline spec; `mirror` is (name, root) of an off-site copy over ssh."""
        volume = volume or self.volume
        text = f"""apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata: {{name: {name}}}
spec:
  barman: {{server: {server}, config: {conf or self.conf}}}
  baseBackup: {{maxAge: 30d, timeout: 1h}}
  retention: {{keep: {keep}}}
  recoveredVolume:
    path: {volume}
    maxAge: {volume_max_age}
    replay: {{postgresBin: {PGBIN}, timeout: 1h}}
"""
        if wal_streaming:
            text += "  walStreaming: {}\n"
        if starport:
            text += f"  starport:\n    root: {self.starport}\n    target: barman_to_starport\n    timeout: 1h\n"
            if mirror:
                port, key, known = self.sshd()
                text += (f"    mirrors:\n    - name: {mirror[0]}\n      root: {mirror[1]}\n"
                         f"      ssh: {{host: 127.0.0.1, user: root, port: {port}, identityFile: {key}, "
                         f"knownHostsFile: {known}}}\n")
        (directory or self.specs).joinpath(f"{name}.yaml").write_text(text)

    def reconciler(self, *args):
        return [BIN, *args, "--specs", self.specs]

    def extra_server(self, name):
        """Another barman server streaming from the same primary; returns its config."""
        root = self.primary / "servers" / name
        self.extra.append(root)
        return run([TESTENV, "barman-up", self.primary, root, name]).stdout.strip()

    def sshd(self):
        """A private sshd on loopback (started once): (port, key, known_hosts)."""
        if not hasattr(self, "ssh"):
            d = self.work / "sshd"
            d.mkdir(exist_ok=True)
            run([TESTENV, "sshd-up", d])
            env = dict(l.split("=", 1) for l in (d / "env").read_text().split() if "=" in l)
            self.ssh = (env["SSH_PORT"], env["SSH_KEY"], env["SSH_KNOWN_HOSTS"])
            self.sshd_dir = d
        return self.ssh

    def down(self):
        self.busy = False
        for root in self.extra:
            subprocess.run([TESTENV, "barman-down", self.primary, root], capture_output=True)
        if hasattr(self, "sshd_dir"):
            subprocess.run([TESTENV, "sshd-down", self.sshd_dir, "--rm"], capture_output=True)
        subprocess.run([TESTENV, "barman-down", self.primary, self.barman], capture_output=True)
        subprocess.run([TESTENV, "primary-down", self.primary, "--rm"], capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)


def barman_shim(env_dir):
    """A `barman` first in PATH that counts its calls, then runs the real one."""
    shim = env_dir / "shim"
    shim.mkdir(exist_ok=True)
    script = shim / "barman"
    script.write_text('#!/bin/sh\necho call >> "$BARMAN_CALLS"\nexec /usr/bin/barman "$@"\n')
    script.chmod(0o755)
    return shim


def count_calls(e, args):
    shim = barman_shim(e.work)
    calls = e.work / "calls"
    calls.write_text("")
    env = dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}", BARMAN_CALLS=str(calls))
    wall, cpu, _ = timed(args, env=env)
    return len(calls.read_text().split()), wall, cpu


def make_stale(e):
    (e.volume / ".reconciler-volume.json").unlink(missing_ok=True)
    meta = e.starport / "barman_to_starport" / "meta" / "metadata.json"
    meta.unlink(missing_ok=True)


def by_hand_script(e):
    """The old pipeline's commands, written out as a script (what cron used to run)."""
    hand = e.work / "by-hand.sh"
    dest = e.work / "by-hand-starport"
    hand.write_text(f"""#!/bin/bash
set -euo pipefail
VOL={e.volume}
find "$VOL" -mindepth 1 -maxdepth 1 -exec rm -rf {{}} +
barman -c {e.conf} recover {NAME} latest "$VOL/.staging" >/dev/null
find "$VOL/.staging" -mindepth 1 -maxdepth 1 -exec mv -t "$VOL" {{}} +
rmdir "$VOL/.staging"
SOCK=$(mktemp -d); chown barman: "$SOCK"
runuser -u barman -- {PGBIN}/pg_ctl -D "$VOL" -l "$SOCK/log" -w -t 3600 -o "-c listen_addresses='' -k $SOCK -p 5432 -c archive_mode=off" start >/dev/null
until [ "$(runuser -u barman -- {PGBIN}/psql -X -At -h "$SOCK" -p 5432 -U postgres -d postgres -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 0.5; done
runuser -u barman -- {PGBIN}/pg_ctl -D "$VOL" -m fast -w stop >/dev/null
rm -rf "$SOCK"
mkdir -p {dest}
rsync -a --delete "$VOL/" {dest}/
date --rfc-3339=ns > "$VOL/.barman-last-restore"
""")
    hand.chmod(0o755)
    return hand


def refresh_details(report):
    recovered = sent = None
    for step in report["pipelines"][0]["steps"]:
        m = re.search(r"recovered \((\d+) bytes\)", step["detail"])
        if m:
            recovered = int(m.group(1))
        m = re.search(r"rsync sent (\d+) of (\d+) bytes", step["detail"])
        if m:
            sent = int(m.group(1))
    return recovered, sent


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_counters(pid):
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    # utime + stime of the process, plus cutime + cstime of the children it waited
    # for (barman, git): an idle loop that keeps spawning commands must show.
    cpu = (int(stat[11]) + int(stat[12]) + int(stat[13]) + int(stat[14])) / ticks
    switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                switches += int(line.split()[1])
    hwm = next(int(l.split()[1]) for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("VmHWM"))
    return cpu, switches, hwm


def planner_rows():
    """Runs the criterion benchmark and reads its samples: per-pipeline plan time."""
    log("5. planner scale (cargo bench --bench planner)")
    subprocess.run(["cargo", "bench", "--locked", "--quiet", "--bench", "planner", "--", "--warm-up-time", "1",
                    "--measurement-time", "5", "--noplot"], cwd=REPO, check=True, capture_output=True)
    rows = []
    for n in (1, 100, 10000):
        sample = json.loads((REPO / "target" / "criterion" / "plan" / str(n) / "new" / "sample.json").read_text())
        per_pipeline = [t / i / n for t, i in zip(sample["times"], sample["iters"])]  # nanoseconds
        rows.append((f"5. planner: plan time per pipeline, {n} pipeline(s) in memory ({len(per_pipeline)} samples)",
                     fmt(per_pipeline, "µs", 1e-3, 2)))
    return rows


def section_converged(e, rows):
    log("1. converged pass")
    diff = [timed(e.reconciler("diff")) for _ in range(RUNS)]
    hand = [timed(["barman", "-c", e.conf, "-f", "json", "list-backups", NAME]) for _ in range(RUNS)]
    calls, _, _ = count_calls(e, e.reconciler("diff"))
    rows.append(("1. converged `reconciler diff`: wall", fmt([d[0] for d in diff])))
    rows.append(("1. converged `reconciler diff`: CPU (with children)", fmt([d[1] for d in diff])))
    rows.append(("1. `barman -f json list-backups` by hand: wall", fmt([h[0] for h in hand])))
    rows.append(("1. `barman -f json list-backups` by hand: CPU", fmt([h[1] for h in hand])))
    rows.append(("1. ratio diff / list-backups (median wall)", f"{stats([d[0] for d in diff])[0] / stats([h[0] for h in hand])[0]:.2f}"))
    rows.append(("1. barman processes started by one converged pass", f"{calls} (counted by a PATH shim)"))


def refresh_vs_hand(e):
    """(apply walls, by-hand walls) of RUNS refreshes of a stale volume and starport."""
    script = by_hand_script(e)
    rec, man = [], []
    for _ in range(RUNS):
        make_stale(e)
        rec.append(timed(e.reconciler("apply"))[0])
        man.append(timed([script])[0])
    return rec, man


def section_refresh(e, rows):
    log("2. refresh: reconciler apply vs by hand")
    rec, man = refresh_vs_hand(e)
    rows.append(("2. refresh (stale volume + starport): `reconciler apply`", fmt(rec)))
    rows.append(("2. refresh: the same commands by hand (script)", fmt(man)))
    rows.append(("2. ratio apply / by hand (median)", f"{statistics.median(rec) / statistics.median(man):.2f}"))


def section_refresh_idle_and_busy(e, rows):
    """The refresh of section 2 with the primary idle (no WAL written) and busy."""
    for label, idle in (("idle", True), ("busy", False)):
        log(f"8. refresh, {label} primary")
        e.idle = idle
        time.sleep(1)
        try:
            rec, man = refresh_vs_hand(e)
        finally:
            e.idle = False
        rows.append((f"8. refresh, {label} primary: `reconciler apply`", fmt(rec)))
        rows.append((f"8. refresh, {label} primary: by hand", fmt(man)))
        rows.append((f"8. refresh, {label} primary: ratio apply / by hand (median)", f"{statistics.median(rec) / statistics.median(man):.2f}"))


def section_data_moved(e, rows):
    # A first refresh (empty starport) and a refresh after a small change.
    log("6. data moved per refresh")
    first, second = [], []
    for _ in range(RUNS):
        shutil.rmtree(e.starport / "barman_to_starport", ignore_errors=True)
        make_stale(e)
        _, _, out = timed(e.reconciler("apply", "--output", "json"))
        first.append(refresh_details(json.loads(out)))
        subprocess.run([TESTENV, "psql", e.primary, "-c", "update pgbench_branches set bbalance = bbalance + 1 where bid = 1"], check=True, capture_output=True)
        make_stale(e)
        _, _, out = timed(e.reconciler("apply", "--output", "json"))
        second.append(refresh_details(json.loads(out)))
    rows.append(("6. first refresh (empty starport): bytes written by recover", fmt([r for r, _ in first], "MB", 1e-6, 1)))
    rows.append(("6. first refresh: bytes sent by rsync", fmt([s for _, s in first], "MB", 1e-6, 1)))
    rows.append(("6. refresh after one UPDATE on the primary: bytes written by recover", fmt([r for r, _ in second], "MB", 1e-6, 1)))
    rows.append(("6. refresh after one UPDATE: bytes sent by rsync", fmt([s for _, s in second], "MB", 1e-6, 1)))


def section_many_pipelines(e, rows):
    log("5. one pass over 100 pipelines")
    many = e.work / "many"
    many.mkdir(exist_ok=True)
    for i in range(100):
        e.write_spec(keep=3, directory=many, name=f"p{i}", volume=e.nightly / f"many_{i}", starport=False)
    passes = [count_calls(e, [BIN, "diff", "--specs", many]) for _ in range(RUNS)]
    rows.append(("5. one pass (observe + plan) over 100 pipelines, one barman", fmt([p[1] for p in passes])))
    rows.append(("5. barman calls per pass over 100 pipelines", fmt([p[0] for p in passes], "", digits=0)))


def section_every_look(e, rows):
    """A converged diff with walStreaming and a mirror: one pipeline, then many on several servers."""
    log("7. converged diff with every look switched on")
    one = e.work / "every-look"
    one.mkdir(exist_ok=True)
    mirror_root = e.work / "mirror"
    mirror_root.mkdir(exist_ok=True)
    e.write_spec(keep=3, directory=one, wal_streaming=True, mirror=("offsite", mirror_root))
    # Converge it once (the mirror's first sync), outside the measurement.
    timed([BIN, "apply", "--specs", one], check=False)
    hand = [timed(["barman", "-c", e.conf, "-f", "json", "list-backups", NAME])[0] for _ in range(RUNS)]
    check = [timed(["barman", "-c", e.conf, "-f", "json", "check", NAME], check=False)[0] for _ in range(RUNS)]
    diff = [timed([BIN, "diff", "--specs", one], check=False)[0] for _ in range(RUNS)]
    rows.append(("7. converged `diff`, walStreaming + one mirror, 1 pipeline: wall", fmt(diff)))
    rows.append(("7. ratio to one `list-backups` (median wall)", f"{statistics.median(diff) / statistics.median(hand):.2f}"))
    # walStreaming needs `barman check`, barman's slowest read: a pass can cost no
    # less than it, since it runs beside list-backups.
    rows.append(("7. `barman -f json check` by hand (what walStreaming reads): wall", fmt(check)))
    rows.append(("7. ratio diff / one `check` (median wall)", f"{statistics.median(diff) / statistics.median(check):.2f}"))
    # The mirror's look is one ssh login where the mirror lives: what the login costs
    # there (its shell's start-up included) bounds the pass from below, like `check`.
    port, key, known = e.sshd()
    login = [timed(["ssh", "-i", key, "-p", port, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                    "-o", f"UserKnownHostsFile={known}", "root@127.0.0.1", "true"])[0] for _ in range(RUNS)]
    rows.append(("7. `ssh MIRROR true` by hand (the mirror's login): wall", fmt(login)))
    # The same pipeline without its mirror: walStreaming's own share.
    no_mirror = e.work / "every-look-no-mirror"
    no_mirror.mkdir(exist_ok=True)
    e.write_spec(keep=3, directory=no_mirror, wal_streaming=True)
    bare = [timed([BIN, "diff", "--specs", no_mirror], check=False)[0] for _ in range(RUNS)]
    rows.append(("7. converged `diff`, walStreaming, no mirror, 1 pipeline: wall", fmt(bare)))
    rows.append(("7. ratio to one `list-backups` (walStreaming, no mirror, median wall)",
                 f"{statistics.median(bare) / statistics.median(hand):.2f}"))

    many = e.work / "every-look-many"
    many.mkdir(exist_ok=True)
    servers = [(NAME, e.conf)] + [(f"bench{k}", e.extra_server(f"bench{k}")) for k in range(1, SERVERS)]
    for server, conf in servers:
        for i in range(PER_SERVER):
            e.write_spec(keep=3, directory=many, name=f"{server}-p{i}", volume=e.nightly / f"{server}_{i}",
                         starport=False, server=server, conf=conf, wal_streaming=True)
    passes = [count_calls(e, [BIN, "diff", "--specs", many]) for _ in range(RUNS)]
    label = f"{SERVERS} servers x {PER_SERVER} pipelines"
    rows.append((f"7. one pass over {label}, walStreaming: wall", fmt([p[1] for p in passes])))
    rows.append((f"7. ratio to one `list-backups` ({label}, median wall)", f"{statistics.median([p[1] for p in passes]) / statistics.median(hand):.2f}"))
    rows.append((f"7. barman processes per pass ({label})", fmt([p[0] for p in passes], "", digits=0)))


def section_run(e, rows):
    """3. reaction latency and 4. idle cost of `reconciler run`."""
    log("3./4. reconciler run: reaction latency and idle cost")
    state = e.work / "state"
    runlog = e.work / "run.log"
    port = free_port()
    proc = subprocess.Popen([BIN, "run", "--log-format", "json", "--specs", e.specs, "--state-dir", state,
                             "--listen", f"127.0.0.1:{port}", "--resync", "5m"],
                            stdout=subprocess.DEVNULL, stderr=open(runlog, "w"))
    try:
        deadline = time.time() + 600
        while True:
            out = subprocess.run([BIN, "status", "--output", "json", "--state-dir", state], capture_output=True, text=True).stdout
            if out and all(c["status"] == "True" for s in json.loads(out) for c in s["conditions"]):
                break
            if time.time() > deadline:
                raise RuntimeError("run did not converge")
            time.sleep(0.5)
        latencies = []
        for i in range(EDITS):
            seen = runlog.read_text().count("spec changed")
            written = time.time()
            e.write_spec(keep=4 if i % 2 == 0 else 3)
            while runlog.read_text().count("spec changed") == seen:
                time.sleep(0.005)
            line = [l for l in runlog.read_text().splitlines() if "spec changed" in l][-1]
            stamp = json.loads(line)["timestamp"]
            started = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            latencies.append(started - written)
            time.sleep(0.6)
        med, lo, hi = stats([l * 1000 for l in latencies])
        rows.append((f"3. spec edit on disk → start of the pass that reads it ({EDITS} edits)", f"median {med:.0f} ms, min {lo:.0f} ms, worst {hi:.0f} ms"))
        time.sleep(5)
        # IDLE_SECS split into RUNS windows; each window gives one rate.
        window = IDLE_SECS / RUNS
        cpu_rates, wake_rates = [], []
        cpu0, sw0, _ = proc_counters(proc.pid)
        for _ in range(RUNS):
            time.sleep(window)
            cpu1, sw1, hwm = proc_counters(proc.pid)
            cpu_rates.append((cpu1 - cpu0) / window * 3600)
            wake_rates.append((sw1 - sw0) / window * 60)
            cpu0, sw0 = cpu1, sw1
        rows.append((f"4. idle `reconciler run`, converged ({RUNS} windows of {window:.0f} s): CPU", fmt(cpu_rates, "CPU-s/hour")))
        rows.append(("4. idle: context switches, all threads (wake-ups)", fmt(wake_rates, "per minute", digits=0)))
        rows.append(("4. idle: peak RSS (VmHWM, whole run including the edits)", f"{hwm / 1024:.1f} MiB"))
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def section_delta(e, rows):
    """9. The nightly refresh as it now runs: a full recovery after each new base backup, then
    catch-ups after one UPDATE and after a simulated day of pgbench traffic. Bytes written to
    disk (everything the refresh wrote: recover or WAL fetch, replay, starport copy) and bytes
    sent by rsync, as ratios of the volume's size V; the catch-up's time against the same
    catch-up by hand on a copy of the volume; replay time against WAL replayed."""
    import bench_refresh as br
    log("9. delta refresh")
    delta = e.work / "delta-specs"
    delta.mkdir(exist_ok=True)
    # The volume is due at every apply (maxAge 1s); keep enough backups that no delete
    # lands inside a measurement.
    e.write_spec(keep=RUNS + 3, directory=delta, volume_max_age="1s")
    apply = [BIN, "apply", "--output", "json", "--specs", delta]
    hand_vol = e.nightly / "by-hand-volume"
    hand_dest = e.work / "by-hand-catch-up-starport"
    script = br.by_hand_catch_up(e.work, hand_vol, hand_dest, e.conf, NAME, e.port)

    def refresh(expect):
        time.sleep(1.1)
        report, written = br.bytes_written(e.volume, lambda: br.refresh(apply))
        if br.step_named(report, expect) is None:
            raise RuntimeError(f"expected a {expect} step: {json.dumps(report)[:2000]}")
        return report, written

    def hand_copy():
        shutil.rmtree(hand_vol, ignore_errors=True)
        run(["cp", "-a", "--sparse=always", e.volume, hand_vol])
        (hand_vol / ".reconciler-volume.json").unlink(missing_ok=True)
        shutil.rmtree(hand_dest, ignore_errors=True)
        run(["cp", "-a", "--sparse=always", e.starport / "barman_to_starport" / "data", hand_dest])

    full_w, full_s, small_w, small_s, day_w, day_s, sizes = [], [], [], [], [], [], []
    small_t, small_h, day_t, day_h = [], [], [], []
    for i in range(RUNS):
        log(f"9. run {i + 1}/{RUNS}: new base backup, full recovery")
        run(["barman", "-c", e.conf, "backup", "--wait", NAME])
        report, written = refresh("recoverVolume")
        v = br.dir_bytes(e.volume)
        sizes.append(v)
        full_w.append(written / v)
        full_s.append(br.rsync_sent(report) / v)
        hand_copy()

        # One UPDATE, then the catch-up; by hand on its own copy, in alternating order.
        br.psql(e.port, "update pgbench_branches set bbalance = bbalance + 1 where bid = 1")
        if i % 2:
            small_h.append(timed([script])[0])
        report, written = refresh("catchUpVolume")
        if not i % 2:
            small_h.append(timed([script])[0])
        small_w.append(written / v)
        small_s.append(br.rsync_sent(report) / v)
        small_t.append(sum(s for _, s, _ in br.steps(report)))

        log(f"9. run {i + 1}/{RUNS}: a day of pgbench ({DAY_TX} transactions), catch-up")
        br.simulate_day(e.port, DAY_TX)
        if i % 2:
            day_h.append(timed([script])[0])
        report, written = refresh("catchUpVolume")
        if not i % 2:
            day_h.append(timed([script])[0])
        day_w.append(written / v)
        day_s.append(br.rsync_sent(report) / v)
        day_t.append(sum(s for _, s, _ in br.steps(report)))

    mib = statistics.median(sizes) / 2**20
    rows.append((f"9. volume size V (pgbench scale {SCALE})", f"{mib:.0f} MiB"))
    rows.append(("9. first refresh after a new base backup (full recovery): bytes written / V", fmt(full_w, "×")))
    rows.append(("9. first refresh after a new base backup: rsync sent / V", fmt(full_s, "×")))
    rows.append(("9. refresh after one UPDATE (catch-up): bytes written / V", fmt(small_w, "×", digits=3)))
    rows.append(("9. refresh after one UPDATE: rsync sent / V", fmt(small_s, "×", digits=3)))
    rows.append((f"9. refresh after a day ({DAY_TX} pgbench transactions, catch-up): bytes written / V", fmt(day_w, "×", digits=3)))
    rows.append(("9. refresh after a day: rsync sent / V", fmt(day_s, "×", digits=3)))
    rows.append(("9. catch-up after one UPDATE: `reconciler apply` (steps)", fmt(small_t)))
    rows.append(("9. catch-up after one UPDATE: by hand", fmt(small_h)))
    rows.append(("9. catch-up after one UPDATE: ratio apply / by hand (median)", f"{statistics.median(small_t) / statistics.median(small_h):.2f}"))
    rows.append(("9. catch-up after a day: `reconciler apply` (steps)", fmt(day_t)))
    rows.append(("9. catch-up after a day: by hand", fmt(day_h)))
    rows.append(("9. catch-up after a day: ratio apply / by hand (median)", f"{statistics.median(day_t) / statistics.median(day_h):.2f}"))

    # Replay against WAL: days of growing size, one catch-up each.
    for tx in DAY_SIZES:
        wal = br.simulate_day(e.port, tx)
        report, _ = refresh("catchUpVolume")
        catch = br.step_named(report, "catchUpVolume")[0]
        sync = (br.step_named(report, "syncStarport") or (0.0, ""))[0]
        rows.append((f"9. replay against WAL: a day of {tx} transactions, {wal / 2**20:.0f} MiB of WAL",
                     f"catch-up {catch:.1f} s ({wal / 2**20 / max(catch, 0.001):.0f} MiB/s), starport copy {sync:.1f} s (1 run)"))
    shutil.rmtree(hand_vol, ignore_errors=True)
    shutil.rmtree(hand_dest, ignore_errors=True)


# In this order (6 before 5 and 3/4 as before; 7 and 8 last, they add servers and pause the primary).
SECTIONS = [
    ("1", section_converged),
    ("2", section_refresh),
    ("6", section_data_moved),
    ("5", section_many_pipelines),
    ("3", section_run),
    ("7", section_every_look),
    ("8", section_refresh_idle_and_busy),
    ("9", section_delta),
]


def main():
    if os.geteuid() != 0:
        sys.exit("bench: run as root (it installs packages and runs postgres and barman as their users)")
    wanted = os.environ.get("SECTIONS")
    wanted = set(wanted.split(",")) if wanted else None
    log("building the release binary")
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=REPO, check=True)
    e = Env()
    rows = planner_rows() if wanted is None or "5" in wanted else []
    try:
        e.up()
        log("first apply (base backup, recovery, sync)")
        wall, _, _ = timed(e.reconciler("apply", "--output", "json"))
        rows.append(("setup: first apply of a pipeline with pgbench data (backup + recover + replay + rsync)", f"{wall:.1f} s (1 run)"))
        for key, section in SECTIONS:
            if wanted is None or key in wanted:
                section(e, rows)
    finally:
        e.down()

    write_report(rows, wanted)


def write_report(rows, wanted):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
    mem = next(l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    table = "\n".join(f"| {what} | {value} |" for what, value in rows)
    planner = (REPO / "target" / "criterion").exists()
    doc = f"""# Benchmarks

Measured by `scripts/bench` (this table) and `cargo bench --bench planner` (planner scale) on
{time.strftime('%Y-%m-%d')}: {os.cpu_count()} cores ({cpu}), {mem} memory, Debian 12, barman 3.4,
PostgreSQL 15, release build. Machines here are noisy: every figure is the **median of {RUNS} runs
(min–max)** unless it says otherwise; compare ratios rather than absolute times.

Method: a private primary on loopback loaded with `pgbench -i -s {SCALE}`, a barman server streaming
from it, one pipeline with a local volume and starport. The primary is kept lightly busy (a tiny WAL
record every 0.3 s), as a production primary is, except in the "idle primary" rows. CPU times include
child processes (barman, postgres, rsync). "By hand" is a shell script running the same
`barman recover`, postgres replay (`pg_ctl`, poll `pg_is_in_recovery()`, stop) and
`rsync -a --delete`, without the reconciler's observations, checks, markers, metadata or
`switch-wal` (so by hand recovers only what barman archived, not the newest writes).

| measurement | result |
|---|---|
{table}

The planner rows come from `cargo bench --bench planner` (criterion; each pipeline has a year of
monthly backups, a FAILED one and a start window); the script runs it and reads its samples.

How to read it:

- **1.** A converged `diff` costs what one `barman list-backups` costs: the pass makes exactly one
  barman call and the reconciler's own work is lost in barman's Python start-up.
- **2.** A full refresh (the marker removed: recover from the base backup). The overhead is fixed,
  not proportional to data: `apply` looks under the volume's lock before the first step and after
  every step (one `list-backups` each, ~0.25 s of barman's Python start-up: three for two steps),
  and runs `barman switch-wal` beside `barman recover` (so the newest writes are recovered; the
  old scripts did not). On a 757 GiB volume those seconds disappear in the copy. Section 2 and
  the busy row of section 8 time the same refresh; the gap between their ratios is this
  machine's noise (the by-hand script's own range is wide), so read them together.
- **3.** Latency is the quiet period after the last file event (100 ms) plus reading the specs:
  "spec changed" is logged before the pass observes anything.
- **4.** Idle, the loop sleeps until the next deadline or resync and the file watcher is inotify
  (woken by the kernel on an event, no tick): nothing runs while nothing changes.
- **5.** Pipelines sharing a barman server cost one `list-backups` per pass (the pass caches
  barman's catalogue; steps never use the cache). Planning is linear: ~10 µs per pipeline.
- **7.** A pass observes up to eight pipelines at once; those sharing a barman server wait for one
  `list-backups` and one `check`, so a pass costs about its slowest look, not their sum. With
  `walStreaming` one look is barman's own `check` (it connects to the primary and starts
  several programs); with a mirror another is one ssh login on the mirror, whose cost is the
  mirror host's (here root's shell runs a Python version manager's start-up on every login, so
  the login costs more than `check`). Without the mirror the pass costs about one `check`. What
  remains above the slowest look is CPU: `list-backups`, `check` and the ssh login start at once,
  and on two cores their start-ups queue. This host's own processes are read in-process (no
  interpreter is started to list them).
- **8.** An idle primary costs no wait: `switch-wal` without `--archive` says whether it closed a
  segment, and the refresh waits only for that segment, only if barman cannot serve it yet. The
  idle ratio stays above the busy one because the reconciler then fetches that segment from
  barman's `streaming/` directory (`get-wal`) and replays it: the newest writes are in the volume,
  where the script by hand recovers only what barman archived and misses them.
- **6.** A full recovery rewrites the whole volume (`barman recover` copies the base backup again),
  but barman keeps the backup's file times, so rsync's quick check skips the files that replay did
  not touch. It happens when a new base backup is DONE (a restore drill) or the volume cannot be
  caught up; every other night is a catch-up (section 9), which writes a fraction of it.
- **9.** The catch-up replays only the WAL written since the last refresh on the volume kept as a
  standby at rest, and rsync copies changed blocks (`--inplace --no-whole-file`). Bytes are
  counted on the disk the volume shares with the test primary, so the primary checkpoints after
  each simulated day: its own flush of the day's pages (in production on its own disk) is not
  counted as the refresh's, and the day's WAL then holds a checkpoint record, as every
  production day does (one every `checkpoint_timeout`). Replaying it, the standby makes a
  restartpoint when it stops and writes the pages the day changed; without one it keeps them
  unwritten and keeps the WAL instead. Before this checkpoint a day's catch-up measured either
  about 0.12 × V or 0.22–0.26 × V from run to run: whether the primary's timed checkpoint fell
  inside the few seconds of simulated day. With it every run is in the upper group.
"""
    if wanted is None:
        (REPO / "BENCHMARKS.md").write_text(doc)
        print(doc)
    else:
        # A few sections are a check, not the record: print them, keep BENCHMARKS.md.
        print(table)


if __name__ == "__main__":
    main()
