//! Test support: igor.
