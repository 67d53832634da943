//! Test support: fake_provider.
