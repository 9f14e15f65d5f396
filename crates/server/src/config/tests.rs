//! Configuration loading: the contract example loads, and each kind of mistake is reported with
//! the file, the key and what is wrong.

use super::*;
use segl_jose::SigningKey;

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(Alg::ES256).unwrap();
        let jwks = serde_json::json!({"keys": [key.public_jwk()]}).to_string();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::fs::write(dir.path().join("keys/epj.public.jwks.json"), &jwks).unwrap();
        Dir { dir }
    }

    fn load(&self, toml: &str) -> Result<Settings, ConfigError> {
        let path = self.dir.path().join("segl.toml");
        std::fs::write(&path, toml).unwrap();
        load(Some(&path), &[], &Overrides::default(), vec![], vec![])
    }
}

const BASE: &str = r#"
issuer = "http://127.0.0.1:8080"
key_encryption_key_file = "kek.b64"
[[api]]
audience = "nhn:sfm"
scopes = ["nhn:sfm/api"]
"#;

fn client(extra: &str) -> String {
    format!(
        r#"{BASE}
[[client]]
client_id = "epj"
name = "EPJ"
organization = "999977774"
grant_types = ["client_credentials"]
scopes = ["nhn:sfm/api"]
jwks_file = "keys/epj.public.jwks.json"
{extra}
"#
    )
}

fn error_of(toml: &str) -> String {
    Dir::new().load(toml).unwrap_err().0
}

#[test]
fn a_valid_file_loads_with_paths_relative_to_it() {
    let d = Dir::new();
    let s = d.load(&client("")).unwrap();
    assert_eq!(s.issuer, "http://127.0.0.1:8080");
    assert!(s.registry.client("epj").is_some());
    assert_eq!(s.kek, KekSource::File(d.dir.path().join("kek.b64")));
    assert!(s.database.contains(d.dir.path().to_str().unwrap()));
}

#[test]
fn mistakes_name_file_key_and_problem() {
    let e = error_of(&format!("{BASE}\nunknown_key = 1\n"));
    assert!(e.contains("segl.toml") && e.contains("unknown_key"), "{e}");

    let e = error_of(&client("").replace("nhn:sfm/api\"]\njwks", "nhn:other/api\"]\njwks"));
    assert!(e.contains("scopes") && e.contains("nhn:other/api"), "{e}");

    let e = error_of(&format!(
        "{}\n[[client]]\nclient_id = \"epj\"\nname = \"x\"\norganization = \"999977774\"\ngrant_types = []\nscopes = []\njwks_file = \"keys/epj.public.jwks.json\"\n",
        client("")
    ));
    assert!(e.contains("registered twice"), "{e}");

    let e = error_of(&client("").replace("keys/epj.public.jwks.json", "keys/missing.json"));
    assert!(e.contains("jwks_file") && e.contains("missing.json"), "{e}");

    let e = error_of(&client("").replace(
        "jwks_file = \"keys/epj.public.jwks.json\"",
        "jwks = '{\"keys\": [{\"kty\": \"RSA\"}]}'",
    ));
    assert!(e.contains("jwks"), "{e}");

    let e = error_of(&client("").replace(
        "jwks_file = \"keys/epj.public.jwks.json\"",
        "jwks = 'not json'",
    ));
    assert!(e.contains("jwks") && e.contains("JSON"), "{e}");

    let e = error_of(&client("").replace("http://127.0.0.1:8080", "http://segl.example"));
    assert!(e.contains("issuer") && e.contains("loopback"), "{e}");

    let e = error_of(&client("").replace("http://127.0.0.1:8080", "https://segl.example/"));
    assert!(e.contains("issuer") && e.contains("slash"), "{e}");

    let e = error_of(&client("").replace("999977774", "12345"));
    assert!(e.contains("organization"), "{e}");

    let e = error_of(&client("").replace("key_encryption_key_file = \"kek.b64\"\n", ""));
    assert!(e.contains("openssl rand -base64 32"), "{e}");

    let e =
        error_of(&client("[tokens]\nsigning_alg = \"HS256\"\n").replace("[tokens]", "\n[tokens]"));
    assert!(e.contains("signing_alg"), "{e}");

    let e = error_of(&format!(
        "{BASE}\n[[api]]\naudience = \"x\"\nscopes = [\"y/z\"]\n"
    ));
    assert!(e.contains("must start with"), "{e}");
}

#[test]
fn environment_and_flags_override_the_file() {
    let d = Dir::new();
    let path = d.dir.path().join("segl.toml");
    std::fs::write(&path, client("")).unwrap();
    let env = vec![
        ("SEGL_TOKENS_SIGNING_ALG".to_owned(), "ES256".to_owned()),
        ("SEGL_LISTEN".to_owned(), "127.0.0.1:9999".to_owned()),
        ("SEGL_TEST_POSTGRES_URL".to_owned(), "ignored".to_owned()),
    ];
    let flags = Overrides {
        listen: Some("127.0.0.1:7777".into()),
        ..Overrides::default()
    };
    let s = load(Some(&path), &env, &flags, vec![], vec![]).unwrap();
    assert_eq!(s.signing_alg, Alg::ES256);
    assert_eq!(s.listen.to_string(), "127.0.0.1:7777");
    let env = vec![(
        "SEGL_TOKENS_ACCESS_TOKEN_LIFETIME".to_owned(),
        "0".to_owned(),
    )];
    let e = load(Some(&path), &env, &Overrides::default(), vec![], vec![]).unwrap_err();
    assert!(e.0.contains("access_token_lifetime"), "{e}");
}

#[test]
fn audit_checkpoint_interval_from_file_and_environment() {
    let d = Dir::new();
    assert_eq!(d.load(&client("")).unwrap().audit.checkpoint_interval, 300);
    let s = d
        .load(&client("[audit]\ncheckpoint_interval = 60\n"))
        .unwrap();
    assert_eq!(s.audit.checkpoint_interval, 60);
    let path = d.dir.path().join("segl.toml");
    let env = vec![("SEGL_AUDIT_CHECKPOINT_INTERVAL".to_owned(), "5".to_owned())];
    let s = load(Some(&path), &env, &Overrides::default(), vec![], vec![]).unwrap();
    assert_eq!(s.audit.checkpoint_interval, 5);
    for bad in ["0", "86401"] {
        let e = error_of(&client(&format!("[audit]\ncheckpoint_interval = {bad}\n")));
        assert!(e.contains("audit.checkpoint_interval"), "{e}");
    }
    let e = error_of(&client("[audit]\nretention = 5\n"));
    assert!(e.contains("retention"), "{e}");
}

#[test]
fn development_defaults_need_no_file() {
    let s = load(None, &[], &Overrides::default(), vec![], vec![]).unwrap();
    assert!(s.dev_mode);
    assert_eq!(s.issuer, DEV_ISSUER);
    assert!(s.test_idp);
    assert!(matches!(s.kek, KekSource::DevFile(_)));
}

#[test]
fn test_idp_refuses_a_production_like_issuer_unless_allowed() {
    let https = client("").replace("http://127.0.0.1:8080", "https://segl.example");
    let e = error_of(&format!("{https}\n[test_idp]\nenabled = true\n"));
    assert!(
        e.contains("test_idp") && e.contains("allow_in_production"),
        "{e}"
    );
    let ok = Dir::new().load(&format!(
        "{https}\n[test_idp]\nenabled = true\nallow_in_production = true\n"
    ));
    assert!(ok.unwrap().test_idp);
    assert!(
        !Dir::new().load(&https).unwrap().test_idp,
        "off unless enabled"
    );
}

#[test]
fn person_register_is_validated() {
    let base = client("");
    let s = Dir::new()
        .load(&format!("{base}\n[[person]]\npid = \"06828399789\"\ngiven_name = \"Kvart\"\nfamily_name = \"Grevling\"\nhpr_number = \"431001110\"\n"))
        .unwrap();
    assert_eq!(
        s.persons["06828399789"].hpr_number.as_deref(),
        Some("431001110")
    );
    let e = error_of(&format!(
        "{base}\n[[person]]\npid = \"123\"\ngiven_name = \"A\"\nfamily_name = \"B\"\n"
    ));
    assert!(e.contains("person[0]") && e.contains("pid"), "{e}");
}
