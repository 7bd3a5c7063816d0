//! Serving: the state requests are answered from, the supervisor that decides which version
//! serves, the HTTP endpoint, and the `pooch models` commands.

pub mod http;
pub mod models;
pub mod serving;
pub mod supervisor;
