//! The one place the real clock and time zone are read for planning: the planner
//! itself never reads a clock (it is handed a [`PlanContext`]); `diff`, `apply`
//! and `run` all start from here, so a test can hand any instant instead.

use jiff::tz::TimeZone;

use crate::plan::PlanContext;

/// The plan context for the real now.
pub fn context_now() -> PlanContext {
    PlanContext {
        now: jiff::Timestamp::now(),
        local_time_zone: TimeZone::system(),
    }
}
