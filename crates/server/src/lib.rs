//! The Segl server: configuration, the axum router with one module per endpoint, the one
//! error-to-HTTP mapping, signing-key management, and the process lifecycle.
//!
//! Handlers are thin: parse the request, load what the decision needs from the store, call one
//! pure `segl-core` function, persist its effects, render. Protocol decisions live in
//! `segl-core`; persistence lives in `segl-store`.

pub mod app;
pub mod audit;
mod authorize;
pub mod clock;
pub mod config;
pub mod dev;
mod discovery;
pub mod dpop;
mod endsession;
pub mod error;
pub mod federation;
mod health;
mod introspect;
pub mod keys;
pub mod metrics;
mod own_tokens;
mod pages;
mod par;
pub mod ratelimit;
mod revocation;
pub mod session;
pub mod test_idp;
mod token;
mod userinfo;

pub use app::{App, serve};
