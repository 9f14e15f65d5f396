//! Discovery and JWKS.

use crate::both;
use crate::harness::*;

both!(discovery_and_jwks, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let d = server.get("/.well-known/openid-configuration").await;
    assert_eq!(d.status, 200);
    // An HTTP Date on every answer: clients may set their clocks by it (FAPI 2.0 SP 5.3.3.1).
    let date = d.headers["date"].to_str().unwrap();
    assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
    let doc = &d.body;
    assert_eq!(doc["issuer"], fx.issuer.as_str());
    assert_eq!(
        doc["jwks_uri"],
        format!("{}/.well-known/openid-configuration/jwks", fx.issuer)
    );
    assert_eq!(
        doc["token_endpoint"],
        format!("{}/connect/token", fx.issuer)
    );
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        serde_json::json!(["private_key_jwt"])
    );
    assert!(
        doc["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&"client_credentials".into())
    );
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
    let auth_algs = doc["token_endpoint_auth_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(auth_algs.contains(&"RS256".into()) && auth_algs.contains(&"ES256".into()));
    assert!(!auth_algs.contains(&"none".into()) && !auth_algs.contains(&"HS256".into()));
    let scopes = doc["scopes_supported"].as_array().unwrap();
    assert!(
        scopes.contains(&"nhn:sfm/api".into())
            && scopes.contains(&"nhn:reseptformidleren/rf".into())
    );
    assert!(
        doc["claims_supported"]
            .as_array()
            .unwrap()
            .contains(&"helseid://claims/client/claims/orgnr_parent".into())
    );

    let j = server.get("/.well-known/openid-configuration/jwks").await;
    assert_eq!(j.status, 200);
    let keys = j.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(
        (k["kty"].as_str(), k["alg"].as_str(), k["use"].as_str()),
        (Some("RSA"), Some("RS256"), Some("sig"))
    );
    assert!(k["kid"].as_str().is_some_and(|s| !s.is_empty()));
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(k.get(private).is_none(), "JWKS leaks {private}");
    }
    // Every advertised endpoint is served.
    for member in ["jwks_uri", "token_endpoint"] {
        let url = doc[member].as_str().unwrap();
        let path = url.strip_prefix(&fx.issuer).unwrap();
        let r = if member == "token_endpoint" {
            server
                .post_raw(path, "application/x-www-form-urlencoded", vec![])
                .await
        } else {
            server.get(path).await
        };
        assert_ne!(r.status, 404, "{member}");
    }
});
