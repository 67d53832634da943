//! Igor's side of the data: its exact JSON <-> XML conversion ([`xml`]) and the paths of
//! the tree the old plugin used ([`paths`]). Both stores and the server write through
//! these; neither knows about providers, tokens or fetching.

pub mod paths;
pub mod xml;
