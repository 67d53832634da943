//! The integration test crate: one binary, one module per area, so the suite links once.

mod support;

mod cluster;
mod constructs;
mod engine;
mod fake_provider_selftest;
mod fitbit_parity;
mod igor_converter;
mod input;
mod live;
mod local_time;
mod providers;
mod server;
mod server_hardening;
mod store;
mod tidy;
mod transport;
mod xml;
