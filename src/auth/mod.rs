//! Authorization: OAuth2 as the provider file describes it ([`oauth`]) and the locks that
//! let one refresh of a token run at a time, in this process and across processes
//! ([`lock`]). Nothing here reads the store: the live path decides what is kept.

pub mod lock;
pub mod oauth;
