//! Validated scalar values used by the spec: names, paths and durations.
//!
//! Each type checks its input when it is deserialized, so a bad value is reported
//! by the YAML loader with the `file:line:col` of the offending scalar. Everything
//! that later reaches a command line or a filesystem path passes through one of
//! these types first. This module performs no I/O.
//!
//! Just over 600 lines: one validated type per kind of value, each with its
//! message for an operator, and their tests (a quarter of it).

use std::fmt;
use std::path::{Path, PathBuf};

use jiff::{Span, Timestamp, tz::TimeZone};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Longest accepted name, as for a Kubernetes object name segment.
const MAX_NAME_LEN: usize = 63;

fn check_name(kind: &str, value: &str, allow_underscore_dot: bool) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{kind} must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(format!(
            "{kind} `{value}` is longer than {MAX_NAME_LEN} characters"
        ));
    }
    let first_ok = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = value.chars().all(|c| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || c == '-'
            || (allow_underscore_dot && (c == '_' || c == '.' || c.is_ascii_uppercase()))
    });
    if !first_ok || !rest_ok {
        let allowed = if allow_underscore_dot {
            "letters, digits, `-`, `_` and `.`, starting with a letter or digit"
        } else {
            "lowercase letters, digits and `-`, starting with a letter or digit"
        };
        return Err(format!("{kind} `{value}` may contain only {allowed}"));
    }
    if value.contains("..") {
        return Err(format!("{kind} `{value}` must not contain `..`"));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $underscore:expr, $pattern:literal, $example:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                check_name($kind, &value, $underscore)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_NAME_LEN,
                    "pattern": $pattern,
                    "examples": [$example],
                })
            }
        }
    };
}

string_newtype!(
    /// A pipeline name (`metadata.name`): lowercase letters, digits and `-`.
    /// It names the pipeline in `diff`, status and metrics.
    PipelineName,
    "pipeline name",
    false,
    "^[a-z0-9][a-z0-9-]*$",
    "montagu"
);

string_newtype!(
    /// A barman server name, or a starport target name: letters, digits, `-`, `_`, `.`.
    /// It never starts with `-`, so it can't be mistaken for an option on a command line.
    ObjectName,
    "name",
    true,
    "^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    "montagu"
);

/// An absolute, normalised filesystem path (no `..`, no `.` components, no control
/// characters, no shell metacharacters that could surprise a reader of logs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AbsolutePath(PathBuf);

impl AbsolutePath {
    /// The path.
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// The last component, which every accepted path other than `/` has.
    pub fn file_name(&self) -> Option<&str> {
        self.0.file_name().and_then(|n| n.to_str())
    }
}

impl TryFrom<String> for AbsolutePath {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let path = Path::new(&value);
        if !path.is_absolute() {
            return Err(format!(
                "path `{value}` is relative; give an absolute path such as `/srv/{value}`"
            ));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| c.is_control() || matches!(c, '$' | '`' | '"' | '\'' | '\\' | '*' | '?'))
        {
            return Err(format!(
                "path `{}` contains the character {bad:?}; use plain letters, digits, `/`, `-`, `_` and `.`",
                value.escape_debug()
            ));
        }
        // `Path::components` silently drops inner `.`, so look at the raw segments.
        if value
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return Err(format!(
                "path `{value}` contains `.` or `..`; give the normalised path"
            ));
        }
        if path.parent().is_none() {
            return Err("path `/` is not allowed here; name a directory below it".to_string());
        }
        let normalised: PathBuf = path.components().collect();
        Ok(Self(normalised))
    }
}

impl From<AbsolutePath> for String {
    fn from(value: AbsolutePath) -> String {
        value.0.to_string_lossy().into_owned()
    }
}

impl fmt::Display for AbsolutePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.display())
    }
}

impl JsonSchema for AbsolutePath {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AbsolutePath".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An absolute path without `.` or `..` components.",
            "pattern": "^/",
            "examples": ["/srv/nightly/montagu_db_volume"],
        })
    }
}

/// A directory the reconciler writes (and may wipe): an [`AbsolutePath`] at least two
/// levels deep and outside the system's own directories, so that a typo can never
/// point a recovery at `/etc` or `/srv`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DataPath(AbsolutePath);

/// Directories the reconciler never writes into.
const SYSTEM_DIRS: [&str; 12] = [
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin", "/sys",
    "/usr",
];

impl DataPath {
    /// The path.
    pub fn as_path(&self) -> &Path {
        self.0.as_path()
    }

    /// The last component.
    pub fn file_name(&self) -> Option<&str> {
        self.0.file_name()
    }
}

impl TryFrom<String> for DataPath {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let path = AbsolutePath::try_from(value)?;
        if path.as_path().components().count() < 3 {
            return Err(format!(
                "`{path}` is a top-level directory; name a directory of its own below it, e.g. `{path}/reconciler`"
            ));
        }
        if let Some(system) = SYSTEM_DIRS.iter().find(|d| path.as_path().starts_with(d)) {
            return Err(format!(
                "`{path}` is inside the system directory {system}; put data under /srv, /var/lib or /mnt"
            ));
        }
        Ok(Self(path))
    }
}

impl From<DataPath> for String {
    fn from(value: DataPath) -> String {
        value.0.into()
    }
}

impl fmt::Display for DataPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl JsonSchema for DataPath {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DataPath".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An absolute directory at least two levels deep, outside /etc, /usr and the other system directories.",
            "pattern": "^/[^/]+/",
            "examples": ["/srv/nightly/montagu_db_volume", "/mnt/data/starport"],
        })
    }
}

/// A human duration such as `30d`, `24h`, `1h30m` or `3 months`.
///
/// Calendar units (days, weeks, months, years) are counted in UTC, so `1d` is 24 hours
/// and `3 months` ends on the same day of the month three months later, as barman's
/// `RECOVERY WINDOW OF 3 MONTHS` does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration(Span);

impl PartialEq for HumanDuration {
    /// Equal when written with the same units: `24h` and `1d` differ, as in the YAML.
    fn eq(&self, other: &Self) -> bool {
        self.0.fieldwise() == other.0.fieldwise()
    }
}

impl Eq for HumanDuration {}

/// The longest duration the spec accepts anywhere (ten years): larger values are
/// almost certainly typos and would overflow timestamp arithmetic.
const MAX_DURATION_YEARS: i64 = 10;

impl HumanDuration {
    /// The instant `self` after `from` (calendar units counted in UTC).
    pub fn after(&self, from: Timestamp) -> Timestamp {
        from.to_zoned_datetime(TimeZone::UTC)
            .checked_add(self.0)
            .map(|z| z.timestamp())
            // Bounded at parse time, so this only triggers at the very end of time.
            .unwrap_or(Timestamp::MAX)
    }

    /// The instant `self` before `until` (calendar units counted in UTC).
    pub fn before(&self, until: Timestamp) -> Timestamp {
        until
            .to_zoned_datetime(TimeZone::UTC)
            .checked_sub(self.0)
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MIN)
    }

    /// The duration as a std `Duration`, counting calendar units as in [`Self::after`]
    /// from the Unix epoch; used for timeouts, which are never calendar-sensitive.
    pub fn to_std(&self) -> std::time::Duration {
        let end = self.after(Timestamp::UNIX_EPOCH);
        std::time::Duration::from_secs(end.as_second().max(0).unsigned_abs())
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let hint = "write a duration such as `30d`, `24h`, `1h30m` or `3 months`";
        let span: Span = value
            .trim()
            .parse()
            .map_err(|_| format!("`{value}` is not a duration; {hint}"))?;
        if span.is_negative() {
            return Err(format!("duration `{value}` is negative; {hint}"));
        }
        if span.is_zero() {
            return Err(format!("duration `{value}` is zero; {hint}"));
        }
        let limit = Timestamp::UNIX_EPOCH
            .to_zoned_datetime(TimeZone::UTC)
            .checked_add(Span::new().years(MAX_DURATION_YEARS))
            .map_err(|e| e.to_string())?;
        let end = Timestamp::UNIX_EPOCH
            .to_zoned_datetime(TimeZone::UTC)
            .checked_add(span);
        match end {
            Ok(end) if end <= limit => Ok(Self(span)),
            _ => Err(format!(
                "duration `{value}` is longer than {MAX_DURATION_YEARS} years; {hint}"
            )),
        }
    }
}

impl From<HumanDuration> for String {
    fn from(value: HumanDuration) -> String {
        value.to_string()
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The alternate form is jiff's "friendly" format: `1h 30m`, `3mo`.
        write!(f, "{:#}", self.0)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HumanDuration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit, repeated (`s`, `m`, `h`, `d`, `w`, `months`, `y`), e.g. `30d`, `24h`, `1h30m`, `3 months`.",
            "pattern": "^\\s*[0-9]",
            "examples": ["30d", "24h", "1h30m", "3 months"],
        })
    }
}

/// A time of day, `HH:MM`, as used by start windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay(jiff::civil::Time);

impl TimeOfDay {
    /// The civil time.
    pub fn time(&self) -> jiff::civil::Time {
        self.0
    }
}

impl TryFrom<String> for TimeOfDay {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let (h, m) = value.split_once(':').ok_or_else(|| {
            format!("`{value}` is not a time of day; write `HH:MM`, e.g. `06:00`")
        })?;
        let parse = |s: &str, max: i8| s.parse::<i8>().ok().filter(|v| (0..=max).contains(v));
        match (parse(h, 23), parse(m, 59), h.len() == 2 && m.len() == 2) {
            (Some(h), Some(m), true) => Ok(Self(jiff::civil::time(h, m, 0, 0))),
            _ => Err(format!(
                "`{value}` is not a time of day; write `HH:MM` from `00:00` to `23:59`"
            )),
        }
    }
}

impl From<TimeOfDay> for String {
    fn from(value: TimeOfDay) -> String {
        value.0.strftime("%H:%M").to_string()
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.strftime("%H:%M"))
    }
}

impl JsonSchema for TimeOfDay {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TimeOfDay".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A time of day, `HH:MM` (24-hour clock).",
            "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$",
            "examples": ["00:00", "06:00"],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_the_documented_forms() {
        for ok in ["30d", "24h", "1h30m", "3 months", "90 days", "1w"] {
            assert!(HumanDuration::try_from(ok.to_string()).is_ok(), "{ok}");
        }
    }

    #[test]
    fn durations_reject_zero_negative_absurd_and_garbage() {
        for bad in ["0s", "-3d", "11y", "100000d", "soon", "", "30"] {
            let err = HumanDuration::try_from(bad.to_string()).unwrap_err();
            assert!(err.contains("duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn month_windows_count_calendar_months() {
        let d = HumanDuration::try_from("3 months".to_string()).unwrap();
        let now: Timestamp = "2026-05-31T12:00:00Z".parse().unwrap();
        assert_eq!(d.before(now).to_string(), "2026-02-28T12:00:00Z");
    }

    #[test]
    fn names_reject_path_and_shell_characters() {
        for bad in ["a/b", "..", "-rf", "a b", "a;b", "$(x)", "Montagu"] {
            assert!(PipelineName::try_from(bad.to_string()).is_err(), "{bad}");
        }
        for bad in ["a/b", "..", "-rf", "a b", "a..b", ""] {
            assert!(ObjectName::try_from(bad.to_string()).is_err(), "{bad}");
        }
        assert!(ObjectName::try_from("barman_to_starport".to_string()).is_ok());
    }

    #[test]
    fn paths_must_be_absolute_and_normalised() {
        for bad in [
            "srv/x",
            "/srv/../etc",
            "/srv/./x",
            "/",
            "/srv/$HOME",
            "/a\nb",
        ] {
            assert!(AbsolutePath::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
        let p = AbsolutePath::try_from("/srv/nightly/vol/".to_string()).unwrap();
        assert_eq!(p.file_name(), Some("vol"));
    }

    #[test]
    fn times_of_day_are_strict() {
        assert!(TimeOfDay::try_from("06:00".to_string()).is_ok());
        for bad in ["6:00", "24:00", "12:60", "noon"] {
            assert!(TimeOfDay::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }
}

/// Deserializers for the spec's whole numbers. A value out of range or of the wrong
/// type is reported with the field's name and the range, e.g.
/// `retention.keep must be a whole number from 1 to 4294967295 (got -2)`, where
/// serde alone would say `invalid u32`.
pub(crate) mod whole {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{self, Visitor};

    /// What the YAML held instead of a number in range, as the message shows it.
    enum Got {
        Number(i128),
        Null,
        Other(String),
    }

    struct WholeNumber;

    impl<'de> Visitor<'de> for WholeNumber {
        type Value = Got;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Got, E> {
            Ok(Got::Number(v.into()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Got, E> {
            Ok(Got::Number(v.into()))
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<Got, E> {
            Ok(Got::Number(v))
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<Got, E> {
            Ok(i128::try_from(v).map_or_else(|_| Got::Other(v.to_string()), Got::Number))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Got, E> {
            Ok(Got::Other(v.to_string()))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Got, E> {
            Ok(Got::Other(v.to_string()))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Got, E> {
            Ok(Got::Other(format!("{v:?}")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Got, E> {
            Ok(Got::Null)
        }
        fn visit_none<E: de::Error>(self) -> Result<Got, E> {
            Ok(Got::Null)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Got, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Got, A::Error> {
            Ok(Got::Other("a list".into()))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Got, A::Error> {
            Ok(Got::Other("a mapping".into()))
        }
    }

    /// A whole number from `min` to `max` in `field`; `None` for an empty value
    /// when `optional`.
    fn read<'de, D: Deserializer<'de>>(
        d: D,
        field: &str,
        min: u64,
        max: u64,
        optional: bool,
    ) -> Result<Option<u64>, D::Error> {
        let got = match d.deserialize_any(WholeNumber)? {
            Got::Null if optional => return Ok(None),
            Got::Number(n) => match u64::try_from(n) {
                Ok(n) if (min..=max).contains(&n) => return Ok(Some(n)),
                _ => n.to_string(),
            },
            Got::Null => "nothing".to_string(),
            Got::Other(text) => text,
        };
        Err(de::Error::custom(format!(
            "{field} must be a whole number from {min} to {max} (got {got})"
        )))
    }

    fn required<'de, D: Deserializer<'de>>(
        d: D,
        field: &str,
        min: u64,
        max: u64,
    ) -> Result<u64, D::Error> {
        read(d, field, min, max, false)?
            .ok_or_else(|| de::Error::custom(format!("{field} must be a whole number")))
    }

    /// `retention.keep`: 1 to u32::MAX, optional.
    pub fn keep<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        Ok(read(d, "retention.keep", 1, u32::MAX.into(), true)?.map(|n| n as u32))
    }

    /// `retention.minimumRedundancy`: 1 to u32::MAX.
    pub fn minimum_redundancy<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        Ok(required(d, "retention.minimumRedundancy", 1, u32::MAX.into())? as u32)
    }

    /// An ssh `port`: 1 to 65535.
    pub fn ssh_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        Ok(required(d, "ssh.port", 1, u16::MAX.into())? as u16)
    }
}
