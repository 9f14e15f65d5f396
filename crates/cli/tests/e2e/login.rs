//! Person login over HTTP: PAR → authorize → test IdP form → code → token exchange with PKCE
//! and DPoP → ID token, enriched access token, userinfo, SSO and logout; and every rejection
//! the login issue lists.

use crate::both;
use crate::harness::*;
use segl_jose::{Alg, SigningKey};
use serde_json::{Value, json};
use std::collections::HashMap;

pub const REDIRECT: &str = "http://127.0.0.1:9000/callback";
pub const SCOPES: &str = "openid profile nhn:sfm/api helseid://scopes/identity/pid helseid://scopes/identity/pid_pseudonym helseid://scopes/identity/security_level helseid://scopes/identity/assurance_level helseid://scopes/identity/network helseid://scopes/hpr/hpr_number";

/// A browser: no automatic redirects, a cookie jar by name.
pub struct Browser {
    http: reqwest::Client,
    pub cookies: HashMap<String, String>,
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn absorb(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), val.to_owned());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn get(&mut self, url: &str) -> (u16, reqwest::header::HeaderMap, String) {
        let r = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.absorb(&r);
        (
            r.status().as_u16(),
            r.headers().clone(),
            r.text().await.unwrap(),
        )
    }

    pub async fn post_form(
        &mut self,
        url: &str,
        form: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let r = self
            .http
            .post(url)
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.absorb(&r);
        (
            r.status().as_u16(),
            r.headers().clone(),
            r.text().await.unwrap(),
        )
    }
}

pub fn location(h: &reqwest::header::HeaderMap) -> String {
    h.get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub fn query_of(url: &str) -> HashMap<String, String> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect()
}

pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// PKCE pair (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    let verifier = format!("{}{}", new_jti(), new_jti());
    let challenge = segl_jose::b64_encode(segl_jose::sha256(verifier.as_bytes()));
    (verifier, challenge)
}

/// One login session of a client: its DPoP key, PKCE pair and the current nonce.
pub struct Flow<'a> {
    pub fx: &'a Fixture,
    pub server: &'a Server,
    pub client: std::sync::Arc<TestClient>,
    pub dpop: SigningKey,
    pub verifier: String,
    pub challenge: String,
    pub nonce: Option<String>,
    /// Extra claims for the client assertions (e.g. `assertion_details`).
    pub assertion_patch: Value,
}

impl<'a> Flow<'a> {
    pub fn new(fx: &'a Fixture, server: &'a Server) -> Flow<'a> {
        let (verifier, challenge) = pkce();
        Flow {
            fx,
            server,
            client: fx.client("ehr"),
            dpop: SigningKey::generate(Alg::ES256).unwrap(),
            verifier,
            challenge,
            nonce: None,
            assertion_patch: json!({}),
        }
    }

    fn proof(&self, path: &str) -> String {
        dpop_proof(
            &self.dpop,
            &format!("{}{path}", self.fx.issuer),
            self.nonce.as_deref(),
            json!({}),
            json!({}),
        )
    }

    /// POST with client authentication and a DPoP proof, retrying once for a nonce.
    pub async fn post(&mut self, path: &str, params: &[(&str, &str)]) -> Response {
        for _ in 0..2 {
            let mut form: Vec<(String, String)> = params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            form.push(("client_id".into(), self.client.id.clone()));
            form.push(("client_assertion_type".into(), ASSERTION_TYPE.into()));
            form.push((
                "client_assertion".into(),
                self.fx
                    .assertion(&self.client, self.assertion_patch.clone()),
            ));
            let body = form
                .iter()
                .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
                .collect::<Vec<_>>()
                .join("&");
            let proof = self.proof(path);
            let r = self
                .server
                .post_with(
                    path,
                    "application/x-www-form-urlencoded",
                    body.into_bytes(),
                    &[("dpop", &proof)],
                )
                .await;
            if let Some(n) = r.headers.get("dpop-nonce") {
                self.nonce = Some(n.to_str().unwrap().to_owned());
            }
            if r.error() != "use_dpop_nonce" {
                return r;
            }
        }
        panic!("nonce dance failed")
    }

    /// PAR with the standard parameters plus `extra` (an empty value removes one).
    pub async fn par(&mut self, extra: &[(&str, &str)]) -> Response {
        let challenge = self.challenge.clone();
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", SCOPES),
            ("state", "st-123"),
            ("nonce", "n-456"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ];
        for (k, v) in extra {
            // resource may repeat (RFC 8707); every other name replaces the default.
            if *k != "resource" {
                params.retain(|(pk, _)| pk != k);
            }
            if !v.is_empty() {
                params.push((k, v));
            }
        }
        self.post("/connect/par", &params).await
    }

    pub fn authorize_url(&self, request_uri: &str) -> String {
        format!(
            "{}/connect/authorize?client_id={}&request_uri={}",
            self.server.base,
            self.client.id,
            urlencode(request_uri)
        )
    }

    /// Logs `pid` in through the test IdP; returns the redirect to the client.
    pub async fn login(
        &mut self,
        browser: &mut Browser,
        pid: &str,
        extra: &[(&str, &str)],
    ) -> String {
        let r = self.par(extra).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let (status, headers, _) = browser
            .get(&self.authorize_url(r.body["request_uri"].as_str().unwrap()))
            .await;
        assert_eq!(status, 303);
        let login_page = location(&headers);
        if login_page.starts_with(REDIRECT) {
            return login_page; // single sign-on
        }
        let (status, headers, html) = browser.get(&login_page).await;
        assert_eq!(status, 200, "{html}");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        let (tx, csrf) = (hidden(&html, "tx"), hidden(&html, "csrf"));
        let (status, headers, body) = browser
            .post_form(
                &format!("{}/testidp/login", self.server.base),
                &[("tx", &tx), ("csrf", &csrf), ("pid", pid)],
            )
            .await;
        assert_eq!(status, 303, "{body}");
        location(&headers)
    }

    /// Exchanges a code.
    pub async fn exchange(&mut self, code: &str) -> Response {
        let verifier = self.verifier.clone();
        self.post(
            "/connect/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
            ],
        )
        .await
    }

    /// userinfo with the DPoP-bound token.
    pub async fn userinfo(&self, token: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = format!("{}/connect/userinfo", self.fx.issuer);
        let proof =
            segl_jose::dpop::create_proof(&self.dpop, "GET", &url, now(), None, Some(token))
                .unwrap();
        let r = reqwest::Client::new()
            .get(format!("{}/connect/userinfo", self.server.base))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.json().await.unwrap_or(Value::Null))
    }
}

fn claims_of(jwt: &str) -> serde_json::Map<String, Value> {
    segl_jose::UnverifiedJws::parse(jwt)
        .unwrap()
        .unverified_claims()
        .clone()
}

both!(
    login_code_exchange_tokens_and_userinfo,
    |backend| async move {
        let fx = Fixture::new(backend, "").await;
        let server = fx.start().await;
        let mut flow = Flow::new(&fx, &server);
        let mut browser = Browser::new();
        let back = flow.login(&mut browser, "06828399789", &[]).await;
        assert!(back.starts_with(REDIRECT), "{back}");
        let q = query_of(&back);
        assert_eq!(q["state"], "st-123");
        assert_eq!(q["iss"], fx.issuer);
        let r = flow.exchange(&q["code"]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["token_type"], "DPoP");
        let at = claims_of(r.body["access_token"].as_str().unwrap());
        let id = claims_of(r.body["id_token"].as_str().unwrap());
        let jkt = flow.dpop.public_jwk().thumbprint().unwrap();
        // Access token: the API, the client, the person.
        assert_eq!(at["aud"], "nhn:sfm");
        assert_eq!(at["client_id"], "ehr");
        assert_eq!(at["cnf"]["jkt"], jkt.as_str());
        assert_eq!(at["helseid://claims/identity/pid"], "06828399789");
        assert_eq!(at["helseid://claims/identity/security_level"], "4");
        assert_eq!(at["helseid://claims/identity/assurance_level"], "high");
        assert_eq!(at["helseid://claims/identity/network"], "internett");
        assert_eq!(at["helseid://claims/hpr/hpr_number"], "431001110");
        assert_eq!(
            at["helseid://claims/client/claims/orgnr_parent"],
            "999977774"
        );
        assert_eq!(at["name"], "Kvart Grevling");
        assert_eq!(at["idp"], "testidp-oidc");
        assert_eq!(at["amr"], json!(["pwd"]));
        let pseudonym = at["helseid://claims/identity/pid_pseudonym"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(at["sub"], pseudonym.as_str());
        assert_eq!(pseudonym.len(), 44, "base64 of 32 bytes");
        // ID token.
        assert_eq!(id["aud"], "ehr");
        assert_eq!(id["iss"], fx.issuer.as_str());
        assert_eq!(id["sub"], pseudonym.as_str());
        assert_eq!(id["nonce"], "n-456");
        assert_eq!(id["idp"], "testidp-oidc");
        assert_eq!(id["acr"], "Level4");
        assert!(id["sid"].is_string() && id["auth_time"].is_i64());
        let expected_at_hash = {
            let h = segl_jose::sha256(r.body["access_token"].as_str().unwrap().as_bytes());
            segl_jose::b64_encode(&h[..16])
        };
        assert_eq!(id["at_hash"], expected_at_hash.as_str());
        let header = segl_jose::UnverifiedJws::parse(r.body["id_token"].as_str().unwrap())
            .unwrap()
            .unverified_header()
            .clone();
        assert_eq!(header["typ"], "JWT");
        // Userinfo with the DPoP-bound token.
        let token = r.body["access_token"].as_str().unwrap().to_owned();
        let (status, _, info) = flow.userinfo(&token).await;
        assert_eq!(status, 200, "{info}");
        assert_eq!(info["sub"], pseudonym.as_str());
        assert_eq!(
            info["helseid://claims/hpr/hpr_details"]["hpr_number"],
            431001110
        );
        // The same token as Bearer is refused.
        let r2 = reqwest::Client::new()
            .get(format!("{}/connect/userinfo", server.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r2.status(), 401);
        assert!(
            r2.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("DPoP")
        );

        // The pseudonym is stable across logins; SSO: a second login in the same browser needs no form.
        let mut flow2 = Flow::new(&fx, &server);
        let back = flow2.login(&mut browser, "06828399789", &[]).await;
        let code = query_of(&back)["code"].clone();
        let r = flow2.exchange(&code).await;
        assert_eq!(
            claims_of(r.body["access_token"].as_str().unwrap())["sub"],
            pseudonym.as_str()
        );
        // prompt=login forces the form again.
        let mut flow3 = Flow::new(&fx, &server);
        let r = flow3.par(&[("prompt", "login")]).await;
        let (_, h, _) = browser
            .get(&flow3.authorize_url(r.body["request_uri"].as_str().unwrap()))
            .await;
        assert!(location(&h).contains("/testidp/login"), "{}", location(&h));

        // Logout with id_token_hint returns to the registered URI with state; the session is gone.
        let id_token = flow.exchange("x").await; // invalid code: just to keep the nonce fresh
        id_token.expect_error(400, "invalid_grant");
        let hint = {
            let mut f = Flow::new(&fx, &server);
            let back = f.login(&mut browser, "06828399789", &[]).await;
            let r = f.exchange(&query_of(&back)["code"]).await;
            r.body["id_token"].as_str().unwrap().to_owned()
        };
        let (status, h, _) = browser
            .get(&format!(
                "{}/connect/endsession?id_token_hint={hint}&post_logout_redirect_uri={}&state=bye",
                server.base,
                urlencode("http://127.0.0.1:9000/")
            ))
            .await;
        assert_eq!(
            (status, location(&h)),
            (303, "http://127.0.0.1:9000/?state=bye".to_owned())
        );
        let mut f = Flow::new(&fx, &server);
        let r = f.par(&[("prompt", "none")]).await;
        let (_, h, _) = browser
            .get(&f.authorize_url(r.body["request_uri"].as_str().unwrap()))
            .await;
        let q = query_of(&location(&h));
        assert_eq!(q["error"], "login_required");
        assert_eq!(q["state"], "st-123");
    }
);

both!(
    code_is_single_use_and_replay_revokes,
    |backend| async move {
        let fx = Fixture::new(backend, "").await;
        let server = fx.start().await;
        let mut flow = Flow::new(&fx, &server);
        let mut browser = Browser::new();
        let back = flow.login(&mut browser, "06828399789", &[]).await;
        let code = query_of(&back)["code"].clone();
        let first = flow.exchange(&code).await;
        assert_eq!(first.status, 200);
        let token = first.body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(flow.userinfo(&token).await.0, 200);
        flow.exchange(&code)
            .await
            .expect_error(400, "invalid_grant");
        // The token issued from the first redemption is revoked.
        let (status, h, _) = flow.userinfo(&token).await;
        assert_eq!(status, 401);
        assert!(h["www-authenticate"].to_str().unwrap().contains("revoked"));

        // 16 concurrent redemptions of a fresh code: exactly one succeeds.
        let back = flow.login(&mut browser, "06828399789", &[]).await;
        let code = query_of(&back)["code"].clone();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let form = vec![
                ("grant_type".to_owned(), "authorization_code".to_owned()),
                ("code".to_owned(), code.clone()),
                ("redirect_uri".to_owned(), REDIRECT.to_owned()),
                ("code_verifier".to_owned(), flow.verifier.clone()),
                ("client_id".to_owned(), "ehr".to_owned()),
                (
                    "client_assertion_type".to_owned(),
                    ASSERTION_TYPE.to_owned(),
                ),
                (
                    "client_assertion".to_owned(),
                    fx.assertion(&flow.client, json!({})),
                ),
            ];
            let proof = dpop_proof(
                &flow.dpop,
                &format!("{}/connect/token", fx.issuer),
                flow.nonce.as_deref(),
                json!({}),
                json!({}),
            );
            let url = format!("{}/connect/token", server.base);
            tasks.spawn(async move {
                reqwest::Client::new()
                    .post(url)
                    .header("dpop", proof)
                    .form(&form)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            });
        }
        let statuses = tasks.join_all().await;
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{statuses:?}"
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segl_login_native_app_flow() {
    use tokio::io::AsyncBufReadExt as _;
    let fx = Fixture::new(Backend::Sqlite, "").await;
    let server = fx.start().await;
    let key_path = fx.dir.path().join("ehr.private.jwk.json");
    std::fs::write(
        &key_path,
        serde_json::to_vec(&fx.client("ehr").key.to_private_jwk().unwrap()).unwrap(),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "login",
            "--no-open",
            "--timeout",
            "30",
            "--issuer",
            &server.issuer,
            "--client-id",
            "ehr",
            "--scope",
            "openid profile nhn:sfm/api helseid://scopes/identity/pid",
            "--key",
        ])
        .arg(&key_path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("segl login printed no URL");
        if let Some(u) = line
            .trim()
            .strip_prefix(&format!("{}/connect/authorize?", server.issuer))
        {
            break format!("{}/connect/authorize?{u}", server.base);
        }
    };
    let mut browser = Browser::new();
    let (status, h, _) = browser.get(&url).await;
    assert_eq!(status, 303);
    let (_, _, html) = browser.get(&location(&h)).await;
    let field = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let start = html.find(&marker).unwrap() + marker.len();
        html[start..].split('"').next().unwrap().to_owned()
    };
    let (status, h, _) = browser
        .post_form(
            &format!("{}/testidp/login", server.base),
            &[
                ("tx", &field("tx")),
                ("csrf", &field("csrf")),
                ("pid", "06828399789"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    let callback = location(&h);
    assert!(
        callback.starts_with("http://127.0.0.1:") && callback.contains("/callback?code="),
        "{callback}"
    );
    let (status, _, page) = browser.get(&callback).await;
    assert_eq!(status, 200, "{page}");
    let mut out = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        out.push_str(&line);
        out.push('\n');
    }
    assert!(child.wait().await.unwrap().success(), "{out}");
    let json: Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    assert_eq!(json["token_type"], "DPoP");
    let at = claims_of(json["access_token"].as_str().unwrap());
    assert_eq!(at["helseid://claims/identity/pid"], "06828399789");
    assert!(json["id_token"].is_string());
}
