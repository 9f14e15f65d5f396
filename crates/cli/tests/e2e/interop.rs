//! Interoperability with an independent client: npm `oauth4webapi` performs the
//! client_credentials request with private_key_jwt (and with DPoP and server nonces), and `jose`
//! verifies the token against the published JWKS. Runs when `SEGL_TEST_INTEROP=1` (CI sets it,
//! after `npm ci` in tests/interop).

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth4webapi_client_credentials() {
    if !interop_enabled("oauth4webapi client_credentials") {
        return;
    }
    for signing_alg in ["RS256", "ES256"] {
        let fx = Fixture::new(
            Backend::Sqlite,
            &format!("[tokens]\nsigning_alg = \"{signing_alg}\"\n"),
        )
        .await;
        let server = fx.start().await;
        for (client, scope) in [
            ("epj", "nhn:sfm/api"),
            ("rsa-client", "nhn:reseptformidleren/rf"),
        ] {
            let env = [
                ("ISSUER", server.issuer.clone()),
                ("CLIENT_ID", client.to_owned()),
                ("CLIENT_JWK", private_jwk(&fx.client(client))),
                ("SCOPE", scope.to_owned()),
            ];
            run_interop("client_credentials.mjs", &env, "verified").await;
        }
    }
}

/// oauth4webapi's DPoP support: the proof, the use_dpop_nonce retry, and the cnf.jkt binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth4webapi_dpop_with_server_nonce() {
    if !interop_enabled("oauth4webapi DPoP") {
        return;
    }
    let fx = Fixture::new(Backend::Sqlite, "").await;
    let server = fx.start().await;
    let env = [
        ("ISSUER", server.issuer.clone()),
        ("CLIENT_ID", "dpop-client".to_owned()),
        ("CLIENT_JWK", private_jwk(&fx.client("dpop-client"))),
        ("SCOPE", "nhn:reseptformidleren/rf".to_owned()),
    ];
    run_interop("dpop.mjs", &env, "verified DPoP-bound token").await;
}
