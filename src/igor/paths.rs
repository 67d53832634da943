//! Paths of the Igor tree, the old plugin's layout.

use crate::user::UserName;

/// `plugindata/<plugin>`: client id, secret, system.
pub fn app(plugin: &str) -> String {
    format!("plugindata/{plugin}")
}
/// `identities/<user>/plugindata/<plugin>`: token and per-user defaults.
pub fn user(plugin: &str, user: &UserName) -> String {
    format!("identities/{user}/plugindata/{plugin}")
}
/// The user's token.
pub fn token(plugin: &str, user: &UserName) -> String {
    format!("identities/{user}/plugindata/{plugin}/token")
}
/// The user's sensor data.
pub fn sensors(plugin: &str, user: &UserName) -> String {
    format!("sensors/{plugin}/{user}")
}
/// healthpull's status of a user (last success, last error, consent, rate limit).
pub fn status(plugin: &str, user: &UserName) -> String {
    format!("plugindata/{plugin}/status/{user}")
}
/// A pending consent, by the hash of its state.
pub fn pending(plugin: &str, key: &str) -> String {
    format!("plugindata/{plugin}/pending/{key}")
}
