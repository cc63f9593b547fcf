//! Who is asking: the session cookie or an API token, and when a request
//! needs one. Login and logout.
//!
//! Until the first user is added the service stays as it was on loopback
//! (open to this machine only); once a user exists, or the listener is
//! opened beyond loopback, everything but `/metrics`, `/healthz` and the
//! login page needs a session or a token.

use super::sessions::{COOKIE, IDLE_TIMEOUT, LoginLimiter, Sessions};
use super::users::Users;
use crate::http::routes::ApiState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a source that failed too many logins waits.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// Users, their sessions and the login limiter: kept by the service, so an
/// HTTP restart does not log everyone out.
pub struct WebAuth {
    pub users: Users,
    pub sessions: Sessions,
    pub limiter: LoginLimiter,
}

impl WebAuth {
    pub fn new(data_dir: &Path) -> Arc<Self> {
        Arc::new(Self {
            users: Users::new(data_dir),
            sessions: Sessions::new(IDLE_TIMEOUT),
            limiter: LoginLimiter::new(LOGIN_WINDOW),
        })
    }
}

/// The peer of a TCP connection, put on every request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Who a request is from, for handlers that record it: a user's name, or
/// `local` when no user exists yet and the request came over loopback.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// Paths anyone may reach: scrapes, health checks and the way in.
fn is_open(path: &str) -> bool {
    matches!(path, "/metrics" | "/healthz" | "/login" | "/style.css")
}

pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// The user a request's session cookie or token belongs to.
fn identify(auth: &WebAuth, headers: &HeaderMap) -> Option<String> {
    let users = auth.users.current();
    if let Some(id) = cookie(headers, COOKIE)
        && let Some(user) = auth.sessions.touch(id, Instant::now())
    {
        if users.exists(&user) {
            return Some(user);
        }
        // Removed since they logged in.
        auth.sessions.end_user(&user);
    }
    bearer(headers).and_then(|t| users.token_user(t)).map(str::to_owned)
}

/// Lets a request through with its [`Caller`], or sends it to log in: a
/// page to `/login`, an API call a 401.
pub async fn require_login(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if is_open(&path) {
        return next.run(request).await;
    }
    let needed = !state.auth.users.current().users.is_empty() || state.config.borrow().http.allow_non_loopback;
    let caller = match identify(&state.auth, request.headers()) {
        Some(user) => user,
        None if !needed => "local".to_owned(),
        None if path.starts_with("/api/") => {
            let mut response = super::error(
                StatusCode::UNAUTHORIZED,
                "log in first, or send `Authorization: Bearer TOKEN` (smart-cctv user token NAME)",
            );
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
        None => return Redirect::to("/login").into_response(),
    };
    request.extensions_mut().insert(Caller(caller));
    next.run(request).await
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
}

/// A user name as it may appear in a log line: printable ASCII, at most 64
/// characters, so a crafted name cannot forge other lines.
fn loggable(name: &str) -> String {
    name.chars().take(64).map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect()
}

fn source(request_peer: Option<&Peer>) -> IpAddr {
    request_peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.ip())
}

pub async fn login_page(State(state): State<ApiState>) -> Response {
    let no_users = state.auth.users.current().users.is_empty();
    axum::response::Html(super::pages::login(None, no_users).into_string()).into_response()
}

pub async fn login(
    State(state): State<ApiState>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let from = source(peer.as_deref());
    let now = Instant::now();
    if let Some(wait) = state.auth.limiter.wait(from, now) {
        metrics::counter!("smart_cctv_login_failures_total", "reason" => "rate_limited").increment(1);
        tracing::warn!("login failed user={} from={from}: too many failures, refused", loggable(&form.username));
        let message = format!("Too many failed logins from this address. Try again in {} s.", wait.as_secs().max(1));
        return (
            StatusCode::TOO_MANY_REQUESTS,
            axum::response::Html(super::pages::login(Some(&message), false).into_string()),
        )
            .into_response();
    }
    // Each check costs argon2's 19 MiB and tens of milliseconds: two at a
    // time, so a flood of logins cannot take the box's memory.
    static CHECKING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let Ok(_slot) = CHECKING.acquire().await else {
        return super::error(StatusCode::SERVICE_UNAVAILABLE, "logins are closed while the service stops");
    };
    let users = state.auth.users.current();
    let (name, password) = (form.username.clone(), form.password);
    let verified = tokio::task::spawn_blocking(move || users.verify_password(&name, &password)).await.unwrap_or(false);
    if !verified {
        state.auth.limiter.failed(from, now);
        metrics::counter!("smart_cctv_login_failures_total", "reason" => "bad_credentials").increment(1);
        tracing::warn!("login failed user={} from={from}", loggable(&form.username));
        let page = super::pages::login(Some("Wrong user name or password."), false);
        return (StatusCode::UNAUTHORIZED, axum::response::Html(page.into_string())).into_response();
    }
    state.auth.limiter.succeeded(from);
    tracing::info!("login user={} from={from}", form.username);
    let id = state.auth.sessions.start(&form.username, now);
    // Secure when a TLS proxy in front says the page was fetched over https.
    let secure = headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{}", if secure { "; Secure" } else { "" });
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

pub async fn logout(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, COOKIE) {
        state.auth.sessions.end(id);
    }
    let mut response = Redirect::to("/login").into_response();
    let expired = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_tokens_and_log_names_are_read_strictly() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; smart_cctv_session=abc ; b=2"));
        assert_eq!(cookie(&headers, COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t0k"));
        assert_eq!(bearer(&headers), Some("t0k"));
        assert_eq!(loggable("eve\nlogin ok user=root"), "eve?login?ok?user=root");
        assert!(is_open("/healthz") && is_open("/login") && !is_open("/api/alerts") && !is_open("/"));
    }

    /// What a request gets, by the users that exist and how the listener is open.
    #[tokio::test]
    async fn pages_and_api_close_once_a_user_exists_or_the_listener_is_opened() {
        use tower::ServiceExt;
        let data = tempfile::tempdir().unwrap();
        let state = |allow_non_loopback: bool| {
            let mut config = crate::config::load(None).unwrap().config;
            config.http.allow_non_loopback = allow_non_loopback;
            let (_tx, rx) = tokio::sync::watch::channel(Arc::new(config));
            ApiState {
                data_dir: data.path().to_owned(),
                board: crate::health::HealthBoard::new(),
                metrics: metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle(),
                config: rx,
                store: crate::store::SharedStore::default(),
                auth: WebAuth::new(data.path()),
                latest: crate::web::latest::LatestFrames::default(),
                history: crate::resources::History::default(),
                cluster: None,
            }
        };
        let ask = |state: ApiState, path: &'static str, host: &'static str| async move {
            let request =
                axum::http::Request::get(path).header(header::HOST, host).body(axum::body::Body::empty()).unwrap();
            let response = crate::http::routes::router(state).oneshot(request).await.unwrap();
            let location = response.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned());
            (response.status(), location)
        };
        // No user, loopback: as before the page existed.
        assert_eq!(ask(state(false), "/api/status", "localhost").await.0, StatusCode::OK);
        assert_eq!(ask(state(false), "/", "127.0.0.1:9810").await.0, StatusCode::OK);
        // Opened beyond loopback: only scrapes, health and the way in, even with no user.
        let lan = "192.168.1.5:9810";
        assert_eq!(ask(state(true), "/api/status", lan).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(ask(state(true), "/", lan).await, (StatusCode::SEE_OTHER, Some("/login".to_owned())));
        assert_eq!(ask(state(true), "/metrics", lan).await.0, StatusCode::OK);
        assert_ne!(ask(state(true), "/healthz", lan).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(ask(state(true), "/login", lan).await.0, StatusCode::OK);
        // A user exists: loopback is closed too.
        let mut users = super::super::users::UsersFile::default();
        users.add("ann", "correct horse").unwrap();
        users.save(&super::super::users::UsersFile::path(data.path())).unwrap();
        assert_eq!(ask(state(false), "/api/status", "localhost").await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(ask(state(false), "/alerts", "localhost").await.1.as_deref(), Some("/login"));
    }
}
