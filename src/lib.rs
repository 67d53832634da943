//! healthpull: a declarative OAuth2 health-data collector for Igor.
//!
//! Layout, in the order data flows:
//! - [`provider`]: provider files, loaded and checked (raw types -> compiled [`provider::Provider`]);
//! - [`params`]: keyword arguments, their types, defaults, rules and date ranges;
//! - [`template`]: request templates and their helpers;
//! - [`request`]: HTTP requests from a method and its arguments, and pagination;
//! - [`engine`]: runs methods through an injected [`engine::Caller`] and merges results;
//! - [`transform`]: the pure mapping from answers to the sensor tree ([`units`] for conversions);
//! - [`schema`]: the sensor output schema every tree is checked against;
//! - [`xml`]: Igor's JSON <-> XML conversion, byte for byte;
//! - [`store`]: the Igor tree, embedded (SQLite) or a running Igor; [`lock`] serialises refreshes;
//! - [`oauth`], [`live`], [`http`], [`secret`]: the live path: tokens, resilient calls, redaction;
//! - [`server`]: `serve` (the old plugin's entry points, setup page, schedule), its errors one [`server::AppError`];
//! - [`config`], [`app`]: the config file and the wiring from it ([`regular_file`] reads files safely).
//!
//! The command line (with `auth` and `igor-install`) is the binary's (`src/cli/`): the
//! library's errors are typed (`thiserror`); context for people is added only there.

pub mod app;
pub mod config;
pub mod consent;
pub mod engine;
pub mod http;
pub mod live;
pub mod lock;
pub mod oauth;
pub mod params;
pub mod provider;
pub mod regular_file;
pub mod request;
pub mod schema;
pub mod secret;
pub mod sensors;
pub mod server;
pub mod settings;
pub mod store;
pub mod template;
pub mod transform;
pub mod units;
pub mod user;
pub mod xml;
