//! Server-rendered HTML (minijinja templates embedded in the binary, no JavaScript), in
//! Norwegian Bokmål and English, with the headers every page needs: a Content-Security-Policy
//! with `frame-ancestors 'none'`, `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` and
//! `Cache-Control: no-store` (RFC 9700 §4.2.4, §4.16).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Environment, context};
use std::sync::OnceLock;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // Templates are compiled in; a syntax error in one is caught by the unit test below.
        for (name, text) in [
            ("base.html", include_str!("../templates/base.html")),
            ("login.html", include_str!("../templates/login.html")),
            ("message.html", include_str!("../templates/message.html")),
            ("choose.html", include_str!("../templates/choose.html")),
        ] {
            if let Err(e) = env.add_template(name, text) {
                tracing::error!(template = name, error = %e, "template does not compile");
            }
        }
        env
    })
}

/// Texts by language.
pub struct Texts {
    login_title: &'static str,
    login_heading: &'static str,
    login_intro: &'static str,
    login_for: &'static str,
    pid_label: &'static str,
    pid_help: &'static str,
    login_button: &'static str,
    /// Error heading.
    pub error_heading: &'static str,
    /// Unknown or malformed national id.
    pub unknown_pid: &'static str,
    /// Logged out heading.
    pub logged_out_heading: &'static str,
    /// Logged out text.
    pub logged_out: &'static str,
    choose_title: &'static str,
    choose_heading: &'static str,
    /// Refused login heading.
    pub refused_heading: &'static str,
    /// The link back to the client.
    pub back_to_client: &'static str,
}

/// The texts for `lang` (`en`, else Norwegian Bokmål).
pub fn texts(lang: &str) -> &'static Texts {
    static NB: Texts = Texts {
        login_title: "Logg inn",
        login_heading: "Testinnlogging",
        login_intro: "Dette er Segls testidentitetsleverandør. Skriv inn fødselsnummeret til en testperson.",
        login_for: "Innlogging til",
        pid_label: "Fødselsnummer",
        pid_help: "11 siffer",
        login_button: "Logg inn",
        error_heading: "Noe gikk galt",
        unknown_pid: "Ukjent eller ugyldig fødselsnummer.",
        logged_out_heading: "Logget ut",
        logged_out: "Du er logget ut.",
        choose_title: "Velg innlogging",
        choose_heading: "Velg hvordan du vil logge inn",
        refused_heading: "Innloggingen ble avvist",
        back_to_client: "Tilbake til tjenesten",
    };
    static EN: Texts = Texts {
        login_title: "Log in",
        login_heading: "Test login",
        login_intro: "This is Segl's test identity provider. Enter the national identity number of a test person.",
        login_for: "Logging in to",
        pid_label: "National identity number",
        pid_help: "11 digits",
        login_button: "Log in",
        error_heading: "Something went wrong",
        unknown_pid: "Unknown or invalid national identity number.",
        logged_out_heading: "Logged out",
        logged_out: "You are logged out.",
        choose_title: "Choose login",
        choose_heading: "Choose how to log in",
        refused_heading: "The login was refused",
        back_to_client: "Back to the service",
    };
    if lang == "en" { &EN } else { &NB }
}

fn t_context(t: &Texts) -> minijinja::Value {
    context! {
        login_title => t.login_title, login_heading => t.login_heading, login_intro => t.login_intro,
        login_for => t.login_for, pid_label => t.pid_label, pid_help => t.pid_help, login_button => t.login_button,
        choose_title => t.choose_title, choose_heading => t.choose_heading,
    }
}

/// What the login form needs.
pub struct LoginForm<'a> {
    /// Language.
    pub lang: &'a str,
    /// The form's action path.
    pub action: &'a str,
    /// Login transaction id.
    pub tx: &'a str,
    /// CSRF token.
    pub csrf: &'a str,
    /// Client display name.
    pub client_name: &'a str,
    /// A previous entry (on error).
    pub pid: &'a str,
    /// An error to show.
    pub error: Option<&'a str>,
}

/// The test IdP's login form.
pub fn login(status: StatusCode, form: &LoginForm<'_>) -> Response {
    let html = render(
        "login.html",
        context! {
            lang => form.lang, t => t_context(texts(form.lang)), action => form.action, tx => form.tx,
            csrf => form.csrf, client_name => form.client_name, pid => form.pid, error => form.error,
        },
    );
    with_headers(status, html)
}

/// A page with a heading and a message (errors, logged out).
pub fn message(status: StatusCode, lang: &str, heading: &str, message: &str) -> Response {
    let html = render(
        "message.html",
        context! { lang => lang, heading => heading, message => message, is_error => status.as_u16() >= 400 },
    );
    with_headers(status, html)
}

/// A message with a link onward (followed by the browser after `refresh` seconds).
pub fn message_with_link(
    status: StatusCode,
    lang: &str,
    heading: &str,
    message: &str,
    href: &str,
    refresh: u32,
) -> Response {
    let html = render(
        "message.html",
        context! {
            lang => lang, heading => heading, message => message, is_error => status.as_u16() >= 400,
            link => context! { href => href, text => texts(lang).back_to_client }, refresh => refresh,
        },
    );
    with_headers(status, html)
}

/// One identity provider on the choice page.
#[derive(serde::Serialize)]
pub struct IdpOption {
    /// The link that chooses it (contains its name).
    pub href: String,
    /// Its name.
    pub name: String,
    /// What the person sees.
    pub display_name: String,
}

/// The identity-provider choice page.
pub fn choose(lang: &str, client_name: &str, idps: &[IdpOption]) -> Response {
    let html = render(
        "choose.html",
        context! { lang => lang, t => t_context(texts(lang)), client_name => client_name, idps => idps },
    );
    with_headers(StatusCode::OK, html)
}

/// An error page (never a redirect: used before the redirect URI is trusted).
pub fn error(status: StatusCode, lang: &str, text: &str) -> Response {
    tracing::info!(status = status.as_u16(), %text, "error page");
    message(status, lang, texts(lang).error_heading, text)
}

fn render(name: &str, ctx: minijinja::Value) -> String {
    env()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .unwrap_or_else(|e| {
            tracing::error!(template = name, error = %e, "render failed");
            "<!doctype html><title>Segl</title><p>Internal error.</p>".to_owned()
        })
}

/// Adds the page security headers. The policy has no `form-action`: browsers apply it to the
/// whole redirect chain after the login form, and that chain leaves for the client's redirect
/// URI — through a federating client (another Segl, say) to origins this page cannot know.
pub fn with_headers(status: StatusCode, html: String) -> Response {
    let mut r = (status, Html(html)).into_response();
    let csp = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'";
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_compile_and_escape() {
        for name in ["base.html", "login.html", "message.html", "choose.html"] {
            assert!(env().get_template(name).is_ok(), "{name}");
        }
        let html = render(
            "login.html",
            context! { lang => "en", t => t_context(texts("en")), action => "/a", tx => "TX", csrf => "C", client_name => "N", pid => "", error => "bad" },
        );
        assert!(
            html.contains("value=\"TX\"")
                && html.contains("Log in")
                && html.contains("aria-invalid"),
            "{html}"
        );
        let html = render(
            "message.html",
            context! { lang => "en", heading => "<h>", message => "<script>", is_error => true },
        );
        assert!(
            html.contains("&lt;script&gt;") && !html.contains("<script>"),
            "{html}"
        );
        let r = login(
            StatusCode::OK,
            &LoginForm {
                lang: "en",
                action: "/a",
                tx: "t",
                csrf: "c",
                client_name: "C",
                pid: "",
                error: None,
            },
        );
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"));
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
    }
}
