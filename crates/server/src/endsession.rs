//! `GET /connect/endsession` (OpenID Connect RP-Initiated Logout 1.0): ends the browser's
//! session and returns to a registered `post_logout_redirect_uri` (with `state`) when the
//! `id_token_hint` names the client that registered it; otherwise shows a logged-out page.

use crate::App;
use crate::authorize::see_other;
use crate::own_tokens::{self, Kind};
use crate::pages;
use crate::session;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use segl_core::form::Form;

/// The handler.
pub(crate) async fn endsession(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let now = app.clock.now();
    let Ok(mut params) = Form::parse(query.unwrap_or_default().as_bytes()) else {
        return pages::error(StatusCode::BAD_REQUEST, "nb", "malformed logout request");
    };
    let lang = segl_core::authorize::language(params.get("ui_locales"));
    // The hint may have expired: it only identifies the client (OIDC RP-Initiated Logout §2).
    let hinted_client = params
        .take("id_token_hint")
        .and_then(|hint| own_tokens::verify(&app, &hint, Kind::IdToken, true, now).ok())
        .and_then(|claims| {
            claims
                .get("aud")
                .and_then(|a| a.as_str())
                .map(str::to_owned)
        });
    if let (Some(hinted), Some(asked)) = (&hinted_client, params.get("client_id"))
        && hinted != asked
    {
        return pages::error(
            StatusCode::BAD_REQUEST,
            lang,
            "client_id does not match the id_token_hint",
        );
    }
    let cookie = match session::end(&app, &headers).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let target = params.take("post_logout_redirect_uri").filter(|uri| {
        hinted_client
            .as_deref()
            .and_then(|id| app.settings.registry.client(id))
            .is_some_and(|c| c.post_logout_redirect_uris.iter().any(|r| r == uri))
    });
    let mut r = match target {
        Some(uri) => {
            let mut location = uri;
            if let Some(state) = params.take("state") {
                location.push(if location.contains('?') { '&' } else { '?' });
                location.push_str("state=");
                location.push_str(
                    &percent_encoding::utf8_percent_encode(
                        &state,
                        percent_encoding::NON_ALPHANUMERIC,
                    )
                    .to_string(),
                );
            }
            see_other(&location)
        }
        None => {
            let t = pages::texts(lang);
            pages::message(StatusCode::OK, lang, t.logged_out_heading, t.logged_out)
        }
    };
    r.headers_mut().append(header::SET_COOKIE, cookie);
    r
}
