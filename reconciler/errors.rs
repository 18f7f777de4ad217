//! How an error is rendered for an operator: the error and every source, on one
//! line. Used wherever a failure becomes a message (an unobservable fact, a failed
//! step, a log line), so it sits below every layer that reports.

/// Renders an error and its sources on one line: `a: b: c`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
