//! The built-in test identity provider (`[test_idp] enabled = true`): a plain HTML form with a
//! text input `pid`. A registered `[[person]]`, or any well-formed national identity number
//! (with a generated name), logs in at security level 4 / assurance `high` (or the person's
//! `security_level`), `amr` `["pwd"]`.
//!
//! The form is bound to the browser that started the login twice over: the login-transaction
//! cookie must equal the form's `tx`, and the form's `csrf` must equal the token stored with
//! the transaction.

use crate::App;
use crate::audit::Origin;
use crate::error::ApiError;
use crate::pages::{self, LoginForm};
use crate::session::{self, Transaction};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use segl_core::UnixTime;
use segl_core::federation::Level;
use segl_core::form::Form;
use segl_core::identity::{Login, Person, generated_person, is_national_id};

/// The `idp` claim of test logins.
pub const IDP_NAME: &str = segl_core::federation::TEST_IDP;

/// `GET /testidp/login?tx=…`: the form.
pub(crate) async fn form(State(app): State<App>, RawQuery(query): RawQuery) -> Response {
    let now = app.clock.now();
    let tx = Form::parse(query.unwrap_or_default().as_bytes())
        .ok()
        .and_then(|mut f| f.take("tx"));
    let Some(tx) = tx else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "nb",
            "the login link is incomplete; start the login again",
        );
    };
    match session::transaction(&app, &tx, now).await {
        Ok(Some(t)) => render(&app, &tx, &t, StatusCode::OK, "", None),
        Ok(None) => pages::error(
            StatusCode::BAD_REQUEST,
            "nb",
            "this login has expired or is finished; start the login again",
        ),
        Err(e) => e.into_response(),
    }
}

fn render(
    app: &App,
    tx: &str,
    t: &Transaction,
    status: StatusCode,
    pid: &str,
    error: Option<&str>,
) -> Response {
    let client_name = app
        .settings
        .registry
        .client(&t.request.client_id)
        .map(|c| c.name.clone())
        .unwrap_or_default();
    pages::login(
        status,
        &LoginForm {
            lang: t.request.language(),
            action: segl_proto::paths::TEST_IDP_LOGIN,
            tx,
            csrf: &t.csrf,
            client_name: &client_name,
            pid,
            error,
        },
    )
}

/// `POST /testidp/login`: checks the form and completes the login.
pub(crate) async fn submit(
    State(app): State<App>,
    origin: Origin,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&app, &origin, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    app: &App,
    origin: &Origin,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let now = app.clock.now();
    let bad = |text: &str| Ok(pages::error(StatusCode::BAD_REQUEST, "nb", text));
    let Ok(mut form) = crate::token::read_form(headers, body).await else {
        return bad("the login form could not be read");
    };
    let (Some(tx), Some(csrf)) = (form.take("tx"), form.take("csrf")) else {
        return bad("the login form is incomplete (CSRF check failed); start the login again");
    };
    if session::cookie(headers, session::TX_COOKIE).as_deref() != Some(tx.as_str()) {
        return bad(
            "this login was started in another browser (CSRF check failed); start the login again",
        );
    }
    let Some(t) = session::transaction(app, &tx, now).await? else {
        return bad("this login has expired or is finished; start the login again");
    };
    if aws_lc_rs::constant_time::verify_slices_are_equal(csrf.as_bytes(), t.csrf.as_bytes())
        .is_err()
    {
        return bad("the login form is not valid (CSRF check failed); start the login again");
    }
    let pid = form.take("pid").unwrap_or_default().trim().to_owned();
    let Some(person) = find_person(app, &pid) else {
        let text = pages::texts(t.request.language()).unknown_pid;
        return Ok(render(
            app,
            &tx,
            &t,
            StatusCode::BAD_REQUEST,
            &pid,
            Some(text),
        ));
    };
    // Consume the transaction: a double submit completes one login.
    let Some(t) = session::finish_transaction(app, &tx, now).await? else {
        return bad("this login is already finished");
    };
    let login = login_for(app, person, now)?;
    session::complete_login(app, headers, origin, &t.request, login, now).await
}

fn find_person(app: &App, pid: &str) -> Option<Person> {
    match app.settings.persons.get(pid) {
        Some(p) => Some(p.clone()),
        None if is_national_id(pid) => Some(generated_person(pid)),
        None => None,
    }
}

fn login_for(app: &App, person: Person, now: UnixTime) -> Result<Login, ApiError> {
    let level = app
        .settings
        .person_levels
        .get(&person.pid)
        .cloned()
        .unwrap_or_else(Level::high);
    Ok(Login {
        pseudonym: session::pseudonym(app, &person.pid),
        person,
        idp: IDP_NAME.into(),
        amr: vec!["pwd".into()],
        security_level: level.security_level,
        assurance_level: level.assurance_level,
        network: "internett".into(),
        auth_time: now.secs(),
        sid: session::random_token()?,
    })
}
