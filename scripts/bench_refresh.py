"""What a refresh costs in bytes: recover, replay and starport sync, against the volume's size.

Used by scripts/bench. Bytes written are read from /proc/diskstats (sectors written on the
device holding the volume, x 512), with a `sync` on both sides of the refresh, so they count
everything the refresh made the kernel write: barman's copy, the replay's WAL and data pages,
the starport copy. rsync's "sent" bytes come from the step's report.

A "day" is `pgbench -n -t N` on the primary: random updates touching pages across the
whole accounts table, as a production day does, followed by a marker row.
"""

import json
import os
import re
import subprocess
from pathlib import Path

PGBIN = "/usr/lib/postgresql/15/bin"


def _device(path):
    """The /proc/diskstats name of the block device holding path."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    for line in Path("/proc/diskstats").read_text().splitlines():
        parts = line.split()
        if int(parts[0]) == major and int(parts[1]) == minor:
            return parts[2]
    raise RuntimeError(f"no block device in /proc/diskstats for {path} ({major}:{minor}); "
                       "bytes written can only be counted on a real block device")


def _sectors_written(device):
    for line in Path("/proc/diskstats").read_text().splitlines():
        parts = line.split()
        if parts[2] == device:
            return int(parts[9])
    raise RuntimeError(f"{device} vanished from /proc/diskstats")


def bytes_written(path, action):
    """Runs action(); returns (its result, bytes written to path's device meanwhile)."""
    device = _device(path)
    subprocess.run(["sync"], check=True)
    before = _sectors_written(device)
    result = action()
    subprocess.run(["sync"], check=True)
    return result, (_sectors_written(device) - before) * 512


def dir_bytes(path):
    """Allocated size of a directory tree (du), the V the ratios divide by."""
    out = subprocess.run(["du", "-s", "-B1", str(path)], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


def psql(port, sql):
    return subprocess.run([f"{PGBIN}/psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                           "-d", "postgres", "-c", sql], check=True, capture_output=True, text=True).stdout.strip()


def simulate_day(port, transactions):
    """A day of traffic: pgbench's random updates, then a marker row. Returns WAL bytes written."""
    start = psql(port, "select pg_current_wal_lsn()")
    subprocess.run([f"{PGBIN}/pgbench", "-n", "-t", str(transactions), "-h", "127.0.0.1", "-p", str(port),
                    "-U", "postgres", "postgres"], check=True, capture_output=True)
    psql(port, "create table if not exists bench_day (n int, at timestamptz default now())")
    psql(port, "insert into bench_day (n) select coalesce(max(n), 0) + 1 from bench_day")
    wal = int(psql(port, f"select pg_wal_lsn_diff(pg_current_wal_lsn(), '{start}')"))
    # The primary shares this machine's disk with the volume: its own checkpoint of the
    # day's pages, spread over minutes, would land in whichever refresh it overlaps and be
    # counted as the refresh's writes. In production the primary has its own disk.
    psql(port, "checkpoint")
    return wal


def day_marker(port):
    return psql(port, "select coalesce(max(n), 0) from bench_day")


def steps(report):
    """(step name, seconds, detail) of a `reconciler apply --output json` report."""
    out = []
    for pipeline in report["pipelines"]:
        for step in pipeline["steps"]:
            action = step["step"]["action"] if isinstance(step.get("step"), dict) else str(step.get("step"))
            out.append((action, float(step.get("seconds") or 0), step.get("detail") or ""))
    return out


def rsync_sent(report):
    sent = 0
    for _, _, detail in steps(report):
        m = re.search(r"rsync sent (\d+) of (\d+) bytes", detail)
        if m:
            sent += int(m.group(1))
    return sent


def refresh(apply_args, env=None):
    """Runs one `reconciler apply --output json`; returns its parsed report."""
    proc = subprocess.run([str(a) for a in apply_args], capture_output=True, text=True, env=env)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"apply failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def by_hand_catch_up(work, volume, dest, conf, server, primary_port):
    """The catch-up refresh run by hand: what an operator would type, as a script.

    Switch WAL on the primary, start the volume as a standby fetching WAL with
    `barman get-wal` as its restore_command, wait until it replayed through the
    switch, stop it in recovery, remove the signal file, copy it by blocks.
    """
    hand = work / "by-hand-catch-up.sh"
    hand.write_text(f"""#!/bin/bash
set -euo pipefail
VOL={volume}
TARGET=$({PGBIN}/psql -X -At -h 127.0.0.1 -p {primary_port} -U postgres -d postgres -c 'select pg_switch_wal()')
touch "$VOL/standby.signal"; chown barman: "$VOL/standby.signal"
SOCK=$(mktemp -d); chown barman: "$SOCK"
runuser -u barman -- {PGBIN}/pg_ctl -D "$VOL" -l "$SOCK/log" -w -t 3600 -o "-c listen_addresses='' -k $SOCK -p 5432 -c archive_mode=off -c hot_standby=on -c primary_conninfo='' -c restore_command='barman -c {conf} get-wal {server} %f > %p'" start >/dev/null
until [ "$(runuser -u barman -- {PGBIN}/psql -X -At -h "$SOCK" -p 5432 -U postgres -d postgres -c "select pg_last_wal_replay_lsn() >= '$TARGET'::pg_lsn" 2>/dev/null)" = t ]; do sleep 0.2; done
runuser -u barman -- {PGBIN}/pg_ctl -D "$VOL" -m fast -w stop >/dev/null
rm -f "$VOL/standby.signal"
rm -rf "$SOCK"
mkdir -p {dest}
rsync -a --delete --inplace --no-whole-file --block-size=8192 "$VOL/" {dest}/
""")
    hand.chmod(0o755)
    return hand


def step_named(report, prefix):
    """(seconds, detail) of the first executed step whose name starts with prefix."""
    for name, seconds, detail in steps(report):
        if name.startswith(prefix):
            return seconds, detail
    return None
