//! Signing keys: rotation with pre-publication, algorithms, the key-encryption key, and the
//! client-side key and token commands.

use crate::both;
use crate::harness::*;
use serde_json::json;
use std::time::Duration;

async fn jwks_kids(server: &Server) -> Vec<String> {
    let j = server
        .get("/.well-known/openid-configuration/jwks")
        .await
        .body;
    j["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

both!(rotation_publishes_first_then_signs, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let epj = fx.client("epj");
    let first = server.token(&fx.cc_form(&epj, None)).await;
    let old_kid = kid_of(first.body["access_token"].as_str().unwrap());
    assert_eq!(jwks_kids(&server).await, vec![old_kid.clone()]);

    let out = fx.run(&["keys", "rotate", "--activate-in", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Published within the refresh interval (1 s in this fixture), but not signing yet.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kids = jwks_kids(&server).await;
    assert_eq!(kids.len(), 2, "{kids:?}");
    let new_kid = kids.iter().find(|k| **k != old_kid).unwrap().clone();
    let r = server.token(&fx.cc_form(&epj, None)).await;
    assert_eq!(kid_of(r.body["access_token"].as_str().unwrap()), old_kid);

    // After activation the new key signs, and the old one stays published.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let r = server.token(&fx.cc_form(&epj, None)).await;
    assert_eq!(kid_of(r.body["access_token"].as_str().unwrap()), new_kid);
    assert!(jwks_kids(&server).await.contains(&old_kid));

    let list = fx.run(&["keys", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains(&new_kid) && text.contains("current") && text.contains("retired"),
        "{text}"
    );
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signing_alg_issues_verifiable_tokens() {
    for (alg, kty) in [("ES256", "EC"), ("PS256", "RSA"), ("EdDSA", "OKP")] {
        let fx = Fixture::new(
            Backend::Sqlite,
            &format!("[tokens]\nsigning_alg = \"{alg}\"\n"),
        )
        .await;
        let server = fx.start().await;
        let r = server.token(&fx.cc_form(&fx.client("epj"), None)).await;
        assert_eq!(r.status, 200, "{alg}: {}", r.body);
        let token = r.body["access_token"].as_str().unwrap();
        let jws = segl_jose::UnverifiedJws::parse(token).unwrap();
        assert_eq!(jws.alg().name(), alg);
        let jwks = server
            .get("/.well-known/openid-configuration/jwks")
            .await
            .body;
        assert_eq!(jwks["keys"][0]["kty"], kty);
        let jwks = segl_jose::Jwks::from_json(jwks.to_string().as_bytes()).unwrap();
        let expect = segl_verify::Expectations {
            issuer: &fx.issuer,
            now: now(),
            skew: 0,
        };
        segl_verify::verify_access_token(token, &jwks, &expect).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_keys_are_sealed_by_the_kek() {
    let fx = Fixture::new(Backend::Sqlite, "").await;
    let mut server = fx.start().await;
    let kid = jwks_kids(&server).await.remove(0);
    server.kill();
    // The stored private key is sealed: not a PKCS#8 key, and bound to its kid.
    {
        use sqlx::{Connection as _, Row as _};
        let url = format!("sqlite://{}", path_str(&fx.dir.path().join("segl.db")));
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let row = sqlx::query("SELECT kid, alg, private_key FROM signing_keys")
            .fetch_one(&mut db)
            .await
            .unwrap();
        let (stored_kid, alg, sealed): (String, String, Vec<u8>) =
            (row.get(0), row.get(1), row.get(2));
        assert_eq!(stored_kid, kid);
        assert!(segl_jose::SigningKey::from_pkcs8(alg.parse().unwrap(), &sealed).is_err());
        assert!(
            segl_jose::SigningKey::from_pkcs8(alg.parse().unwrap(), sealed.get(12..).unwrap())
                .is_err()
        );
    }
    // Another KEK cannot open it: start-up refuses with a clear message.
    std::fs::write(
        fx.dir.path().join("kek.b64"),
        "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(fx.config_path())
        .current_dir(fx.dir.path())
        .env_remove("SEGL_KEY_ENCRYPTION_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key-encryption key"), "{err}");
    // The KEK from the environment wins over the file.
    let server = fx
        .start_on(
            fx.port,
            &[(
                "SEGL_KEY_ENCRYPTION_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )],
        )
        .await;
    assert_eq!(jwks_kids(&server).await, vec![kid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_client_keys_work_with_token_get_and_inspect() {
    for alg in ["ES256", "PS256", "RS256"] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(BIN)
            .args(["keys", "generate", "--alg", alg, "--out"])
            .arg(dir.path().join("me"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let private: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("me.private.jwk.json")).unwrap())
                .unwrap();
        let public: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("me.public.jwks.json")).unwrap())
                .unwrap();
        assert!(private["d"].is_string());
        assert!(public["keys"][0].get("d").is_none());
        let jwk = segl_jose::Jwk::from_json(public["keys"][0].to_string().as_bytes()).unwrap();
        assert_eq!(
            public["keys"][0]["kid"].as_str().unwrap(),
            jwk.thumbprint().unwrap()
        );

        let extra = format!(
            "[[client]]\nclient_id = \"me\"\nname = \"Me\"\norganization = \"999977774\"\ngrant_types = [\"client_credentials\"]\nscopes = [\"nhn:sfm/api\"]\njwks_file = \"{}\"\nrequire_dpop = false\n",
            path_str(&dir.path().join("me.public.jwks.json"))
        );
        let fx = Fixture::new(Backend::Sqlite, &extra).await;
        let server = fx.start().await;
        let get = std::process::Command::new(BIN)
            .args([
                "token",
                "get",
                "--issuer",
                &server.issuer,
                "--client-id",
                "me",
                "--scope",
                "nhn:sfm/api",
                "--key",
            ])
            .arg(dir.path().join("me.private.jwk.json"))
            .output()
            .unwrap();
        assert!(
            get.status.success(),
            "{alg}: {}",
            String::from_utf8_lossy(&get.stderr)
        );
        let response: serde_json::Value = serde_json::from_slice(&get.stdout).unwrap();
        let token = response["access_token"].as_str().unwrap();

        let inspect = std::process::Command::new(BIN)
            .args(["token", "inspect", token, "--issuer", &server.issuer])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&inspect.stdout);
        assert!(inspect.status.success(), "{text}");
        assert!(
            text.contains("organization number of the legal entity") && text.contains("verified"),
            "{text}"
        );

        // A tampered token fails verification with a non-zero exit.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] =
            segl_jose::b64_encode(json!({"iss": server.issuer, "exp": now() + 60}).to_string());
        let bad = std::process::Command::new(BIN)
            .args([
                "token",
                "inspect",
                &parts.join("."),
                "--issuer",
                &server.issuer,
            ])
            .output()
            .unwrap();
        assert!(!bad.status.success());
        // Without --issuer it only decodes.
        let plain = std::process::Command::new(BIN)
            .args(["token", "inspect", token])
            .output()
            .unwrap();
        assert!(plain.status.success());
    }
}
