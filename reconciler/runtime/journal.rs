//! A test hook: when `RECONCILER_STEP_JOURNAL` names a file, each step a worker
//! starts and finishes is appended to it as `start|end <unix ms> <pipeline>
//! <step>`, so the fleet tests can tell which instance ran what when, and that
//! no two ran one pipeline's steps at once.
//!
//! Compiled in only with the `failpoints` feature (as the pause points are): a
//! build for deployment carries nothing of it. Must not affect a step: a journal
//! that cannot be written is skipped.

/// A worker is about to run `step` of `pipeline`.
pub fn started(pipeline: &str, step: &str) {
    append("start", pipeline, step);
}

/// A worker's `step` of `pipeline` ended (whatever its outcome).
pub fn finished(pipeline: &str, step: &str) {
    append("end", pipeline, step);
}

#[cfg(feature = "failpoints")]
fn append(event: &str, pipeline: &str, step: &str) {
    use std::io::Write;
    let Some(path) = std::env::var_os("RECONCILER_STEP_JOURNAL") else {
        return;
    };
    let at = jiff::Timestamp::now().as_millisecond();
    // One write per line with O_APPEND: lines never interleave.
    let line = format!("{event} {at} {pipeline} {}\n", step.replace(' ', "_"));
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

#[cfg(not(feature = "failpoints"))]
fn append(_event: &str, _pipeline: &str, _step: &str) {}
