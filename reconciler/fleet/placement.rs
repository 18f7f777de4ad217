//! Which pipelines this instance campaigns for: a pure decision over plain data
//! (the instance's name and a pipeline's `placement.hosts`), so it is tested
//! without etcd. It must not look at who owns what: ownership is etcd's answer.

/// Whether the instance `me` may own a document whose spec names `hosts`
/// (`None`: any instance may).
pub fn campaigns_for(me: &str, hosts: Option<&[String]>) -> bool {
    hosts.is_none_or(|hosts| hosts.iter().any(|h| h == me))
}

/// Why `me` leaves a pinned document alone, for the status a non-owner shows.
pub fn placed_elsewhere(me: &str, hosts: Option<&[String]>) -> Option<String> {
    if campaigns_for(me, hosts) {
        return None;
    }
    Some(format!(
        "placed on {}, not on this instance ({me})",
        hosts.unwrap_or_default().join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn without_placement_every_instance_campaigns() {
        assert!(campaigns_for("annex", None));
        assert!(placed_elsewhere("annex", None).is_none());
    }

    #[test]
    fn a_pinned_pipeline_is_campaigned_for_only_by_its_hosts() {
        let pinned = hosts(&["annex", "annex2"]);
        assert!(campaigns_for("annex2", Some(&pinned)));
        assert!(!campaigns_for("production", Some(&pinned)));
        assert_eq!(
            placed_elsewhere("production", Some(&pinned)).unwrap(),
            "placed on annex, annex2, not on this instance (production)"
        );
    }

    #[test]
    fn an_empty_host_list_is_taken_by_nobody() {
        assert!(!campaigns_for("annex", Some(&[])));
    }
}
