//! Records the git commit the binary is built from, for `reconciler_build_info`.
//!
//! `RECONCILER_GIT_COMMIT` in the environment wins (a build from a tarball can say
//! where it came from); otherwise `git rev-parse --short HEAD`; otherwise "unknown".
//! Never fails the build: no git, no repository, a broken one all mean "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RECONCILER_GIT_COMMIT");
    let commit = match std::env::var("RECONCILER_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // HEAD moves (checkout) and the reflog grows (commit) in this worktree's
            // own git directory; watch both, only when they exist (a missing file
            // would re-run this script on every build).
            for path in ["HEAD", "logs/HEAD"] {
                if let Some(p) = git(&["rev-parse", "--git-path", path])
                    && std::path::Path::new(&p).exists()
                {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
            git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    println!("cargo:rustc-env=RECONCILER_GIT_COMMIT={commit}");
}
