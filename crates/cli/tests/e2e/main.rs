//! End-to-end tests: the real `segl` binary on a loopback port, configured by a file, spoken to
//! over HTTP. One test binary (kanidm's testkit, ripgrep's `TestCommand`), one module per area.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod harness;

mod audit;
mod browser;
mod client_credentials;
mod config_errors;
mod crash;
mod discovery;
mod dpop;
mod exchange;
mod federation;
mod hostile;
mod interop;
mod keys;
mod login;
mod login_rejections;
mod logs;
mod outage;
mod ratelimit;
mod refresh;
mod scaleout;
mod security_matrix;
