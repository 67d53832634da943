//! Tests: fitbit_parity.
