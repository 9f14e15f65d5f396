//! The SECURITY.md negative-test matrix, one test per endpoint (docs/security-matrix.md maps
//! every "reject" line to its test). Each row sends exactly the rejected input and asserts the
//! exact status and `error`, then sends its near-miss twin, which must pass. Every refusal's
//! `error_description` is printable ASCII without `"` or `\` (RFC 6749 §5.2) and every token
//! endpoint answer carries `Cache-Control: no-store` (RFC 6749 §5.1).
//!
//! Lines already covered exactly by another module (client_credentials, dpop, login_rejections,
//! refresh, exchange, ratelimit) are not repeated here; the doc names those tests.
// The row tables are tuples, one per SECURITY.md line.
#![allow(clippy::type_complexity)]

use crate::both;
use crate::harness::*;
use crate::login::{Browser, Flow, REDIRECT, query_of};
use segl_jose::{Alg, SigningKey, b64_encode, sign_jwt};
use serde_json::{Value, json};

/// A request: form fields and extra headers.
#[derive(Clone, Default)]
struct Req {
    form: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

impl Req {
    fn form(form: Vec<(String, String)>) -> Req {
        Req {
            form,
            headers: vec![],
        }
    }

    fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    async fn send(&self, server: &Server, path: &str) -> Response {
        let body = self
            .form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        server
            .post_with(
                path,
                "application/x-www-form-urlencoded",
                body.into_bytes(),
                &headers,
            )
            .await
    }
}

/// One row: the SECURITY.md reference, the rejected request, the expected status and error,
/// and the near-miss twin that passes.
struct Case {
    reference: &'static str,
    bad: Req,
    status: u16,
    error: &'static str,
    good: Req,
}

fn case(reference: &'static str, bad: Req, status: u16, error: &'static str, good: Req) -> Case {
    Case {
        reference,
        bad,
        status,
        error,
        good,
    }
}

/// The refusal has exactly this status and error, a clean description, and no-store.
#[track_caller]
fn refused(r: &Response, status: u16, error: &str, reference: &str) {
    assert_eq!(
        (r.status, r.error()),
        (status, error),
        "{reference}: {}",
        r.body
    );
    r.expect_error(status, error);
    assert_eq!(
        r.headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "{reference}"
    );
}

/// The twin passes with `status`, and carries no-store.
#[track_caller]
fn passed(r: &Response, status: u16, reference: &str) {
    assert_eq!(r.status, status, "near miss of {reference}: {}", r.body);
    assert_eq!(
        r.headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "near miss of {reference}"
    );
}

/// Runs the rows against `path`; the twins must answer `ok`.
async fn run(server: &Server, path: &str, ok: u16, cases: Vec<Case>) {
    for c in cases {
        let r = c.bad.send(server, path).await;
        refused(&r, c.status, c.error, c.reference);
        let r = c.good.send(server, path).await;
        passed(&r, ok, c.reference);
    }
}

/// A compact JWS over an exact header and claims text (duplicate members, bad UTF-8).
fn sign_text(key: &SigningKey, header: &Value, claims: &[u8]) -> String {
    let input = format!("{}.{}", b64_encode(header.to_string()), b64_encode(claims));
    format!(
        "{input}.{}",
        b64_encode(key.sign(input.as_bytes()).unwrap())
    )
}

/// A client_credentials form for `client` with `assertion`.
fn cc(client: &str, assertion: String) -> Vec<(String, String)> {
    vec![
        ("grant_type".into(), "client_credentials".into()),
        ("client_id".into(), client.into()),
        ("client_assertion_type".into(), ASSERTION_TYPE.into()),
        ("client_assertion".into(), assertion),
    ]
}

fn pairs(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Token endpoint: client authentication (SECURITY.md §1.3, §1.5, D2)

both!(token_endpoint_client_authentication, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let epj = fx.client("epj");
    let t = now();
    let token_endpoint = format!("{}/connect/token", fx.issuer);
    // Fresh assertions for every request (each jti is single-use).
    let typed = |typ: &str, patch: Value| {
        Req::form(cc(
            "epj",
            sign_jwt(&epj.key, typ, &fx.assertion_claims(&epj, patch)).unwrap(),
        ))
    };
    let std = |patch: Value| Req::form(cc("epj", fx.assertion(&epj, patch)));
    let with_header = |header: Value| {
        Req::form(cc(
            "epj",
            sign_text(
                &epj.key,
                &header,
                fx.assertion_claims(&epj, json!({})).to_string().as_bytes(),
            ),
        ))
    };
    let es = |extra: Value| {
        let mut h = json!({"alg": "ES256", "typ": "JWT"});
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        h
    };
    let claims = fx.assertion_claims(&epj, json!({})).to_string();
    let duplicated = claims.replacen('{', "{\"iss\":\"rsa-client\",", 1);
    let non_utf8 = {
        let c = fx.assertion_claims(&epj, json!({"jti": "JTI-PLACEHOLDER"}));
        c.to_string()
            .replace("JTI-PLACEHOLDER", "j\u{0}")
            .into_bytes()
            .into_iter()
            .map(|b| if b == 0 { 0xff } else { b })
            .collect::<Vec<u8>>()
    };
    let utf8_twin = fx
        .assertion_claims(&epj, json!({"jti": format!("j\u{e6}{}", new_jti())}))
        .to_string();
    let cases = vec![
        // §1.3 RFC 8725 §3.7: UTF-8 only.
        case(
            "1.3 UTF-8 only: payload with an invalid byte",
            Req::form(cc("epj", sign_text(&epj.key, &es(json!({})), &non_utf8))),
            401,
            "invalid_client",
            Req::form(cc(
                "epj",
                sign_text(&epj.key, &es(json!({})), utf8_twin.as_bytes()),
            )),
        ),
        // §1.3 duplicate member names: a keep-last parser would accept this one.
        case(
            "1.3 duplicate member names (iss twice, last one valid)",
            Req::form(cc(
                "epj",
                sign_text(&epj.key, &es(json!({})), duplicated.as_bytes()),
            )),
            401,
            "invalid_client",
            Req::form(cc(
                "epj",
                sign_text(
                    &epj.key,
                    &es(json!({})),
                    fx.assertion_claims(&epj, json!({})).to_string().as_bytes(),
                ),
            )),
        ),
        // §1.3 crit with an extension we do not understand.
        case(
            "1.3 crit lists an unknown extension",
            with_header(es(json!({"crit": ["x-unknown"], "x-unknown": true}))),
            401,
            "invalid_client",
            with_header(es(json!({"x-unknown": true}))),
        ),
        // §1.3 RFC 8725 §3.10: never fetch jku / x5u.
        case(
            "1.3 jku header (never fetched)",
            with_header(es(json!({"jku": "http://127.0.0.1:1/jwks"}))),
            401,
            "invalid_client",
            with_header(es(json!({}))),
        ),
        case(
            "1.3 x5u header (never fetched)",
            with_header(es(json!({"x5u": "http://127.0.0.1:1/cert.pem"}))),
            401,
            "invalid_client",
            with_header(es(json!({}))),
        ),
        // §1.3 kid is an opaque lookup key.
        case(
            "1.3 kid with SQL / path injection",
            with_header(es(json!({"kid": "' OR '1'='1' --/../../etc/passwd"}))),
            401,
            "invalid_client",
            with_header(es(json!({"kid": epj.key.kid()}))),
        ),
        // §1.3 RFC 8725 §3.11–3.12: an access token is not a client assertion.
        case(
            "1.3 explicit typing: typ at+jwt",
            typed("at+jwt", json!({})),
            401,
            "invalid_client",
            typed("JWT", json!({})),
        ),
        // D2's stricter reading (the token endpoint URL only untyped and only as a string) is
        // not applied: the DESIGN.md contract accepts the aliases as a string or a one-element
        // array, typed or not; an array with a foreign value is refused.
        case(
            "1.5 D2 never arrays with foreign values (contract twin: [token endpoint], typed)",
            typed(
                "client-authentication+jwt",
                json!({"aud": [token_endpoint.clone(), "https://other.example"]}),
            ),
            401,
            "invalid_client",
            typed(
                "client-authentication+jwt",
                json!({"aud": [token_endpoint.clone()]}),
            ),
        ),
        // §1.5 iss / sub.
        case(
            "1.5 missing sub",
            std(json!({"sub": null})),
            401,
            "invalid_client",
            std(json!({"sub": "epj"})),
        ),
        case(
            "1.5 iss = sub = another client than client_id",
            Req::form(cc(
                "epj",
                fx.assertion(&epj, json!({"iss": "rsa-client", "sub": "rsa-client"})),
            )),
            401,
            "invalid_client",
            Req::form(cc("epj", fx.assertion(&epj, json!({})))),
        ),
        // §1.5 nbf / iat, and the FAPI clock-skew rule (§1.2 #13, reliability §5).
        case(
            "1.5 nbf 30 s ahead",
            std(json!({"iat": t, "nbf": t + 30, "exp": t + 40})),
            401,
            "invalid_client",
            std(json!({"iat": t, "nbf": t + 5, "exp": t + 40})),
        ),
        case(
            "1.2 #13 iat 61 s ahead (10 s ahead accepted)",
            std(json!({"iat": t + 61, "nbf": t, "exp": t + 70})),
            401,
            "invalid_client",
            std(json!({"iat": t + 10, "nbf": t, "exp": t + 40})),
        ),
        case(
            "1.5 iat too far in the past (exp - iat over 60 s)",
            std(json!({"iat": t - 61, "nbf": t - 61, "exp": t + 30})),
            401,
            "invalid_client",
            std(json!({"iat": t - 29, "nbf": t - 29, "exp": t + 30})),
        ),
        // §1.5 jti: oversized values are refused rather than stored.
        case(
            "1.5 jti over 256 characters",
            std(json!({"jti": "j".repeat(257)})),
            401,
            "invalid_client",
            std(json!({"jti": format!("{}{}", new_jti(), "j".repeat(256 - 22))})),
        ),
        // §1.5 one method per request; 401 when the Authorization header was used.
        case(
            "1.5 Authorization header besides the assertion",
            std(json!({})).header("authorization", "Basic ZXBqOnNlY3JldA=="),
            401,
            "invalid_client",
            std(json!({})),
        ),
    ];
    run(&server, "/connect/token", 200, cases).await;
});

// ---------------------------------------------------------------------------------------------
// Token endpoint: DPoP (SECURITY.md §1.4)

both!(token_endpoint_dpop, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let client = fx.client("dpop-client");
    let key = SigningKey::generate(Alg::ES256).unwrap();
    let url = format!("{}/connect/token", fx.issuer);
    let port = fx.port;
    // The current nonce, and the use_dpop_nonce answer's DPoP-Nonce header (§1.4 nonce line).
    let probe = dpop_proof(&key, &url, None, json!({}), json!({}));
    let r = server
        .token_with(&fx.cc_form(&client, None), &[("dpop", &probe)])
        .await;
    refused(&r, 400, "use_dpop_nonce", "1.4 nonce missing");
    let n = r.headers["dpop-nonce"].to_str().unwrap().to_owned();
    assert!(!n.is_empty());

    let with = |proof: String| Req::form(fx.cc_form(&client, None)).header("dpop", &proof);
    let proof = |claims: Value, header: Value| dpop_proof(&key, &url, Some(&n), claims, header);
    let good = || with(proof(json!({}), json!({})));
    let jwk = key.public_jwk().to_public_without_meta();
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk});
    let body = |extra: &str| {
        format!(
            "{{{extra}\"jti\":\"{}\",\"htm\":\"POST\",\"htu\":\"{url}\",\"iat\":{},\"nonce\":\"{n}\"}}",
            new_jti(),
            now()
        )
    };
    let hs256 = custom_jws(
        &json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}}),
        &json!({"jti": new_jti(), "htm": "POST", "htu": url, "iat": now(), "nonce": n}),
        |i| {
            let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"secret");
            aws_lc_rs::hmac::sign(&k, i).as_ref().to_vec()
        },
    );
    let cases = vec![
        case(
            "1.4 (2) not a single JWT: two proofs in one header value",
            with(format!(
                "{},{}",
                proof(json!({}), json!({})),
                proof(json!({}), json!({}))
            )),
            400,
            "invalid_dpop_proof",
            good(),
        ),
        case(
            "1.4 (2) not a JWT at all",
            with("a.b".to_owned()),
            400,
            "invalid_dpop_proof",
            good(),
        ),
        case(
            "1.4 (3) no htm",
            with(proof(json!({"htm": null}), json!({}))),
            400,
            "invalid_dpop_proof",
            good(),
        ),
        case(
            "1.4 (3) no htu",
            with(proof(json!({"htu": null}), json!({}))),
            400,
            "invalid_dpop_proof",
            good(),
        ),
        case(
            "1.4 (3) no iat",
            with(proof(json!({"iat": null}), json!({}))),
            400,
            "invalid_dpop_proof",
            good(),
        ),
        case(
            "1.4 (5) symmetric alg HS256 with an oct jwk",
            with(hs256),
            400,
            "invalid_dpop_proof",
            good(),
        ),
        case(
            "1.4 (9) htu with another scheme",
            with(proof(
                json!({"htu": format!("https://127.0.0.1:{port}/connect/token")}),
                json!({}),
            )),
            400,
            "invalid_dpop_proof",
            with(proof(
                json!({"htu": format!("http://127.0.0.1:{port}/connect/token#f")}),
                json!({}),
            )),
        ),
        case(
            "1.4 replay: oversized jti refused",
            with(proof(json!({"jti": "j".repeat(257)}), json!({}))),
            400,
            "invalid_dpop_proof",
            with(proof(
                json!({"jti": format!("{}{}", new_jti(), "j".repeat(256 - 22))}),
                json!({}),
            )),
        ),
        case(
            "1.3 duplicate member names in a proof (htm twice, last one valid)",
            with(sign_text(
                &key,
                &header,
                body("\"htm\":\"GET\",").as_bytes(),
            )),
            400,
            "invalid_dpop_proof",
            with(sign_text(&key, &header, body("").as_bytes())),
        ),
        case(
            "1.3 crit in a proof header",
            with(proof(
                json!({}),
                json!({"crit": ["x-unknown"], "x-unknown": 1}),
            )),
            400,
            "invalid_dpop_proof",
            with(proof(json!({}), json!({"x-unknown": 1}))),
        ),
        case(
            "1.4 dpop_bound_access_tokens: registered DPoP client without a proof",
            Req::form(fx.cc_form(&client, None)),
            400,
            "invalid_dpop_proof",
            good(),
        ),
    ];
    run(&server, "/connect/token", 200, cases).await;
});

// ---------------------------------------------------------------------------------------------
// Token endpoint: authorization_code and PKCE (SECURITY.md §1.1, §1.4 §10, §1.8, §1.9)

both!(
    token_endpoint_authorization_code,
    |backend: Backend| async move {
        let fx = Fixture::new(backend.clone(), "").await;
        let server = fx.start().await;
        let mut flow = Flow::new(&fx, &server);
        let mut browser = Browser::new();
        let v = flow.verifier.clone();
        let exchange = |code: &str, verifier: &str| {
            pairs(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
            ])
        };
        // (reference, extra params that replace or add, expected status, error); each row on a
        // fresh code, then its twin on another fresh code.
        let short = "a".repeat(42);
        let bad_chars = format!("{}+", "a".repeat(42));
        let rows: Vec<(&str, Vec<(String, String)>, &str, bool)> = vec![
            // (reference, params, expected error, send a DPoP proof)
            (
                "1.8 verifier of 42 characters",
                exchange("CODE", &short),
                "invalid_grant",
                true,
            ),
            (
                "1.8 verifier with a character outside [A-Za-z0-9-._~]",
                exchange("CODE", &bad_chars),
                "invalid_grant",
                true,
            ),
            (
                "1.9 redirect_uri missing at the exchange",
                pairs(&[
                    ("grant_type", "authorization_code"),
                    ("code", "CODE"),
                    ("code_verifier", &v),
                ]),
                "invalid_grant",
                true,
            ),
            (
                "1.4 §10 code bound to a DPoP key at PAR, redeemed without a proof",
                exchange("CODE", &v),
                "invalid_dpop_proof",
                false,
            ),
            (
                "1.9 duplicate parameter (code twice)",
                {
                    let mut p = exchange("CODE", &v);
                    p.push(("code".into(), "CODE".into()));
                    p
                },
                "invalid_request",
                true,
            ),
        ];
        for (reference, params, error, with_proof) in rows {
            let back = flow.login(&mut browser, "06828399789", &[]).await;
            let code = query_of(&back)["code"].clone();
            let params: Vec<(String, String)> = params
                .into_iter()
                .map(|(k, val)| (k, if val == "CODE" { code.clone() } else { val }))
                .collect();
            let r = if with_proof {
                let p: Vec<(&str, &str)> = params
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                flow.post("/connect/token", &p).await
            } else {
                let mut form = params.clone();
                form.extend(pairs(&[
                    ("client_id", "ehr"),
                    ("client_assertion_type", ASSERTION_TYPE),
                ]));
                form.push((
                    "client_assertion".into(),
                    fx.assertion(&flow.client, json!({})),
                ));
                server.token(&form).await
            };
            refused(&r, 400, error, reference);
            // The twin: a fresh code, everything right.
            let back = flow.login(&mut browser, "06828399789", &[]).await;
            let r = flow.exchange(&query_of(&back)["code"]).await;
            passed(&r, 200, reference);
            assert_eq!(r.body["token_type"], "DPoP");
        }
        // 1.1 / FAPI #9: a code is single-use; its first use is the twin.
        let back = flow.login(&mut browser, "06828399789", &[]).await;
        let code = query_of(&back)["code"].clone();
        passed(&flow.exchange(&code).await, 200, "1.1 second use of a code");
        refused(
            &flow.exchange(&code).await,
            400,
            "invalid_grant",
            "1.1 second use of a code",
        );

        // FAPI2-SP §5.3.2.1 #11: codes live at most 60 s (here 3 s, whole seconds: a fresh code
        // has at least 2 s left): an expired code is refused, a fresh one redeemed at once passes.
        let short = Fixture::new(backend, "[tokens]\nauthorization_code_lifetime = 3\n").await;
        let sserver = short.start().await;
        let mut sflow = Flow::new(&short, &sserver);
        let mut sbrowser = Browser::new();
        let back = sflow.login(&mut sbrowser, "06828399789", &[]).await;
        let old = query_of(&back)["code"].clone();
        tokio::time::sleep(std::time::Duration::from_millis(4100)).await;
        refused(
            &sflow.exchange(&old).await,
            400,
            "invalid_grant",
            "1.2 #11 expired code",
        );
        let back = sflow.login(&mut sbrowser, "06828399789", &[]).await;
        passed(
            &sflow.exchange(&query_of(&back)["code"]).await,
            200,
            "1.2 #11 expired code",
        );
    }
);

// ---------------------------------------------------------------------------------------------
// Token endpoint: refresh_token (SECURITY.md §1.4 binding, §1.9)

both!(token_endpoint_refresh_token, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let mut flow = Flow::new(&fx, &server);
    let mut browser = Browser::new();
    let scopes = format!("{} offline_access", crate::login::SCOPES);
    let back = flow
        .login(&mut browser, "06828399789", &[("scope", &scopes)])
        .await;
    let r = flow.exchange(&query_of(&back)["code"]).await;
    passed(&r, 200, "login");
    let mut rt = r.body["refresh_token"].as_str().unwrap().to_owned();
    // (reference, params, send a DPoP proof, expected error)
    let rows: Vec<(&str, Vec<(&str, &str)>, bool, &str)> = vec![
        (
            "1.4 refresh token bound to the DPoP key: no proof",
            vec![("grant_type", "refresh_token"), ("refresh_token", "RT")],
            false,
            "invalid_dpop_proof",
        ),
        (
            "1.9 duplicate parameter (refresh_token twice)",
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "RT"),
                ("refresh_token", "RT"),
            ],
            true,
            "invalid_request",
        ),
        (
            "6749 §6 refresh_token missing",
            vec![("grant_type", "refresh_token")],
            true,
            "invalid_request",
        ),
    ];
    for (reference, params, with_proof, error) in rows {
        let params: Vec<(&str, &str)> = params
            .into_iter()
            .map(|(k, v)| (k, if v == "RT" { rt.as_str() } else { v }))
            .collect();
        let r = if with_proof {
            flow.post("/connect/token", &params).await
        } else {
            let mut form = pairs(&params);
            form.extend(pairs(&[
                ("client_id", "ehr"),
                ("client_assertion_type", ASSERTION_TYPE),
            ]));
            form.push((
                "client_assertion".into(),
                fx.assertion(&flow.client, json!({})),
            ));
            server.token(&form).await
        };
        refused(&r, 400, error, reference);
        let r = flow
            .post(
                "/connect/token",
                &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
            )
            .await;
        passed(&r, 200, reference);
        rt = r.body["refresh_token"].as_str().unwrap().to_owned();
    }
});

// ---------------------------------------------------------------------------------------------
// Token endpoint: token exchange (SECURITY.md §1.7)

both!(token_endpoint_token_exchange, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let mut ehr = Flow::new(&fx, &server);
    let r = ehr
        .post(
            "/connect/token",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "nhn:sfm/api"),
            ],
        )
        .await;
    passed(&r, 200, "subject token");
    let subject = r.body["access_token"].as_str().unwrap().to_owned();
    let mut sfm = Flow::new(&fx, &server);
    sfm.client = fx.client("sfm");
    let te = crate::exchange::TE;
    let at = crate::exchange::AT;
    let valid = vec![
        ("grant_type", te),
        ("subject_token", subject.as_str()),
        ("subject_token_type", at),
        ("scope", "nhn:reseptformidleren/rf"),
    ];
    let without = |name: &str| {
        valid
            .iter()
            .filter(|(k, _)| *k != name)
            .copied()
            .collect::<Vec<_>>()
    };
    let plus = |extra: &[(&'static str, &'static str)]| {
        let mut p = valid.clone();
        p.extend_from_slice(extra);
        p
    };
    let rows: Vec<(&str, Vec<(&str, &str)>, &str)> = vec![
        (
            "1.7 subject_token missing",
            without("subject_token"),
            "invalid_request",
        ),
        (
            "1.7 actor_token_type without actor_token",
            plus(&[("actor_token_type", crate::exchange::AT)]),
            "invalid_request",
        ),
        (
            "1.7 actor_token without actor_token_type",
            plus(&[("actor_token", "eyJhbGciOiJFUzI1NiJ9.e30.sig")]),
            "invalid_request",
        ),
        (
            "1.7 a resource the AS will not issue for",
            plus(&[("resource", "nhn:sfm")]),
            "invalid_target",
        ),
    ];
    for (reference, params, error) in rows {
        refused(
            &sfm.post("/connect/token", &params).await,
            400,
            error,
            reference,
        );
        let r = sfm.post("/connect/token", &valid).await;
        passed(&r, 200, reference);
        assert_eq!(r.body["token_type"], "DPoP", "{reference}");
    }
});

// ---------------------------------------------------------------------------------------------
// PAR (SECURITY.md §1.2 flows, §1.5 D2, §1.6, §1.9)

both!(par_endpoint, |backend: Backend| async move {
    let fx = Fixture::new(backend.clone(), "").await;
    let server = fx.start().await;
    let mut flow = Flow::new(&fx, &server);
    let ehr = fx.client("ehr");
    // Without client authentication (FAPI2-SP §5.3.2.2 #4, RFC 9126 §2).
    let challenge = flow.challenge.clone();
    let params = pairs(&[
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("scope", "openid nhn:sfm/api"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ]);
    let authenticated = |patch: Value| {
        let mut form = params.clone();
        form.extend(pairs(&[
            ("client_id", "ehr"),
            ("client_assertion_type", ASSERTION_TYPE),
        ]));
        form.push((
            "client_assertion".into(),
            sign_jwt(&ehr.key, "JWT", &fx.assertion_claims(&ehr, patch)).unwrap(),
        ));
        Req::form(form)
    };
    let token_endpoint = format!("{}/connect/token", fx.issuer);
    // The ehr client requires DPoP: these rows send no proof, so they run against a client
    // check that comes first; the twins are checked through the flow below.
    let no_auth = Req::form(params.clone())
        .send(&server, "/connect/par")
        .await;
    refused(
        &no_auth,
        401,
        "invalid_client",
        "1.6 PAR without client authentication",
    );
    let r = authenticated(json!({"aud": token_endpoint}))
        .send(&server, "/connect/par")
        .await;
    refused(
        &r,
        401,
        "invalid_client",
        "1.5 D2 aud = token endpoint URL at PAR",
    );
    // The twins: the same client authenticated, aud the issuer (flow.par does both).
    passed(
        &flow.par(&[]).await,
        201,
        "1.6 PAR without client authentication",
    );

    // Rows through the flow (client authentication and DPoP handled by it).
    let key_jkt = flow
        .dpop
        .public_jwk()
        .thumbprint()
        .unwrap()
        .as_str()
        .to_owned();
    let rows: Vec<(&str, Vec<(&str, &str)>, &str, Vec<(&str, &str)>)> = vec![
        (
            "1.2 #6 redirect_uri missing",
            vec![("redirect_uri", "")],
            "invalid_request",
            vec![],
        ),
        (
            "1.9 duplicate parameter (state twice)",
            vec![],
            "invalid_request",
            vec![("state", "a")],
        ),
        (
            "1.8 code_challenge_method missing",
            vec![("code_challenge_method", "")],
            "invalid_request",
            vec![("code_challenge_method", "S256")],
        ),
        (
            "1.4 §10.1 dpop_jkt differs from the proof's key",
            vec![("dpop_jkt", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")],
            "invalid_dpop_proof",
            vec![("dpop_jkt", key_jkt.as_str())],
        ),
    ];
    for (reference, bad, error, good) in rows {
        let r = if reference.contains("duplicate") {
            // Flow::par replaces names; send state twice by hand through Flow::post.
            let p: Vec<(&str, &str)> = vec![
                ("response_type", "code"),
                ("redirect_uri", REDIRECT),
                ("scope", "openid nhn:sfm/api"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("state", "a"),
                ("state", "b"),
            ];
            flow.post("/connect/par", &p).await
        } else {
            flow.par(&bad).await
        };
        refused(&r, 400, error, reference);
        passed(&flow.par(&good).await, 201, reference);
    }

    // RFC 9126 §2.3: 405 for another method, 413 for an oversized request.
    let r = reqwest::get(format!("{}/connect/par", server.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 405, "1.6 GET at PAR");
    let big = format!("response_type=code&pad={}", "a".repeat(70 * 1024));
    let r = server
        .post_raw(
            "/connect/par",
            "application/x-www-form-urlencoded",
            big.into_bytes(),
        )
        .await;
    refused(&r, 413, "invalid_request", "1.6 oversized PAR request");

    // RFC 9126 §2.3: 429 when rate-limited (a budget of two requests for the client; the
    // first PAR takes two with its nonce retry, so it is the twin).
    let limited = Fixture::new(
        backend,
        "[rate_limit]\nclient_rate = 0.01\nclient_burst = 2\naddress_rate = 0.01\naddress_burst = 20\n",
    )
    .await;
    let lserver = limited.start().await;
    let mut lflow = Flow::new(&limited, &lserver);
    passed(&lflow.par(&[]).await, 201, "1.6 rate-limited PAR");
    let r = lflow.par(&[]).await;
    refused(&r, 429, "temporarily_unavailable", "1.6 rate-limited PAR");
    assert!(r.headers.contains_key("retry-after"));
});

// ---------------------------------------------------------------------------------------------
// Userinfo: DPoP at a resource server (SECURITY.md §1.4 (12), RFC 9449 §7.1)

/// GET /connect/userinfo with an Authorization value and DPoP headers; status, the
/// WWW-Authenticate scheme and `error`, and the body.
async fn userinfo(server: &Server, auth: &str, proofs: &[String]) -> (u16, String, String) {
    let mut req = reqwest::Client::new()
        .get(format!("{}/connect/userinfo", server.base))
        .header("authorization", auth);
    for p in proofs {
        req = req.header("dpop", p);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let scheme = challenge.split(' ').next().unwrap_or("").to_owned();
    let field = |name: &str| {
        challenge
            .split(&format!("{name}=\""))
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("")
            .to_owned()
    };
    let description = field("error_description");
    assert!(
        description
            .chars()
            .all(|c| (' '..='~').contains(&c) && c != '\\'),
        "{description:?}"
    );
    (status, scheme, field("error"))
}

both!(userinfo_dpop_resource_server, |backend| async move {
    let fx = Fixture::new(backend, "").await;
    let server = fx.start().await;
    let mut flow = Flow::new(&fx, &server);
    let mut browser = Browser::new();
    let back = flow.login(&mut browser, "06828399789", &[]).await;
    let r = flow.exchange(&query_of(&back)["code"]).await;
    passed(&r, 200, "login");
    let token = r.body["access_token"].as_str().unwrap().to_owned();
    let url = format!("{}/connect/userinfo", fx.issuer);
    let ath = b64_encode(segl_jose::sha256(token.as_bytes()));
    let key = &flow.dpop;
    let other = SigningKey::generate(Alg::ES256).unwrap();
    let proof = |claims: Value, header: Value| {
        let mut c = json!({"htm": "GET", "ath": ath});
        for (k, v) in claims.as_object().unwrap() {
            c[k] = v.clone();
        }
        dpop_proof(key, &url, None, c, header)
    };
    let dpop = format!("DPoP {token}");
    let mut tampered: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims: Value =
        serde_json::from_slice(&segl_jose::b64_decode(&tampered[1]).unwrap()).unwrap();
    claims["sub"] = json!("someone-else");
    tampered[1] = b64_encode(claims.to_string());
    let tampered = tampered.join(".");
    let replayed = proof(json!({}), json!({}));
    assert_eq!(
        userinfo(&server, &dpop, std::slice::from_ref(&replayed))
            .await
            .0,
        200
    );
    // (reference, Authorization, proofs, expected scheme, expected error)
    let rows: Vec<(&str, String, Vec<String>, &str, &str)> = vec![
        (
            "1.4 RFC 9449 §7.2 DPoP-bound token under the Bearer scheme",
            format!("Bearer {token}"),
            vec![],
            "DPoP",
            "invalid_token",
        ),
        (
            "1.4 no proof",
            dpop.clone(),
            vec![],
            "DPoP",
            "invalid_dpop_proof",
        ),
        (
            "1.4 (1) two DPoP headers",
            dpop.clone(),
            vec![proof(json!({}), json!({})), proof(json!({}), json!({}))],
            "DPoP",
            "invalid_dpop_proof",
        ),
        (
            "1.4 (12) ath of another token",
            dpop.clone(),
            vec![proof(
                json!({"ath": b64_encode(segl_jose::sha256(b"other"))}),
                json!({}),
            )],
            "DPoP",
            "invalid_dpop_proof",
        ),
        (
            "1.4 (12) no ath",
            dpop.clone(),
            vec![proof(json!({"ath": null}), json!({}))],
            "DPoP",
            "invalid_dpop_proof",
        ),
        (
            "1.4 (12) proof key is not the token's cnf.jkt",
            dpop.clone(),
            vec![dpop_proof(
                &other,
                &url,
                None,
                json!({"htm": "GET", "ath": ath}),
                json!({}),
            )],
            "DPoP",
            "invalid_dpop_proof",
        ),
        (
            "1.4 (8) htm POST on a GET",
            dpop.clone(),
            vec![proof(json!({"htm": "POST"}), json!({}))],
            "DPoP",
            "invalid_dpop_proof",
        ),
        (
            "1.4 (9) htu of the token endpoint",
            dpop.clone(),
            vec![proof(
                json!({"htu": format!("{}/connect/token", fx.issuer)}),
                json!({}),
            )],
            "DPoP",
            "invalid_dpop_proof",
        ),
        (
            "1.4 (4) typ JWT",
            dpop.clone(),
            vec![proof(json!({}), json!({"typ": "JWT"}))],
            "DPoP",
            "invalid_dpop_proof",
        ),
        (
            "1.4 (11) iat 75 s old",
            dpop.clone(),
            vec![proof(json!({"iat": now() - 75}), json!({}))],
            "DPoP",
            "invalid_dpop_proof",
        ),
        (
            "1.4 replay of a proof at the resource server",
            dpop.clone(),
            vec![replayed.clone()],
            "DPoP",
            "invalid_dpop_proof",
        ),
        (
            "1.3 tampered access token",
            format!("DPoP {tampered}"),
            vec![proof(
                json!({"ath": b64_encode(segl_jose::sha256(tampered.as_bytes()))}),
                json!({}),
            )],
            "DPoP",
            "invalid_token",
        ),
    ];
    for (reference, auth, proofs, scheme, error) in rows {
        let (status, s, e) = userinfo(&server, &auth, &proofs).await;
        assert_eq!(
            (status, s.as_str(), e.as_str()),
            (401, scheme, error),
            "{reference}"
        );
        let (status, _, e) = userinfo(&server, &dpop, &[proof(json!({}), json!({}))]).await;
        assert_eq!((status, e.as_str()), (200, ""), "near miss of {reference}");
    }
});

// ---------------------------------------------------------------------------------------------
// Revocation and introspection: client authentication (SECURITY.md §1.5)

both!(
    revocation_and_introspection_authentication,
    |backend| async move {
        let fx = Fixture::new(backend, "").await;
        let server = fx.start().await;
        let sfm = fx.client("sfm");
        let token = server
            .token(&fx.cc_form(&fx.client("epj"), Some("nhn:sfm/api")))
            .await
            .body["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        for (path, reference) in [
            (
                "/connect/revocation",
                "1.5 revocation without client authentication",
            ),
            (
                "/connect/introspect",
                "1.5 introspection without client authentication",
            ),
        ] {
            let bad = Req::form(pairs(&[("token", &token), ("client_id", "sfm")]));
            let r = bad.send(&server, path).await;
            assert_eq!(
                (r.status, r.error()),
                (401, "invalid_client"),
                "{reference}: {}",
                r.body
            );
            r.expect_error(401, "invalid_client");
            let mut good = pairs(&[("token", &token)]);
            good.extend(cc("sfm", fx.assertion(&sfm, json!({}))));
            good.retain(|(k, _)| k != "grant_type");
            let r = Req::form(good).send(&server, path).await;
            assert_eq!(r.status, 200, "near miss of {reference}: {}", r.body);
        }
    }
);
