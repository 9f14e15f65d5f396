//! The decisions of the Segl authorization server: pure, synchronous, and free of I/O.
//!
//! Every function here takes what it needs as arguments — the time (`now`), random values,
//! the client registry and the policy — and returns either a typed result or an [`OAuthError`]
//! that names the RFC error code. The server crate does the I/O around these calls: it reads
//! the request, loads what a decision needs, calls one function here, persists the effects and
//! renders the answer. `cargo tree -p segl-core` shows no tokio, sqlx, axum or reqwest.

pub mod audit;
pub mod authorize;
pub mod client_auth;
mod error;
pub mod exchange;
pub mod federation;
pub mod form;
pub mod grant;
pub mod identity;
pub mod issued;
pub mod organization;
pub mod policy;
pub mod refresh;
pub mod registry;
mod time;

pub use error::OAuthError;
pub use policy::{Policy, Profile};
pub use registry::{Api, Client, Registry, Tenancy};
pub use time::UnixTime;
