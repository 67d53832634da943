//! Tests: fake_provider_selftest.
