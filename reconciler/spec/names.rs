//! Validated names and short texts of the spec: IANA time zone names, Docker image
//! references, environment variable names, PostgreSQL setting names and values.
//! Each is a newtype that can only hold a value that passed its check, so code
//! past loading never re-validates; none of them does I/O beyond the time zone
//! database lookup.

use jiff::tz::TimeZone;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// An IANA time zone name, checked against the host's time zone database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZoneName {
    name: String,
    zone: TimeZone,
}

impl TimeZoneName {
    /// The time zone.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }
}

impl TryFrom<String> for TimeZoneName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        let zone = TimeZone::get(&name).map_err(|_| {
            format!("`{name}` is not a known time zone; use an IANA name such as `Europe/London` or `UTC`")
        })?;
        Ok(Self { name, zone })
    }
}

impl From<TimeZoneName> for String {
    fn from(value: TimeZoneName) -> String {
        value.name
    }
}

impl JsonSchema for TimeZoneName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TimeZoneName".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An IANA time zone name.",
            "examples": ["Europe/London", "UTC"],
        })
    }
}

/// A Docker image reference: `[registry/]name[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct ImageRef(String);

impl TryFrom<String> for ImageRef {
    type Error = String;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        let ok = v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && v.len() <= 255
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/:@._-".contains(c));
        if ok {
            Ok(Self(v))
        } else {
            Err(format!(
                "`{v}` is not a Docker image reference such as `vimc/montagu-db:master`"
            ))
        }
    }
}

impl From<ImageRef> for String {
    fn from(v: ImageRef) -> String {
        v.0
    }
}

impl ImageRef {
    /// The reference.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An environment variable name: letters, digits and `_`, not starting with a digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct EnvName(String);

impl TryFrom<String> for EnvName {
    type Error = String;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        let ok = v
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && v.len() <= 128
            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(Self(v))
        } else {
            Err(format!("`{v}` is not an environment variable name"))
        }
    }
}

impl From<EnvName> for String {
    fn from(v: EnvName) -> String {
        v.0
    }
}

impl EnvName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A PostgreSQL setting name: lowercase letters, digits, `_` and `.`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct SettingName(String);

/// Settings the replay sets itself: it must listen on no TCP port and archive nothing.
pub const RESERVED_SETTINGS: [&str; 9] = [
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "archive_mode",
    "archive_command",
    "logging_collector",
    "log_destination",
    "data_directory",
    "config_file",
];

impl TryFrom<String> for SettingName {
    type Error = String;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        if RESERVED_SETTINGS.contains(&v.as_str()) {
            return Err(format!(
                "`{v}` is set by the reconciler for the replay (no TCP listener, no archiving); remove it"
            ));
        }
        let ok = v.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && v.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
        if ok && v.len() <= 63 {
            Ok(Self(v))
        } else {
            Err(format!("`{v}` is not a PostgreSQL setting name"))
        }
    }
}

impl From<SettingName> for String {
    fn from(v: SettingName) -> String {
        v.0
    }
}

impl SettingName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A PostgreSQL setting value: any text without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct SettingValue(String);

impl TryFrom<String> for SettingValue {
    type Error = String;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        if v.chars().any(char::is_control) || v.len() > 1024 {
            Err("setting values must be at most 1024 characters without control characters".into())
        } else {
            Ok(Self(v))
        }
    }
}

impl From<SettingValue> for String {
    fn from(v: SettingValue) -> String {
        v.0
    }
}

impl SettingValue {
    /// The value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
