//! Shared helpers for the integration tests: prerequisites, a real Igor, a fake provider.

pub mod browser;
pub mod env;
pub mod fake_provider;
pub mod igor;
pub mod postgres;
pub mod serve_log;
pub mod tls;
