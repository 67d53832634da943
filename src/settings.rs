//! Checks of what people store as settings, shared by the command line and the server.
//!
//! The app's `system` and a user's stored defaults change what later fetches do, so a
//! value that would be ignored or misread is refused when it is written, with the
//! accepted values listed, rather than accepted and quietly replaced by a default.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use indexmap::IndexMap;

use crate::engine::FetchPlan;
use crate::engine::request::CallContext;
use crate::provider::Provider;
use crate::transform::Layout;
use crate::transform::local;
use crate::transform::units::UnitSystem;
use crate::user::UserName;

/// A setting that cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// `system` is not a unit system.
    #[error(
        "unknown unit system `{0}`: use en_US or us (pounds, miles), en_GB or uk (stone, miles), metric (kilograms, kilometres), or another locale such as nl_NL (metric)"
    )]
    System(String),
    /// A stored default that no method of the provider takes.
    #[error("provider `{provider}` has no parameter `{key}`; its methods take: {declared}")]
    UnknownKey {
        /// Provider.
        provider: String,
        /// The key given.
        key: String,
        /// Keys that may be stored.
        declared: String,
    },
    /// A stored `methods` naming a method the provider lacks.
    #[error("provider `{provider}` has no method `{method}`; it has: {known}")]
    UnknownMethod {
        /// Provider.
        provider: String,
        /// The method given.
        method: String,
        /// Its methods.
        known: String,
    },
    /// A value its parameter does not accept.
    #[error("{0}")]
    Value(String),
    /// `timezone` is not an IANA time zone.
    #[error(
        "unknown time zone `{0}`: use an IANA name such as America/Los_Angeles, Europe/Amsterdam or UTC"
    )]
    TimeZone(String),
    /// `host` is not one the provider declares.
    #[error("provider `{provider}` has no host `{host}`; its hosts: {known}")]
    Host {
        /// Provider.
        provider: String,
        /// The host given.
        host: String,
        /// Its hosts.
        known: String,
    },
    /// A key written by healthpull itself.
    #[error("`{0}` is written by healthpull, not by hand")]
    Reserved(String),
    /// Nothing to fetch: fetching nothing would replace stored data with an empty tree.
    #[error(
        "no methods given and provider `{0}` has no default_methods: pass methods=a,b (--methods) or store the user's `methods`"
    )]
    NoMethods(String),
}

impl SettingError {
    /// The setting the error is about (the field to show it beside).
    pub fn field(&self) -> &str {
        match self {
            SettingError::System(_) => "system",
            SettingError::UnknownKey { key, .. } => key,
            SettingError::UnknownMethod { .. } => "methods",
            SettingError::Value(_) => "",
            SettingError::TimeZone(_) => "timezone",
            SettingError::Host { .. } => "host",
            SettingError::Reserved(key) => key,
            SettingError::NoMethods(_) => "methods",
        }
    }
}

/// A user's stored settings a fetch uses (`identities/<user>/plugindata/<plugin>` and
/// the app's `system`).
#[derive(Debug, Clone, Default)]
pub struct UserSettings {
    /// Stored keyword defaults (every key but `token` and `methods`).
    pub defaults: IndexMap<String, String>,
    /// Stored `methods`.
    pub methods: Option<String>,
    /// `plugindata/<plugin>/system`.
    pub system: Option<String>,
    /// The user's stored `timezone` (an IANA name).
    pub timezone: Option<String>,
    /// The host the user's connection lives on (`api.hosts`).
    pub host: Option<String>,
}

/// What one fetch asks for; the user's stored settings and the provider fill the rest.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    /// Comma-separated methods.
    pub methods: Option<String>,
    /// Keyword arguments.
    pub explicit: IndexMap<String, String>,
    /// Unit system overriding the stored one.
    pub system: Option<String>,
    /// Layout of the result.
    pub layout: Layout,
}

/// The plan of one fetch, the same for the command line, the server and the schedule:
/// asked methods, else the stored ones, else the provider's defaults; the asked unit
/// system, else the stored one, else the provider's default, checked; the user's time
/// zone (see [`user_zone`]) decides which day `today` is.
pub fn plan(
    provider: &Provider,
    user: &UserName,
    asked: Asked,
    stored: Option<&UserSettings>,
    client_id: Option<String>,
    now: DateTime<Utc>,
) -> Result<FetchPlan, SettingError> {
    let methods = match asked
        .methods
        .as_deref()
        .or_else(|| stored.and_then(|s| s.methods.as_deref()))
    {
        Some(m) => crate::engine::split_methods(m),
        None => provider.default_methods.clone(),
    };
    if methods.is_empty() {
        return Err(SettingError::NoMethods(provider.name.clone()));
    }
    let system = asked
        .system
        .or_else(|| stored.and_then(|s| s.system.clone()))
        .unwrap_or_else(|| provider.api.default_system.clone());
    check_system(&system)?;
    let zone = user_zone(stored.and_then(|s| s.timezone.as_deref()))?;
    let host = stored
        .and_then(|s| s.host.clone())
        .filter(|h| !h.is_empty());
    if let Some(h) = &host {
        check_host(provider, h)?;
    }
    Ok(FetchPlan {
        methods,
        explicit: asked.explicit,
        stored: stored.map(|s| s.defaults.clone()).unwrap_or_default(),
        layout: asked.layout,
        today: local::today_in(now, zone),
        zone,
        host,
        zone_set: stored
            .and_then(|s| s.timezone.as_deref())
            .is_some_and(|z| !z.trim().is_empty()),
        call: CallContext {
            system,
            client_id,
            provider_user_id: None,
            now: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            zone: zone.name().to_owned(),
            user: user.to_string(),
        },
    })
}

/// Checks a `system` setting.
pub fn check_system(value: &str) -> Result<UnitSystem, SettingError> {
    UnitSystem::parse(value).ok_or_else(|| SettingError::System(value.to_owned()))
}

/// The user's time zone: the stored `timezone`, else the machine's (`TZ`, then the
/// system's), else UTC. A stored name that is not a zone is an error, never UTC.
pub fn user_zone(stored: Option<&str>) -> Result<Tz, SettingError> {
    match stored.filter(|s| !s.trim().is_empty()) {
        Some(name) => check_timezone(name),
        None => Ok(local::machine_zone()),
    }
}

/// Checks a `timezone` setting: an IANA zone name.
pub fn check_timezone(value: &str) -> Result<Tz, SettingError> {
    local::parse_zone(value).ok_or_else(|| SettingError::TimeZone(value.to_owned()))
}

/// Checks a `host` setting: one of the hosts the provider declares.
pub fn check_host(provider: &Provider, value: &str) -> Result<(), SettingError> {
    if provider.api.hosts.contains_key(value) {
        return Ok(());
    }
    Err(SettingError::Host {
        provider: provider.name.clone(),
        host: value.to_owned(),
        known: if provider.api.hosts.is_empty() {
            "none: it has one host".to_owned()
        } else {
            join(provider.api.hosts.keys().map(String::as_str))
        },
    })
}

/// Keys every provider accepts besides its parameters (and `host` where it declares
/// hosts).
const USER_KEYS: [&str; 2] = ["methods", "timezone"];

/// Checks one stored default of a user: `methods` must name methods of `provider`,
/// any other key must be a parameter some method declares, and its value must be
/// one at least one declaring method accepts. An empty value (removing the key) is always fine,
/// so a key stored before it was checked can be removed.
pub fn check_user_default(provider: &Provider, key: &str, value: &str) -> Result<(), SettingError> {
    if key == "token" {
        return Err(SettingError::Reserved(key.to_owned()));
    }
    if value.is_empty() {
        return Ok(());
    }
    if key == "timezone" {
        return check_timezone(value).map(|_| ());
    }
    if key == "host" {
        return check_host(provider, value);
    }
    if key == "methods" {
        for method in crate::engine::split_methods(value) {
            if !provider.methods.contains_key(&method) {
                return Err(SettingError::UnknownMethod {
                    provider: provider.name.clone(),
                    method,
                    known: join(provider.methods.keys().map(String::as_str)),
                });
            }
        }
        return Ok(());
    }
    let declaring: Vec<_> = provider
        .methods
        .values()
        .filter_map(|m| m.params.get(key))
        .collect();
    if declaring.is_empty() {
        return Err(SettingError::UnknownKey {
            provider: provider.name.clone(),
            key: key.to_owned(),
            declared: join(declared_keys(provider).iter().map(String::as_str)),
        });
    }
    // Methods may declare a key with different types or values; a value one of them
    // takes is kept (the others never receive it unless it suits them too).
    let mut first_error = None;
    for p in declaring {
        match crate::provider::values::check_value(key, p, value) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(SettingError::Value(first_error.unwrap_or_default()))
}

/// Every key a user of `provider` may store, in the order the provider declares them.
pub fn declared_keys(provider: &Provider) -> Vec<String> {
    let mut keys: Vec<String> = USER_KEYS.iter().map(|k| (*k).to_owned()).collect();
    if !provider.api.hosts.is_empty() {
        keys.push("host".to_owned());
    }
    for m in provider.methods.values() {
        for name in m.params.keys() {
            if !keys.contains(name) {
                keys.push(name.clone());
            }
        }
    }
    keys
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systems_are_checked_and_unknown_ones_list_the_accepted_values() {
        for ok in ["en_US", "us", "en_GB", "UK", "metric", "nl_NL", "de_DE"] {
            assert!(check_system(ok).is_ok(), "{ok}");
        }
        for bad in ["imperial", "", "metrics", "nl", "en-US-x"] {
            let e = check_system(bad).unwrap_err().to_string();
            assert!(e.contains("en_US") && e.contains("metric"), "{e}");
        }
    }

    #[test]
    fn time_zones_are_iana_names_and_a_bad_one_is_never_utc() {
        assert_eq!(
            user_zone(Some("America/Los_Angeles")).unwrap().name(),
            "America/Los_Angeles"
        );
        for bad in ["PST", "America/Springfield", "+01:00", "utc+1"] {
            let e = user_zone(Some(bad)).unwrap_err();
            assert_eq!(e.field(), "timezone");
            assert!(e.to_string().contains("America/Los_Angeles"), "{e}");
        }
    }
}
