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

#[test]
fn upstream_idp_mistakes_are_named() {
    let idp = |body: &str| {
        format!("{HEAD}[[idp]]\nname = \"idporten-oidc\"\nclient_id = \"segl\"\n{body}")
    };
    let key = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}"#;
    let https = "issuer = \"https://idporten.example/\"\n";
    for (body, files, expect) in [
        (
            "issuer = \"http://idporten.example\"\nkey_file = \"k.json\"\n",
            vec![("k.json", key)],
            vec!["idp[0] (name \"idporten-oidc\").issuer", "loopback"],
        ),
        (
            https,
            vec![],
            vec!["key_file", "private_key_jwt needs key_file"],
        ),
        (
            &format!("{https}key_file = \"missing.json\"\n"),
            vec![],
            vec!["key_file", "missing.json"],
        ),
        (
            &format!("{https}key_file = \"k.json\"\n"),
            vec![("k.json", JWKS)],
            vec!["key_file", "not a JWK"],
        ),
        (
            &format!("{https}client_auth = \"client_secret_post\"\n"),
            vec![],
            vec!["client_auth", "client_secret_post"],
        ),
        (
            &format!(
                "{https}client_auth = \"client_secret_basic\"\nclient_secret_env = \"SEGL_TEST_NO_SUCH_VARIABLE\"\n"
            ),
            vec![],
            vec!["client_secret_env", "SEGL_TEST_NO_SUCH_VARIABLE is not set"],
        ),
        (
            &format!("{https}key_file = \"k.json\"\nscopes = [\"profile\"]\n"),
            vec![("k.json", key)],
            vec!["scopes", "openid"],
        ),
        (
            &format!("{https}key_file = \"k.json\"\nacr_values = [\"eidas-high\"]\n"),
            vec![("k.json", key)],
            vec!["acr_values", "eidas-high", "acr_map"],
        ),
        (
            &format!("{https}key_file = \"k.json\"\n[idp.claims]\nhpr = \"x\"\n"),
            vec![("k.json", key)],
            vec!["claims.hpr"],
        ),
        (
            &format!(
                "{https}key_file = \"k.json\"\n[idp.acr_map]\n\"x\" = {{ security_level = \"9\", assurance_level = \"high\" }}\n"
            ),
            vec![("k.json", key)],
            vec!["acr_map", "security_level"],
        ),
    ] {
        serve_fails(&idp(body), &files, &expect);
    }
    // The test IdP's name is taken.
    serve_fails(
        &format!(
            "{HEAD}[[idp]]\nname = \"testidp-oidc\"\nclient_id = \"s\"\n{https}key_file = \"k.json\"\n"
        ),
        &[("k.json", key)],
        &["name", "built-in test IdP"],
    );
}
