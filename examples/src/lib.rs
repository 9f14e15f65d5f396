//! Segl examples: small programs that show how an API uses Segl's libraries. Not published.
//!
//! - [`reseptformidleren`]: a demo API that verifies Segl (or HelseID) access tokens with
//!   `segl-verify` and tells the caller who it is.
//! - [`sfm`]: a demo of SFM, an API that accepts an EHR's token, exchanges it (RFC 8693) for a
//!   token to Reseptformidleren, and calls Reseptformidleren on the EHR's behalf.
//! - [`scenario`]: the whole EHR → SFM → Reseptformidleren chain on one machine, with Segl in
//!   process (`cargo run -p segl-examples --bin scenario`).

pub mod reseptformidleren;
pub mod scenario;
pub mod sfm;
