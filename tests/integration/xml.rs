//! Tests: xml.
