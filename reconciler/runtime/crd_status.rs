//! A condition as `run` records it, in the shape of the custom resources'
//! status (`spec::crd_status`): what a controller would write to the status
//! subresource. Only a change of shape; which condition holds was decided by
//! the planner, and nothing is written anywhere from here.

use crate::plan::ConditionStatus;
use crate::spec::crd_status::{ResourceCondition, ResourceConditionStatus};

use super::status::StatusCondition;

impl From<&StatusCondition> for ResourceCondition {
    fn from(recorded: &StatusCondition) -> Self {
        let condition = &recorded.condition;
        ResourceCondition {
            kind: condition.kind.to_string(),
            status: match condition.status {
                ConditionStatus::True => ResourceConditionStatus::True,
                ConditionStatus::False => ResourceConditionStatus::False,
                ConditionStatus::Unknown => ResourceConditionStatus::Unknown,
            },
            reason: condition.reason.to_string(),
            message: condition.message.clone(),
            subject: condition.subject.clone(),
            last_transition_time: recorded.last_transition_time,
            // A generation past i64::MAX cannot happen (one per spec change);
            // if it did, saying nothing beats saying something wrong.
            observed_generation: i64::try_from(recorded.observed_generation).ok(),
        }
    }
}
