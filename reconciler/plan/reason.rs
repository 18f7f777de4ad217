//! The reasons a condition can give: one CamelCase word each, stable for alerting,
//! rendered as the variant's name in JSON, metrics labels and text. Plain data:
//! which reason applies is decided by the planner's sections, never here, and
//! code decides by variant, never by comparing strings.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines [`Reason`] with one variant per name, [`Reason::ALL`] and the names.
macro_rules! reasons {
    ($($name:ident),* $(,)?) => {
        /// Why a condition has its status. Each reason is explained in
        /// `docs/outputs.md` (`tests/docs.rs` fails when one is not).
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum Reason {
            $(
                #[allow(missing_docs)]
                $name,
            )*
            /// A reason this version does not know: read from a status file an
            /// older or newer version wrote.
            Other(String),
        }

        impl Reason {
            /// Every reason the planner can give, in the order defined.
            pub const ALL: &'static [Reason] = &[$(Reason::$name),*];

            /// The CamelCase word.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                    Reason::Other(word) => word,
                }
            }
        }
    };
}

reasons! {
    // BaseBackupFresh
    NoBackup,
    EndTimeUnknown,
    BackupFromTheFuture,
    ClockSkew,
    Fresh,
    Stale,
    BarmanUnavailable,
    // RetentionSatisfied
    DeadBackups,
    Satisfied,
    FailedBackups,
    ObsoleteBackups,
    // VolumeFresh
    VolumeUnavailable,
    VolumeMissing,
    ForeignData,
    NoValidMarker,
    VolumeInUse,
    MarkerFromTheFuture,
    // VolumeFresh and StarportInSync: a process writes where a step would
    OrphanedProcess,
    ProcessWriting,
    ProcessesUnknown,
    // StarportInSync and MirrorInSync
    NotConfigured,
    StarportUnavailable,
    NotObserved,
    NoMetadata,
    OwnedByAnotherHost,
    InSync,
    OutOfSync,
    MirrorUnavailable,
    WaitingForStarport,
    // WalStreaming
    PrimaryNotStreaming,
    ReceiveWalStopped,
    SlotBroken,
    ArchiverErrors,
    WalTooOld,
    NotReported,
    Streaming,
    // SourceComplete and VolumeRestored
    SourceUnavailable,
    NoCompleteCopy,
    AgeUnknown,
    FromTheFuture,
    Complete,
    SourceStale,
    RestoreInterrupted,
    Restored,
    OutOfDate,
    // Stalled
    RepeatedFailures,
    WaitingTooLong,
    // Ready
    Converged,
    NotConverged,
}

impl Reason {
    /// The reason named `word`; [`Reason::Other`] for a word this version does
    /// not know.
    pub fn from_word(word: &str) -> Reason {
        Reason::ALL
            .iter()
            .find(|r| r.as_str() == word)
            .cloned()
            .unwrap_or_else(|| Reason::Other(word.to_string()))
    }
}

impl From<&str> for Reason {
    fn from(word: &str) -> Self {
        Reason::from_word(word)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let word = String::deserialize(deserializer)?;
        Ok(Reason::from_word(&word))
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn a_reason_reads_back_as_itself_and_an_unknown_word_is_kept() {
        for reason in Reason::ALL {
            let json = serde_json::to_string(reason).unwrap();
            assert_eq!(json, format!("\"{reason}\""));
            assert_eq!(&serde_json::from_str::<Reason>(&json).unwrap(), reason);
        }
        let other: Reason = serde_json::from_str("\"SomethingNew\"").unwrap();
        assert_eq!(other, Reason::Other("SomethingNew".to_string()));
        assert_eq!(serde_json::to_string(&other).unwrap(), "\"SomethingNew\"");
    }
}
