//! healthpull: a declarative OAuth2 health-data collector for Igor.
//!
//! Layout, in the order data flows (each folder imports only those above it):
//! - [`sensors`]: the compact sensor tree every fetch produces, and the sensor schema
//!   ([`sensors::schema`]) every tree is checked against;
//! - [`provider`]: provider files, loaded and checked (raw types -> compiled
//!   [`provider::Provider`]), with their request templates ([`provider::template`]);
//! - [`transform`]: the answer document and the pure mapping from answers to the sensor
//!   tree ([`transform::units`] for conversions);
//! - [`igor`]: Igor's JSON <-> XML conversion, byte for byte, and its tree paths;
//! - [`engine`]: parameters and date ranges ([`engine::params`]), HTTP requests and
//!   pagination ([`engine::request`]), and running methods through an injected
//!   [`engine::Caller`];
//! - [`settings`]: system and user settings and the one fetch plan;
//! - [`auth`]: OAuth2 and the refresh locks; [`http`]: the one transport;
//!   [`secret`]: redaction;
//! - [`store`]: the Igor tree, embedded (SQLite) or a running Igor;
//! - [`live`]: the live path (tokens, resilient calls, storing results) and the consent
//!   flow ([`live::consent`]);
//! - [`server`]: `serve` (the old plugin's entry points, setup page, schedule), its
//!   errors one [`server::AppError`];
//! - [`config`], [`app`]: the config file and the wiring from it ([`regular_file`] reads
//!   files safely, [`user`] names users).
//!
//! The command line (with `auth` and `igor-install`) is the binary's (`src/cli/`): the
//! library's errors are typed (`thiserror`); context for people is added only there.

pub mod app;
pub mod auth;
pub mod config;
pub mod engine;
pub mod halves;
pub mod history;
pub mod http;
pub mod igor;
pub mod live;
pub mod pages;
pub mod provider;
pub mod regular_file;
pub mod secret;
pub mod sensors;
pub mod server;
pub mod settings;
pub mod store;
pub mod transform;
pub mod user;
