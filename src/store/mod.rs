//! Stores: one interface over the Igor tree, with an embedded and an Igor backend.
