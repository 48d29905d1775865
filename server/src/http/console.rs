//! The web console at `/admin`: an operator logs in with an API key sid and secret and
//! gets an HttpOnly, Secure, SameSite=Strict session cookie; the page then works
//! through `/admin/api/`. Its `v1/…` paths are the REST API itself (the request is
//! passed to the REST router with the session's key as HTTP Basic), so the console
//! decides nothing the REST API does not; `keys` and `metrics` are the two things REST
//! lacks. Every path under `/admin/api/`, unknown ones included, answers 401 without
//! the cookie, and a state-changing request must also carry the console's header
//! (`X-Syncline-Console`), which a cross-site form or script cannot send: with the
//! SameSite cookie, that is the CSRF defence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{any, get, post};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use syncline_core::auth::Login;
use syncline_core::command::{AdminCommand, Command, Outcome};
use syncline_core::engine::Caller;
use syncline_core::metrics::Edge;
use syncline_proto::{KeyInfo, WireError};
use tower::ServiceExt;

use super::context::{Http, MAX_BODY_BYTES};
use super::twilio::{ApiError, Resource};

/// The session cookie's name.
pub const COOKIE: &str = "syncline_console";
/// The header every state-changing console request carries.
pub const CSRF_HEADER: &str = "x-syncline-console";
/// How long a console login lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Console logins remembered at once; the oldest goes first past this.
const MAX_SESSIONS: usize = 1024;

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");

struct Console {
    http: Arc<Http>,
    /// The REST API, to which `/admin/api/v1/…` is handed.
    rest: Router,
    sessions: Mutex<HashMap<String, Operator>>,
}

/// A logged-in operator: the key the console acts with.
#[derive(Clone)]
struct Operator {
    sid: String,
    secret: String,
    until: Instant,
}

/// The console's routes; `rest` is the REST router its `v1/…` paths go to.
pub fn router(http: Arc<Http>, rest: Router) -> Router {
    let console = Arc::new(Console {
        http,
        rest,
        sessions: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/admin", get(page))
        .route("/admin/", get(page))
        .route("/admin/console.js", get(script))
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/api", any(api))
        .route("/admin/api/", any(api))
        .route("/admin/api/{*rest}", any(api))
        .with_state(console)
}

/// One of the console's own refusals, in the REST API's error body (Twilio's generic
/// code for the status: 20400, 20403, …).
fn error(status: StatusCode, message: &str) -> HttpResponse {
    ApiError::new(status, 20000 + u32::from(status.as_u16()), message).response()
}

/// What every console answer carries: never cached, never framed by another page.
fn hardened(mut r: HttpResponse) -> HttpResponse {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn page() -> HttpResponse {
    hardened(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response())
}

async fn script() -> HttpResponse {
    hardened(
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            SCRIPT,
        )
            .into_response(),
    )
}

/// The console's own request: it carries the header only the console's script sends.
fn from_console(headers: &HeaderMap) -> bool {
    headers.contains_key(CSRF_HEADER)
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn set_cookie(value: &str, max_age_s: u64) -> HeaderValue {
    let cookie = format!(
        "{COOKIE}={value}; Path=/admin; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age_s}"
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl Console {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Operator>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The operator whose cookie `headers` carry, if the login is still current.
    fn operator(&self, headers: &HeaderMap) -> Option<Operator> {
        let token = cookie_token(headers)?;
        let mut sessions = self.sessions();
        match sessions.get(&token) {
            Some(o) if o.until > Instant::now() => Some(o.clone()),
            Some(_) => {
                sessions.remove(&token);
                None
            }
            None => None,
        }
    }

    /// Checks `operator`'s key as a request would (it may have been revoked since the
    /// login): the caller the console's own commands run as.
    async fn authenticate(&self, operator: &Operator) -> Result<Caller, WireError> {
        let login = Login::ApiKey {
            sid: operator.sid.clone(),
            secret: operator.secret.clone(),
        };
        self.http.core.authenticate(login, None).await
    }

    /// Ends every login of `operator`'s key.
    fn forget(&self, operator: &Operator) {
        self.sessions().retain(|_, o| o.sid != operator.sid);
    }

    /// Runs an administration command as the operator's key, within its rate limit.
    async fn admin(&self, caller: &Caller, command: AdminCommand) -> Result<Outcome, WireError> {
        let core = &self.http.core;
        self.http
            .bucket(caller.principal.key_sid())
            .take(core.rate())?;
        core.execute(Edge::Http, "admin", caller, Command::Admin(command))
            .await
    }
}

/// A core error as the REST API renders it (the console speaks its error body too).
fn wire_error(e: &WireError) -> HttpResponse {
    ApiError::from_wire(e.clone(), Resource::Key).response()
}

#[derive(serde::Deserialize)]
struct Credentials {
    sid: String,
    secret: String,
}

/// `POST /admin/login` with `{"sid", "secret"}` (JSON): checks the key and sets the
/// session cookie.
async fn login(State(console): State<Arc<Console>>, request: Request) -> HttpResponse {
    if !from_console(request.headers()) {
        return hardened(error(StatusCode::FORBIDDEN, "not from the console"));
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => return hardened(error(StatusCode::PAYLOAD_TOO_LARGE, "body too large")),
    };
    let Ok(Credentials { sid, secret }) = serde_json::from_slice(&body) else {
        return hardened(error(
            StatusCode::BAD_REQUEST,
            "send {\"sid\": \"SK…\", \"secret\": \"…\"} as JSON",
        ));
    };
    let core = &console.http.core;
    if let Err(e) = console.http.bucket(&sid).take(core.rate()) {
        return hardened(wire_error(&e));
    }
    let login = Login::ApiKey {
        sid: sid.clone(),
        secret: secret.clone(),
    };
    if let Err(e) = core.authenticate(login, None).await {
        tracing::info!(key = %sid, "console login refused: {}", e.message);
        return hardened(error(
            StatusCode::UNAUTHORIZED,
            "unknown key or wrong secret",
        ));
    }
    let token = format!(
        "{}{}",
        syncline_core::auth::new_auth_token(),
        syncline_core::auth::new_auth_token()
    );
    {
        let mut sessions = console.sessions();
        let now = Instant::now();
        sessions.retain(|_, o| o.until > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, o)| o.until)
                .map(|(t, _)| t.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            token.clone(),
            Operator {
                sid: sid.clone(),
                secret,
                until: now + SESSION_TTL,
            },
        );
    }
    let installation = core.installation();
    let mut r = axum::Json(json!({
        "key_sid": sid,
        "account_sid": installation.account_sid,
        "default_service_sid": installation.default_service_sid,
    }))
    .into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&token, SESSION_TTL.as_secs()),
    );
    hardened(r)
}

/// `POST /admin/logout`: forgets the login and clears the cookie.
async fn logout(State(console): State<Arc<Console>>, headers: HeaderMap) -> HttpResponse {
    if !from_console(&headers) {
        return hardened(error(StatusCode::FORBIDDEN, "not from the console"));
    }
    if let Some(token) = cookie_token(&headers) {
        console.sessions().remove(&token);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", 0));
    hardened(r)
}

/// Everything under `/admin/api`: the cookie first, then the console's header for
/// changes, then the path.
async fn api(State(console): State<Arc<Console>>, request: Request) -> HttpResponse {
    let Some(operator) = console.operator(request.headers()) else {
        return hardened(error(StatusCode::UNAUTHORIZED, "log in at /admin first"));
    };
    // The key may have been revoked since the login: the login ends with it.
    let caller = match console.authenticate(&operator).await {
        Ok(caller) => caller,
        Err(e) if e.code == syncline_proto::ErrorCode::Unauthorized => {
            console.forget(&operator);
            return hardened(error(
                StatusCode::UNAUTHORIZED,
                "the console's key was revoked",
            ));
        }
        Err(e) => return hardened(wire_error(&e)),
    };
    let method = request.method().clone();
    if !matches!(method, Method::GET | Method::HEAD) && !from_console(request.headers()) {
        return hardened(error(StatusCode::FORBIDDEN, "not from the console"));
    }
    let path = request.uri().path().to_owned();
    let rest = path
        .strip_prefix("/admin/api")
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    let answer = match (method.clone(), rest.as_str()) {
        (Method::GET, "keys") => keys(&console, &caller).await,
        (Method::POST, "keys") => create_key(&console, &caller, request).await,
        (Method::DELETE, r) if r.starts_with("keys/") => {
            revoke_key(&console, &caller, &r["keys/".len()..]).await
        }
        (Method::GET, "metrics") => metrics(&console),
        (_, r) if r.starts_with("v1/") => return to_rest(&console, &operator, request).await,
        _ => error(StatusCode::NOT_FOUND, "no such console path"),
    };
    hardened(answer)
}

fn key_json(k: &KeyInfo) -> Value {
    json!({
        "sid": k.sid,
        "friendly_name": k.friendly_name,
        "secret": k.secret,
        "date_created": super::twilio::date(k.date_created),
        "revoked": k.revoked,
    })
}

async fn keys(console: &Console, caller: &Caller) -> HttpResponse {
    match console.admin(caller, AdminCommand::KeyList).await {
        Ok(Outcome::Keys(keys)) => axum::Json(json!({
            "keys": keys.iter().map(key_json).collect::<Vec<_>>(),
            "console_key": caller.principal.key_sid(),
        }))
        .into_response(),
        Ok(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "unexpected answer"),
        Err(e) => wire_error(&e),
    }
}

async fn create_key(console: &Console, caller: &Caller, request: Request) -> HttpResponse {
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
    };
    let friendly_name = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["friendly_name"].as_str().map(str::to_owned))
        .filter(|n| !n.is_empty());
    match console
        .admin(caller, AdminCommand::KeyCreate { friendly_name })
        .await
    {
        Ok(Outcome::Key(key)) => (StatusCode::CREATED, axum::Json(key_json(&key))).into_response(),
        Ok(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "unexpected answer"),
        Err(e) => wire_error(&e),
    }
}

async fn revoke_key(console: &Console, caller: &Caller, sid: &str) -> HttpResponse {
    let sid = percent_encoding::percent_decode_str(sid)
        .decode_utf8_lossy()
        .into_owned();
    match console.admin(caller, AdminCommand::KeyRevoke { sid }).await {
        Ok(Outcome::Key(key)) => axum::Json(key_json(&key)).into_response(),
        Ok(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "unexpected answer"),
        Err(e) => wire_error(&e),
    }
}

/// The main figures at a glance, as JSON (`/metrics` has them all, as Prometheus text).
fn metrics(console: &Console) -> HttpResponse {
    let s = console.http.core.metrics();
    let mut requests: HashMap<&str, u64> = HashMap::new();
    let mut errors = 0;
    for r in &s.requests {
        *requests.entry(r.edge).or_default() += r.count;
        if r.outcome != "ok" {
            errors += r.count;
        }
    }
    axum::Json(json!({
        "connections": s.gauges.connections,
        "subscriptions": s.gauges.subscriptions,
        "queued_events": s.gauges.queued_events,
        "present": s.gauges.present.0,
        "departing": s.gauges.present.1,
        "requests_by_edge": requests,
        "request_errors": errors,
        "commit_batches": s.commit_batches,
        "commit_writes": s.commit_writes,
        "resyncs": s.resyncs,
    }))
    .into_response()
}

/// Hands `/admin/api/v1/…` to the REST API as `/v1/…`, authenticated with the
/// operator's key instead of the cookie.
async fn to_rest(console: &Console, operator: &Operator, request: Request) -> HttpResponse {
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .strip_prefix("/admin/api")
        .unwrap_or("/")
        .to_owned();
    parts.uri = match path_and_query.parse() {
        Ok(u) => u,
        Err(_) => return hardened(error(StatusCode::BAD_REQUEST, "bad path")),
    };
    parts.headers.remove(header::COOKIE);
    parts.headers.remove(CSRF_HEADER);
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", operator.sid, operator.secret));
    match HeaderValue::from_str(&format!("Basic {basic}")) {
        Ok(v) => parts.headers.insert(header::AUTHORIZATION, v),
        Err(_) => return hardened(error(StatusCode::INTERNAL_SERVER_ERROR, "bad key")),
    };
    let request = Request::from_parts(parts, Body::new(body));
    match console.rest.clone().oneshot(request).await {
        Ok(r) => hardened(r),
        Err(never) => match never {},
    }
}
