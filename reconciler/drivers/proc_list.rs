//! This host's writing processes, read from `/proc` in-process: the same list the
//! orphan probe ([`super::orphans::PROBE`]) prints where it runs as `python3`, without
//! starting a process. Every pass and every look between steps lists this host's
//! processes; an interpreter's start-up there costs as much CPU as the barman call it
//! runs beside (20 ms for Debian's `python3`, 200 ms behind a version manager's shim).
//! Inside a container the probe still runs, since a container's pids and paths are
//! its own. A test holds both readings to the same answer.
//!
//! It lists; it does not judge which process matters (the caller keeps those under
//! its roots) and never signals one.

use std::path::Path;

use super::orphans::{Candidate, RUN_ENV, normalise};

/// Every live process on this host that writes somewhere, as the probe reports it.
/// Processes that vanish while being read are skipped, as the probe skips them.
pub fn writing_processes() -> std::io::Result<Vec<Candidate>> {
    let proc = Path::new("/proc");
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as u64;
    let btime = std::fs::read_to_string(proc.join("stat"))?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(proc)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = entry.path();
        if let Some(c) = candidate(&dir, pid, ticks_per_second, btime) {
            found.push(c);
        }
    }
    Ok(found)
}

/// One `/proc/<pid>`, or `None` when it writes nowhere (or is gone).
fn candidate(dir: &Path, pid: &str, ticks_per_second: u64, btime: i64) -> Option<Candidate> {
    let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let mut args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.last().is_some_and(String::is_empty) {
        args.pop();
    }
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    if args.is_empty() || matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    let basename = |a: &str| a.rsplit('/').next().unwrap_or(a).to_string();
    let mut program = basename(&args[0]);
    // A script run by its interpreter (barman is Python): the script is the program.
    if program.starts_with("python") && args.len() > 1 {
        args.remove(0);
        program = basename(&args[0]);
    }
    let targets = targets(&program, &args)?;
    let cwd = std::fs::read_link(dir.join("cwd"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    // A relative target is read against the working directory; unknown, it is dropped.
    let absolute: Vec<String> = targets
        .into_iter()
        .filter_map(|t| match &cwd {
            _ if t.starts_with('/') => Some(normalise(&t)),
            Some(cwd) => Some(normalise(&format!("{cwd}/{t}"))),
            None => None,
        })
        .collect();
    if absolute.is_empty() {
        return None;
    }
    let run = std::fs::read(dir.join("environ")).ok().and_then(|environ| {
        let prefix = format!("{RUN_ENV}=");
        environ
            .split(|b| *b == 0)
            .filter_map(|e| e.strip_prefix(prefix.as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .next_back()
    });
    let start_ticks: u64 = fields.get(19)?.parse().ok()?;
    Some(Candidate {
        pid: pid.parse().ok()?,
        start_ticks,
        started_at: btime + (start_ticks / ticks_per_second) as i64,
        program,
        targets: absolute,
        run,
    })
}

/// Where `program` with `args` (its own name first) writes, as the probe reads it:
/// rsync to its last argument unless it sends, `barman recover` to any argument,
/// `pg_basebackup` to its `-D`. `None`: not a writer.
fn targets(program: &str, args: &[String]) -> Option<Vec<String>> {
    match program {
        "rsync" => {
            if args.iter().any(|a| a == "--sender") || args.len() < 3 {
                return None;
            }
            Some(vec![args[args.len() - 1].clone()])
        }
        "barman" => args[1..]
            .iter()
            .any(|a| a == "recover")
            .then(|| args[1..].to_vec()),
        "pg_basebackup" => {
            let mut found = Vec::new();
            for (i, a) in args.iter().enumerate() {
                if let Some(p) = a.strip_prefix("--pgdata=") {
                    found.push(p.to_string());
                } else if (a == "-D" || a == "--pgdata") && i + 1 < args.len() {
                    found.push(args[i + 1].clone());
                } else if let Some(p) = a.strip_prefix("-D").filter(|p| !p.is_empty()) {
                    found.push(p.to_string());
                }
            }
            Some(found)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::orphans::{PROBE, parse_probe};
    use std::os::unix::process::CommandExt;

    /// The in-process list and the probe agree, process for process, on this host:
    /// a receiving rsync with a mark, a relative target resolved against the working
    /// directory, a script under its interpreter, and a sender left out.
    #[test]
    fn the_host_list_reads_proc_as_the_probe_does() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().display().to_string();
        // Named as the programs the list looks for, doing nothing but wait: the list
        // reads argv, not what runs. `; :` keeps sh from exec'ing sleep in its place.
        let spawn = |argv0: &str, args: &[&str], mark: Option<&str>| {
            let mut c = std::process::Command::new("sh");
            c.arg0(argv0)
                .args(["-c", "sleep 30; :"])
                .args(args)
                .current_dir(&root);
            if let Some(mark) = mark {
                c.env(RUN_ENV, mark);
            }
            c.spawn().unwrap()
        };
        let script = dir.path().join("barman");
        std::fs::write(&script, "import time\ntime.sleep(30)\n").unwrap();
        let mut children = vec![
            spawn("rsync", &["-a", "./sub/../into"], Some("42:4242")),
            spawn("/usr/bin/rsync", &["--sender", "out"], None),
            spawn("pg_basebackup", &["-Dnext"], None),
            spawn("sleeper", &["x", "y"], None),
            std::process::Command::new("python3")
                .arg(&script)
                .args(["recover", "/srv//copy/"])
                .current_dir(&root)
                .env(RUN_ENV, "7:7")
                .spawn()
                .unwrap(),
        ];
        // The interpreter may sit behind a shim that execs it: wait until the
        // script is what runs (10 s at most).
        let python = children[4].id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read(format!("/proc/{python}/cmdline")).is_ok_and(|c| {
            c.split(|b| *b == 0).nth(1) == Some(script.as_os_str().as_encoded_bytes())
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "python3 never ran the script"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let ours: Vec<i32> = children.iter().map(|c| c.id() as i32).collect();
        let mine = |list: Vec<Candidate>| {
            let mut list: Vec<Candidate> =
                list.into_iter().filter(|c| ours.contains(&c.pid)).collect();
            list.sort_by_key(|c| c.pid);
            list
        };
        let native = mine(writing_processes().unwrap());
        let out = std::process::Command::new("python3")
            .args(["-c", PROBE])
            .output()
            .unwrap();
        let probed = mine(parse_probe(&String::from_utf8_lossy(&out.stdout)).unwrap());
        for c in &mut children {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        assert_eq!(native, probed);
        let seen: Vec<(&str, Vec<&str>, Option<&str>)> = native
            .iter()
            .map(|c| {
                let targets = c.targets.iter().map(String::as_str).collect();
                (c.program.as_str(), targets, c.run.as_deref())
            })
            .collect();
        let under = |t: &str| format!("{root}/{t}");
        assert_eq!(
            seen,
            vec![
                ("rsync", vec![under("into").as_str()], Some("42:4242")),
                ("pg_basebackup", vec![under("next").as_str()], None),
                (
                    "barman",
                    vec![under("recover").as_str(), "/srv/copy"],
                    Some("7:7")
                ),
            ]
        );
    }
}
