//! Where the fleet keeps what it shares in etcd: one prefix, one key per pipeline
//! and concern. Only names; nothing here talks to etcd.

/// Everything the fleet writes lives under this prefix.
pub const PREFIX: &str = "/reconciler/";

/// The ownership key: its value is the owner's instance name, bound to the
/// owner's lease, so it vanishes when the owner stops renewing.
pub fn owner(pipeline: &str) -> String {
    format!("{PREFIX}owner/{pipeline}")
}

/// The pipeline's status as its owner last published it (JSON).
pub fn status(pipeline: &str) -> String {
    format!("{PREFIX}status/{pipeline}")
}

/// The step the owner last claimed before starting it (JSON).
pub fn step(pipeline: &str) -> String {
    format!("{PREFIX}step/{pipeline}")
}

/// The pipeline a key is about, and which of the three kinds it is.
pub fn parse(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(PREFIX)?.split_once('/')
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_name_their_pipeline() {
        assert_eq!(
            super::parse(&super::owner("montagu")),
            Some(("owner", "montagu"))
        );
        assert_eq!(super::parse("/elsewhere/x"), None);
    }
}
