//! segl-verify against locally minted tokens and proofs: every check next to its near-miss
//! twin, the JWKS refetch against a live loopback issuer, the replay cache bound, and the axum
//! extractor.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod harness;

mod bearer;
mod dpop;
mod extractor;
mod refetch;
mod replay;
