//! Igor XML.
