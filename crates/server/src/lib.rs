//! The Segl server: configuration, the axum router with one module per endpoint, the one
//! error-to-HTTP mapping, signing-key management, and the process lifecycle.
//!
//! Handlers are thin: parse the request, load what the decision needs from the store, call one
//! pure `segl-core` function, persist its effects, render. Protocol decisions live in
//! `segl-core`; persistence lives in `segl-store`.

pub mod app;
pub mod clock;
pub mod config;
pub mod dev;
mod discovery;
pub mod dpop;
pub mod error;
mod health;
pub mod keys;
mod token;

pub use app::{App, serve};
