//! Replays the fuzz corpora on a stable toolchain: every file under `fuzz/corpus/<target>/`
//! (the checked-in seeds) and `fuzz/regressions/<target>/` (inputs that once failed) goes
//! through the very function the fuzz target `<target>` calls (`fuzz/src/lib.rs`, included
//! here), so a regression fails `cargo test` without cargo-fuzz or nightly flags.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[allow(dead_code)]
#[path = "../../../fuzz/src/lib.rs"]
mod harness;

use harness::Outcome;
use std::path::{Path, PathBuf};

type Target = fn(&[u8]) -> Outcome;

const TARGETS: [(&str, Target); 6] = [
    ("jws", harness::jws),
    ("dpop", harness::dpop),
    ("client_assertion", harness::client_assertion),
    ("token_form", harness::token_form),
    ("org_details", harness::org_details),
    ("strict_json", harness::strict_json),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn target(name: &str) -> Target {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("{name} is not a fuzz target (fuzz/Cargo.toml)"))
}

/// `(target, file)` for every file in `fuzz/<dir>/<target>/`, sorted.
fn files(dir: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(targets) = std::fs::read_dir(fuzz_dir().join(dir)) else {
        return out;
    };
    for t in targets {
        let t = t.unwrap();
        if !t.file_type().unwrap().is_dir() {
            continue;
        }
        let name = t.file_name().into_string().unwrap();
        for f in std::fs::read_dir(t.path()).unwrap() {
            let f = f.unwrap();
            if f.file_type().unwrap().is_file() {
                out.push((name.clone(), f.path()));
            }
        }
    }
    out.sort();
    out
}

/// Runs one file, naming it when it panics.
fn replay(name: &str, path: &Path) -> Outcome {
    let data = std::fs::read(path).unwrap();
    let f = target(name);
    match std::panic::catch_unwind(|| f(&data)) {
        Ok(outcome) => outcome,
        Err(_) => panic!("fuzz target {name} fails on {}", path.display()),
    }
}

#[test]
fn seed_corpora_replay_and_are_valid_inputs() {
    let seeds = files("corpus");
    for (name, _) in TARGETS {
        assert!(
            seeds.iter().any(|(t, _)| t == name),
            "no seed corpus for {name}"
        );
    }
    // The seeds are real inputs (a signed JWT, a DPoP proof, a token request…): each one gets
    // all the way through, so the fuzzer starts from the happy path.
    for (name, path) in &seeds {
        assert_eq!(
            replay(name, path),
            Outcome::Accepted,
            "seed {} is not accepted",
            path.display()
        );
    }
}

#[test]
fn regressions_replay() {
    let found = files("regressions");
    for (name, path) in &found {
        replay(name, path);
    }
}

#[test]
fn generated_seeds_match_the_checked_in_corpus() {
    let checked_in: Vec<(String, String)> = files("corpus")
        .into_iter()
        .map(|(t, p)| (t, p.file_name().unwrap().to_string_lossy().into_owned()))
        .collect();
    let mut generated: Vec<(String, String)> = harness::seeds()
        .into_iter()
        .map(|(t, n, data)| {
            assert_eq!(
                target(t)(&data),
                Outcome::Accepted,
                "generated seed {t}/{n}"
            );
            (t.to_owned(), n.to_owned())
        })
        .collect();
    generated.sort();
    assert_eq!(checked_in, generated, "regenerate with the seeds example");
}

#[test]
fn the_targets_refuse_what_they_should() {
    // A tampered signature, a proof for another URL, an assertion for another issuer: the
    // targets' "accepted" means the checks passed, not merely that nothing panicked.
    let seed = |t: &str, n: &str| std::fs::read(fuzz_dir().join("corpus").join(t).join(n)).unwrap();
    let mut jwt = seed("jws", "eddsa.jwt");
    let last = jwt.len() - 2;
    jwt[last] = if jwt[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(harness::jws(&jwt), Outcome::Rejected);
    let proof = serde_json::json!({"jti": "j", "htm": "POST", "htu": "https://other.test/token", "iat": harness::NOW});
    assert_eq!(
        harness::dpop(proof.to_string().as_bytes()),
        Outcome::Rejected
    );
    let late = serde_json::json!({"jti": "j", "htm": "POST", "htu": harness::TOKEN_ENDPOINT, "iat": harness::NOW - 61});
    assert_eq!(
        harness::dpop(late.to_string().as_bytes()),
        Outcome::Rejected
    );
    let claims = serde_json::json!({"iss": harness::CLIENT_ID, "sub": harness::CLIENT_ID, "aud": "https://other.test", "iat": harness::NOW, "exp": harness::NOW + 30, "jti": "x"});
    assert_eq!(
        harness::client_assertion(claims.to_string().as_bytes()),
        Outcome::Rejected
    );
    assert_eq!(
        harness::token_form(b"grant_type=password&username=a"),
        Outcome::Rejected
    );
    assert_eq!(
        harness::token_form(b"grant_type=client_credentials&scope=a&scope=b"),
        Outcome::Rejected
    );
    // Single-tenant: the wrong system; multi-tenant: 999977779 did not delegate.
    let foreign = serde_json::json!({"assertion_details": {"type": "helseid_authorization", "practitioner_role": {"organization": {"identifier": {"system": "urn:oid:1.0.6523", "value": "NO:ORGNR:999977779:"}}}}});
    assert_eq!(
        harness::org_details(foreign.to_string().as_bytes()),
        Outcome::Rejected
    );
    assert_eq!(harness::strict_json(br#"{"a":1,"a":2}"#), Outcome::Rejected);
}
