//! Bad configuration stops start-up with a message naming the file, the key and the problem.

use crate::harness::*;

fn serve_fails(config: &str, files: &[(&str, &str)], expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .env_remove("SEGL_KEY_ENCRYPTION_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with {config}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml"), "no file name in: {err}");
    for e in expect {
        assert!(err.contains(e), "{e:?} not in: {err}");
    }
}

const HEAD: &str = "issuer = \"http://127.0.0.1:1\"\nkey_encryption_key_file = \"kek\"\n[[api]]\naudience = \"nhn:sfm\"\nscopes = [\"nhn:sfm/api\"]\n";
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

fn client(id: &str, scopes: &str) -> String {
    format!(
        "[[client]]\nclient_id = \"{id}\"\nname = \"n\"\norganization = \"999977774\"\ngrant_types = [\"client_credentials\"]\nscopes = [{scopes}]\njwks_file = \"c.json\"\n"
    )
}

#[test]
fn unknown_key() {
    serve_fails(&format!("{HEAD}colour = \"blue\"\n"), &[], &["colour"]);
}

#[test]
fn duplicate_client_id() {
    let c = client("a", "\"nhn:sfm/api\"");
    serve_fails(
        &format!("{HEAD}{c}{c}"),
        &[("c.json", JWKS)],
        &["client_id a is registered twice"],
    );
}

#[test]
fn malformed_jwks() {
    serve_fails(
        &format!("{HEAD}{}", client("a", "\"nhn:sfm/api\"")),
        &[("c.json", "{\"keys\": [")],
        &["jwks_file", "c.json"],
    );
    serve_fails(
        &format!("{HEAD}{}", client("a", "\"nhn:sfm/api\"")),
        &[(
            "c.json",
            r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#,
        )],
        &["jwks_file", "key 0"],
    );
}

#[test]
fn scope_not_under_an_api() {
    serve_fails(
        &format!("{HEAD}{}", client("a", "\"nhn:kj/api\"")),
        &[("c.json", JWKS)],
        &["scopes", "nhn:kj/api"],
    );
}

#[test]
fn http_issuer_outside_loopback() {
    serve_fails(
        &HEAD.replace("http://127.0.0.1:1", "http://segl.example.org"),
        &[],
        &["issuer", "loopback"],
    );
}

#[test]
fn missing_key_encryption_key_says_how_to_make_one() {
    serve_fails(
        &HEAD.replace("key_encryption_key_file = \"kek\"\n", ""),
        &[],
        &["openssl rand -base64 32"],
    );
}
