//! healthpull: a declarative OAuth2 health-data collector for Igor.

pub mod store;
pub mod xml;
