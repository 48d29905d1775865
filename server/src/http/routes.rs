//! The routes of Twilio Sync v1 (`/v1/Services/...`): each turns its path, parameters
//! and headers into a `Command`, runs it through the engine for the caller its
//! `Authorization` names, and renders the answer as Twilio does.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{any, get};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use syncline_proto::{
    ItemKey, ObjectKind, Order, Rights, ServiceFlags, ServiceFlagsPatch, WireError, WrittenValue,
};

use super::context::{Http, BODY_TIMEOUT, DISCARD_BODY_BYTES, MAX_BODY_BYTES};
use super::form::Params;
use super::openapi;
use super::twilio::{self, ApiError, Resource, Urls};
use syncline_core::auth::Login;
use syncline_core::command::{
    AdminCommand, Command, Identity, Json, Key, Outcome, PageSize, ReadCommand, SetMode, Ttl,
    WriteCommand,
};
use syncline_core::engine;
use syncline_core::metrics::Edge;
use syncline_proto::limits::DEFAULT_LIST_WINDOW;

pub fn router(http: Arc<Http>) -> Router {
    let rest = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route(
            "/metrics",
            get(|State(http): State<Arc<Http>>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    super::metrics::render(&http.core.metrics()),
                )
            }),
        )
        .route("/openapi.json", get(openapi_json))
        .route("/v1/Nodes", any(dispatch))
        .route("/v1/Services", any(dispatch))
        .route("/v1/Services/{service}", any(dispatch))
        .route("/v1/Services/{service}/{kinds}", any(dispatch))
        .route("/v1/Services/{service}/{kinds}/{object}", any(dispatch))
        .route(
            "/v1/Services/{service}/{kinds}/{object}/{sub}",
            any(dispatch),
        )
        .route(
            "/v1/Services/{service}/{kinds}/{object}/{sub}/{child}",
            any(dispatch),
        )
        .fallback(|| async { not_found().response() })
        .layer(axum::middleware::from_fn(gate))
        .layer(axum::middleware::from_fn_with_state(
            http.clone(),
            count_response,
        ))
        .with_state(http.clone());
    // After the REST layers, so neither the gate nor the OpenAPI document knows them:
    // the WebSocket upgrade (what it carries is counted by the core under `websocket`)
    // and the web console, which hands its `v1/…` requests to the REST router.
    rest.clone()
        .route(crate::ws::PATH, get(websocket).with_state(http.clone()))
        .merge(super::console::router(http, rest))
}

/// The upgrade to the WebSocket edge; a plain GET gets a JSON error.
async fn websocket(
    State(http): State<Arc<Http>>,
    upgrade: Result<
        axum::extract::ws::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> HttpResponse {
    match upgrade {
        Ok(upgrade) => crate::ws::upgrade(
            crate::ws::WsEdge {
                core: http.core.clone(),
                shutdown: http.shutdown.clone(),
                idle_timeout: http.idle_timeout,
            },
            upgrade,
        ),
        Err(rejection) => {
            let status = rejection.status();
            let body = serde_json::json!({
                "code": "InvalidArgument",
                "message": format!("{} (this is the WebSocket endpoint)", rejection.body_text()),
                "status": status.as_u16(),
            });
            (status, axum::Json(body)).into_response()
        }
    }
}

/// Counts every response by its route pattern (not its path, which names objects) and
/// status.
async fn count_response(
    State(http): State<Arc<Http>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> HttpResponse {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let response = next.run(request).await;
    http.core
        .count_http_response(&route, response.status().as_u16());
    response
}

/// Lets through only the (path, method) pairs of the route table: the routes above
/// match generic segments (`{kinds}`, `{sub}`), the table says which are real, so what
/// is served is what `/openapi.json` describes.
async fn gate(request: axum::extract::Request, next: axum::middleware::Next) -> HttpResponse {
    let refusal = match openapi::lookup(request.uri().path()) {
        None => not_found().response(),
        Some(spec) if !spec.allows(request.method()) => {
            let mut r = method_not_allowed(request.method()).response();
            if let Ok(v) = spec.allow().parse() {
                r.headers_mut().insert(header::ALLOW, v);
            }
            r
        }
        // The routes' `Path` extractors would refuse this with a plain-text 400; the
        // document promises Twilio's error body.
        Some(_)
            if percent_encoding::percent_decode_str(request.uri().path())
                .decode_utf8()
                .is_err() =>
        {
            ApiError::parameter("path", "is not UTF-8 once percent-decoded").response()
        }
        // Routes that take no body (health, metrics, the document) read none: drop it
        // here, for the same reason as below.
        Some(spec) if !spec.takes_body(request.method()) => {
            let (parts, body) = request.into_parts();
            drain(body).await;
            return next
                .run(axum::extract::Request::from_parts(parts, Body::empty()))
                .await;
        }
        Some(_) => return next.run(request).await,
    };
    drain(request.into_body()).await;
    refusal
}

/// Reads and drops a body that will not be used. An answer sent before the body is
/// read makes hyper close the connection under the client, which then sees a reset
/// (or a TLS EOF) instead of the answer; this is the same bounded read as `read_body`.
async fn drain(body: Body) {
    let _ = tokio::time::timeout(BODY_TIMEOUT, read_body(body)).await;
}

/// The OpenAPI 3.1 document of the route table; public, like the health checks.
async fn openapi_json(State(http): State<Arc<Http>>) -> HttpResponse {
    let limits = http.core.limits();
    axum::Json(openapi::cached(limits.max_ttl_s, limits.max_page)).into_response()
}

/// Ready when the store answers.
async fn ready(State(http): State<Arc<Http>>) -> HttpResponse {
    if http.core.ready().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "storage not ready").into_response()
    }
}

/// `GET /v1/Nodes`: the live nodes (any credential of the installation).
async fn nodes_answer(ctx: &Ctx) -> Answer {
    match ctx.run(None, Command::Nodes, Resource::Service).await? {
        Outcome::Nodes(nodes) => Ok((StatusCode::OK, json!({ "nodes": nodes }))),
        other => Err(unexpected(other)),
    }
}

type Answer = Result<(StatusCode, Value), ApiError>;

fn respond(answer: Answer) -> HttpResponse {
    match answer {
        Ok((StatusCode::NO_CONTENT, _)) => StatusCode::NO_CONTENT.into_response(),
        Ok((status, body)) => (status, axum::Json(body)).into_response(),
        Err(e) => e.response(),
    }
}

/// One request as the routes see it: who asks, its parameters (query and form body),
/// and where its URLs point.
struct Ctx {
    http: Arc<Http>,
    method: Method,
    login: Option<Login>,
    /// Rate-limit key: the API key sid, or the token.
    who: String,
    params: Params,
    if_match: Option<u64>,
    base: String,
    /// This request's path, for page URLs.
    path: String,
    /// Who asks, authenticated and charged to the rate limit once per request, however
    /// many commands the request runs (a listing also reads its object, say).
    caller: tokio::sync::OnceCell<engine::Caller>,
}

impl Ctx {
    async fn new(
        http: Arc<Http>,
        method: Method,
        headers: &HeaderMap,
        path: String,
        query: Option<String>,
        body: Body,
    ) -> Result<Ctx, ApiError> {
        // The body first, whole: refusing a request before its body is read would
        // close the connection under the client (see `drain`).
        let body = tokio::time::timeout(BODY_TIMEOUT, read_body(body))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    20408,
                    "the request body did not arrive in time",
                )
            })??;
        let (login, who) = login(headers)?;
        let if_match = match headers.get(header::IF_MATCH) {
            None => None,
            Some(v) => {
                let text = v.to_str().unwrap_or_default().trim().trim_matches('"');
                Some(text.parse().map_err(|_| {
                    ApiError::parameter("If-Match", "expected a revision (an integer)")
                })?)
            }
        };
        // Query first, then the form body: a name in both takes the body's value.
        let params = Params::parse(&[query.as_deref().unwrap_or_default().as_bytes(), &body]);
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()));
        let base = host.map_or_else(|| http.default_base.clone(), |h| format!("https://{h}"));
        Ok(Ctx {
            http,
            method,
            login,
            who,
            params,
            if_match,
            base,
            path,
            caller: tokio::sync::OnceCell::new(),
        })
    }

    /// The page parameters: `PageSize` (default 50, at most the server's page limit),
    /// `Page` (echoed), `PageToken` (where to continue).
    fn paging(&self) -> Result<(u32, u64, Option<String>), ApiError> {
        let max = self.http.core.limits().max_page;
        let size = match self.params.integer("PageSize")? {
            None => 50,
            Some(0) => return Err(ApiError::parameter("PageSize", "must be at least 1")),
            Some(n) => n.min(u64::from(max)) as u32,
        };
        let page = self.params.integer("Page")?.unwrap_or(0);
        let token = self
            .params
            .string("PageToken")
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        Ok((size, page, token))
    }

    fn page(
        &self,
        key: &str,
        records: Vec<Value>,
        size: u32,
        page: u64,
        next: Option<String>,
    ) -> Value {
        let url = format!("{}{}", self.base, self.path);
        twilio::page(key, records, &url, &self.params.pairs, page, size, next)
    }

    /// Runs `command` for this request's caller in `service` (sid, unique name or
    /// `default`; `None`: the default service, for administration).
    async fn run(
        &self,
        service: Option<&str>,
        command: Command,
        resource: Resource,
    ) -> Result<Outcome, ApiError> {
        let core = &self.http.core;
        let kind = command.kind();
        let result = match self.caller(service).await {
            Ok(caller) => core.execute(Edge::Http, kind, &caller, command).await,
            Err(e) => {
                core.count_refused(Edge::Http, kind, &e);
                Err(e)
            }
        };
        result.map_err(|e| ApiError::from_wire(e, resource))
    }

    /// This request's caller, authenticated and within its rate limit, acting in
    /// `service` (see `run`; every command of one request names the same service).
    async fn caller(&self, service: Option<&str>) -> Result<engine::Caller, WireError> {
        self.caller
            .get_or_try_init(|| self.authenticate(service))
            .await
            .cloned()
    }

    async fn authenticate(&self, service: Option<&str>) -> Result<engine::Caller, WireError> {
        let core = &self.http.core;
        let Some(login) = self.login.clone() else {
            return Err(WireError::new(
                syncline_proto::ErrorCode::Unauthorized,
                "Authentication required: HTTP Basic with an API key sid and secret, or Bearer with an access token",
            ));
        };
        self.http.bucket(&self.who).take(core.rate())?;
        core.authenticate(login, self.service_named(service)).await
    }

    /// A service as the path names it: `default` is the installation's default service.
    fn service_named(&self, service: Option<&str>) -> Option<String> {
        service.map(|s| {
            if s == "default" {
                self.http.core.installation().default_service_sid.clone()
            } else {
                s.to_owned()
            }
        })
    }

    /// The service's sid (as answers name it, whatever the path said) and the account.
    async fn urls(&self, service: &str) -> Result<(String, String), ApiError> {
        let caller = self
            .caller(Some(service))
            .await
            .map_err(|e| ApiError::from_wire(e, Resource::Service))?;
        let account = self.http.core.installation().account_sid.clone();
        Ok((caller.service.sid, account))
    }
}

/// The body, up to `MAX_BODY_BYTES`. A larger one is refused with 413 without being
/// kept: what is over the limit is read and dropped (up to `DISCARD_BODY_BYTES`), so the
/// client can finish sending and read the answer.
async fn read_body(mut body: Body) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            54006,
            format!("the request body is over the limit of {MAX_BODY_BYTES} bytes"),
        )
    };
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(ApiError::parameter("body", "could not be read"));
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > DISCARD_BODY_BYTES {
            return Err(too_large());
        }
        if seen <= MAX_BODY_BYTES {
            kept.extend_from_slice(&data);
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(kept)
}

/// `Authorization: Basic` (API key sid and secret: the backend) or `Bearer` (an access
/// token: its identity); `None` when there is none.
fn login(headers: &HeaderMap) -> Result<(Option<Login>, String), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok((None, String::new()));
    };
    let bad = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            20003,
            "Authorization must be Basic (API key sid:secret) or Bearer (access token)",
        )
    };
    let value = value.to_str().map_err(|_| bad())?;
    if let Some(b64) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (sid, secret) = decoded.split_once(':').ok_or_else(bad)?;
        Ok((
            Some(Login::ApiKey {
                sid: sid.to_owned(),
                secret: secret.to_owned(),
            }),
            sid.to_owned(),
        ))
    } else if let Some(token) = value.strip_prefix("Bearer ") {
        let token = token.trim().to_owned();
        Ok((Some(Login::Token(token.clone())), token))
    } else {
        Err(bad())
    }
}

fn kind_of(segment: &str) -> Option<(ObjectKind, &'static str)> {
    match segment {
        "Documents" => Some((ObjectKind::Document, "documents")),
        "Lists" => Some((ObjectKind::List, "lists")),
        "Maps" => Some((ObjectKind::Map, "maps")),
        "Streams" => Some((ObjectKind::Stream, "streams")),
        _ => None,
    }
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        20404,
        "The requested resource was not found",
    )
}

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        20004,
        format!("Method {method} not allowed here"),
    )
}

fn unexpected(r: Outcome) -> ApiError {
    tracing::error!(?r, "the engine answered a REST request unexpectedly");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        20500,
        "unexpected answer",
    )
}

fn json_param(ctx: &Ctx, name: &str, max: usize) -> Result<Option<Json>, ApiError> {
    ctx.params
        .string(name)
        .map(|text| {
            Json::parse(text.to_owned(), max).map_err(|e| {
                let mut err = ApiError::from_wire(e, Resource::Message);
                err.message = format!("{name}: {}", err.message);
                err
            })
        })
        .transpose()
}

/// A checked value, or the refusal as Twilio's error body for `resource`.
fn checked<T>(value: Result<T, WireError>, resource: Resource) -> Result<T, ApiError> {
    value.map_err(|e| ApiError::from_wire(e, resource))
}

fn ttl_param(ctx: &Ctx, names: &[&str]) -> Result<Option<Ttl>, ApiError> {
    Ttl::parse_opt(ctx.params.integer_of(names)?, ctx.http.core.limits())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, 54011, e.message))
}

fn nothing_to_update() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        54010,
        "No parameters specified: expected at least one of the optional parameters",
    )
}

fn flags_patch(p: &Params) -> Result<ServiceFlagsPatch, ApiError> {
    Ok(ServiceFlagsPatch {
        acl_enabled: p.boolean("AclEnabled")?,
        webhook_url: p
            .string("WebhookUrl")
            .map(|u| (!u.is_empty()).then(|| u.to_owned())),
        webhooks_from_backend: p.boolean("WebhooksFromRestEnabled")?,
        reachability_webhooks_enabled: p.boolean("ReachabilityWebhooksEnabled")?,
        reachability_debouncing_enabled: p.boolean("ReachabilityDebouncingEnabled")?,
        reachability_debouncing_window_ms: p
            .integer("ReachabilityDebouncingWindow")?
            .map(|w| u32::try_from(w).unwrap_or(u32::MAX)),
        token_create: p
            .string("TokenCreate")
            .map(str::parse)
            .transpose()
            .map_err(|e: String| ApiError::parameter("TokenCreate", e))?,
        friendly_name: p.string("FriendlyName").map(str::to_owned),
    })
}

async fn services_answer(ctx: &Ctx) -> Answer {
    let account = ctx.http.core.installation().account_sid.clone();
    let resource = Resource::Service;
    match ctx.method {
        Method::GET => {
            let (size, page, token) = ctx.paging()?;
            let all = match ctx
                .run(None, Command::Admin(AdminCommand::ServiceList), resource)
                .await?
            {
                Outcome::Services(all) => all,
                other => return Err(unexpected(other)),
            };
            let (shown, next) = page_of(&all, |s| &s.sid, token.as_deref(), size);
            let records = shown
                .iter()
                .map(|s| twilio::service(&ctx.base, &account, s))
                .collect();
            Ok((
                StatusCode::OK,
                ctx.page("services", records, size, page, next),
            ))
        }
        Method::POST => {
            let p = flags_patch(&ctx.params)?;
            let flags = ServiceFlags {
                acl_enabled: p.acl_enabled.unwrap_or(false),
                webhook_url: p.webhook_url.flatten(),
                webhooks_from_backend: p.webhooks_from_backend.unwrap_or(false),
                reachability_webhooks_enabled: p.reachability_webhooks_enabled.unwrap_or(false),
                reachability_debouncing_enabled: p.reachability_debouncing_enabled.unwrap_or(false),
                reachability_debouncing_window_ms: p.reachability_debouncing_window_ms,
                token_create: p.token_create.unwrap_or_default(),
                friendly_name: p.friendly_name,
            };
            // `UniqueName` is Syncline's own: Twilio's REST cannot set it.
            let unique_name = ctx.params.string("UniqueName").map(str::to_owned);
            let command = Command::Admin(AdminCommand::ServiceCreate { unique_name, flags });
            match ctx.run(None, command, resource).await? {
                Outcome::Service(s) => Ok((
                    StatusCode::CREATED,
                    twilio::service(&ctx.base, &account, &s),
                )),
                other => Err(unexpected(other)),
            }
        }
        _ => Err(method_not_allowed(&ctx.method)),
    }
}

async fn service_answer(ctx: &Ctx, service: &str) -> Answer {
    let service = if service == "default" {
        ctx.http.core.installation().default_service_sid.clone()
    } else {
        service.to_owned()
    };
    let account = ctx.http.core.installation().account_sid.clone();
    let command = match ctx.method {
        Method::GET => AdminCommand::ServiceGet { service },
        Method::POST => AdminCommand::ServiceUpdate {
            service,
            flags: flags_patch(&ctx.params)?,
        },
        Method::DELETE => AdminCommand::ServiceDelete { service },
        _ => return Err(method_not_allowed(&ctx.method)),
    };
    match ctx
        .run(None, Command::Admin(command), Resource::Service)
        .await?
    {
        Outcome::Service(s) => Ok((StatusCode::OK, twilio::service(&ctx.base, &account, &s))),
        Outcome::Done => Ok((StatusCode::NO_CONTENT, Value::Null)),
        other => Err(unexpected(other)),
    }
}

async fn collection_answer(ctx: &Ctx, service: &str, kind: ObjectKind, key: &str) -> Answer {
    let resource = Resource::Object(kind);
    match ctx.method {
        Method::GET => {
            let (size, page, token) = ctx.paging()?;
            let command = Command::Read(ReadCommand::Objects {
                kind,
                after: token,
                limit: checked(PageSize::parse(size, ctx.http.core.limits()), resource)?,
            });
            let answer = ctx.run(Some(service), command, resource).await?;
            let (sid, account) = ctx.urls(service).await?;
            let u = urls(ctx, &sid, &account);
            let (records, next) = match answer {
                Outcome::Documents { documents, next } => (
                    documents
                        .iter()
                        .map(|d| twilio::document(&u, d, true))
                        .collect(),
                    next,
                ),
                Outcome::Objects { objects, next } => (
                    objects.iter().map(|o| twilio::object(&u, o)).collect(),
                    next,
                ),
                other => return Err(unexpected(other)),
            };
            Ok((StatusCode::OK, ctx.page(key, records, size, page, next)))
        }
        Method::POST => {
            let max = ctx.http.core.limits().max_data_bytes;
            let (data, ttl) = match kind {
                ObjectKind::Document => (
                    Some(
                        json_param(ctx, "Data", max)?.unwrap_or(
                            Json::parse("{}".into(), max)
                                .map_err(|e| ApiError::from_wire(e, resource))?,
                        ),
                    ),
                    ttl_param(ctx, &["Ttl"])?,
                ),
                ObjectKind::Stream => (None, ttl_param(ctx, &["Ttl"])?),
                _ => (None, ttl_param(ctx, &["CollectionTtl", "Ttl"])?),
            };
            let text = data.as_ref().map(|d| d.as_str().to_owned());
            let command = Command::Write(WriteCommand::Create {
                kind,
                unique_name: ctx.params.string("UniqueName").map(str::to_owned),
                ttl,
                data,
            });
            let info = match ctx.run(Some(service), command, resource).await? {
                Outcome::Object(info) => info,
                other => return Err(unexpected(other)),
            };
            let (sid, account) = ctx.urls(service).await?;
            let u = urls(ctx, &sid, &account);
            let body = match text {
                Some(data) => twilio::document(&u, &document_of(info, data), true),
                None => twilio::object(&u, &info),
            };
            Ok((StatusCode::CREATED, body))
        }
        _ => Err(method_not_allowed(&ctx.method)),
    }
}

fn urls<'a>(ctx: &'a Ctx, sid: &'a str, account: &'a str) -> Urls<'a> {
    Urls {
        base: &ctx.base,
        account_sid: account,
        service_sid: sid,
    }
}

fn document_of(o: syncline_proto::ObjectInfo, data: String) -> syncline_proto::DocumentInfo {
    syncline_proto::DocumentInfo {
        sid: o.sid,
        unique_name: o.unique_name,
        revision: o.revision,
        data,
        created_by: o.created_by,
        date_created: o.date_created,
        date_updated: o.date_updated,
        date_expires: o.date_expires,
    }
}

async fn instance_answer(ctx: &Ctx, service: &str, kind: ObjectKind, object: &str) -> Answer {
    let resource = Resource::Object(kind);
    let object = object.to_owned();
    let max = ctx.http.core.limits().max_data_bytes;
    let command = match (&ctx.method, kind) {
        (&Method::GET, ObjectKind::Document) => {
            Command::Read(ReadCommand::Document { document: object })
        }
        (&Method::GET, _) => Command::Read(ReadCommand::Object { object }),
        (&Method::POST, ObjectKind::Document) => {
            let ttl = ttl_param(ctx, &["Ttl"])?;
            match json_param(ctx, "Data", max)? {
                Some(data) => Command::Write(WriteCommand::DocSet {
                    document: object,
                    data,
                    if_match: ctx.if_match,
                    ttl,
                    mode: SetMode::Replace,
                }),
                None => Command::Write(WriteCommand::SetTtl {
                    kind,
                    object,
                    key: None,
                    ttl: ttl.ok_or_else(nothing_to_update)?,
                }),
            }
        }
        (&Method::POST, _) => {
            let names: &[&str] = if kind == ObjectKind::Stream {
                &["Ttl"]
            } else {
                &["CollectionTtl", "Ttl"]
            };
            Command::Write(WriteCommand::SetTtl {
                kind,
                object,
                key: None,
                ttl: ttl_param(ctx, names)?.ok_or_else(nothing_to_update)?,
            })
        }
        (&Method::DELETE, _) => Command::Write(WriteCommand::Delete {
            kind: Some(kind),
            object,
            if_match: ctx.if_match,
        }),
        _ => return Err(method_not_allowed(&ctx.method)),
    };
    let answer = ctx.run(Some(service), command, resource).await?;
    let (sid, account) = ctx.urls(service).await?;
    let u = urls(ctx, &sid, &account);
    let body = match answer {
        Outcome::Deleted { .. } => return Ok((StatusCode::NO_CONTENT, Value::Null)),
        Outcome::Document(d) => twilio::document(&u, &d, true),
        Outcome::Object(o) if o.kind != kind => {
            return Err(ApiError::from_wire(
                syncline_proto::WireError::not_found(kind.name()),
                resource,
            ))
        }
        Outcome::Object(o) if kind == ObjectKind::Document => {
            // A TTL change answers the object; a document is shown with its data.
            let read = Command::Read(ReadCommand::Document {
                document: o.sid.clone(),
            });
            match ctx.run(Some(service), read, resource).await {
                Ok(Outcome::Document(d)) => twilio::document(&u, &d, true),
                _ => twilio::document(&u, &document_of(o, String::new()), false),
            }
        }
        Outcome::Object(o) => twilio::object(&u, &o),
        Outcome::Written(w) => match w.value {
            Some(WrittenValue::Document(d)) => twilio::document(&u, &d, true),
            _ => json!({
                "sid": w.object_sid,
                "account_sid": account,
                "service_sid": sid,
                "url": u.object(kind, &w.object_sid),
                "revision": w.revision.to_string(),
                "created_by": w.object_created_by,
            }),
        },
        other => return Err(unexpected(other)),
    };
    Ok((StatusCode::OK, body))
}

/// Every `/v1/Services...` route: the path's segments pick the resource, the method
/// the operation.
async fn dispatch(
    State(http): State<Arc<Http>>,
    Path(segments): Path<Vec<(String, String)>>,
    method: Method,
    headers: HeaderMap,
    uri: axum::http::Uri,
    RawQuery(query): RawQuery,
    body: Body,
) -> HttpResponse {
    let path = uri.path().to_owned();
    let ctx = match Ctx::new(http, method, &headers, path, query, body).await {
        Ok(c) => c,
        Err(e) => return e.response(),
    };
    let segment = |name: &str| {
        segments
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if ctx.path == "/v1/Nodes" {
        return respond(nodes_answer(&ctx).await);
    }
    let Some(service) = segment("service") else {
        return respond(services_answer(&ctx).await);
    };
    let Some(kinds) = segment("kinds") else {
        return respond(service_answer(&ctx, service).await);
    };
    let Some((kind, key)) = kind_of(kinds) else {
        return not_found().response();
    };
    let Some(object) = segment("object") else {
        return respond(collection_answer(&ctx, service, kind, key).await);
    };
    let Some(sub) = segment("sub") else {
        return respond(instance_answer(&ctx, service, kind, object).await);
    };
    let answer = match (kind, sub, segment("child")) {
        (ObjectKind::List | ObjectKind::Map, "Items", None) => {
            items_answer(&ctx, service, kind, object).await
        }
        (ObjectKind::List | ObjectKind::Map, "Items", Some(child)) => {
            item_answer(&ctx, service, kind, object, child).await
        }
        (ObjectKind::Stream, "Messages", None) => message_answer(&ctx, service, object).await,
        (ObjectKind::Document | ObjectKind::List | ObjectKind::Map, "Events", None) => {
            return match watch(&ctx, service, kind, object, &headers).await {
                Ok(r) => r,
                Err(e) => e.response(),
            }
        }
        (_, "Permissions", child) => permission_answer(&ctx, service, kind, object, child).await,
        _ => Err(not_found()),
    };
    respond(answer)
}

/// `GET .../{Documents|Lists|Maps}/{O}/Events?since=REV`: the object's events as
/// server-sent events (see `events.rs`). `Last-Event-ID` resumes like `since`.
async fn watch(
    ctx: &Ctx,
    service: &str,
    kind: ObjectKind,
    object: &str,
    headers: &HeaderMap,
) -> Result<HttpResponse, ApiError> {
    if ctx.method != Method::GET {
        return Err(method_not_allowed(&ctx.method));
    }
    let resource = Resource::Object(kind);
    let since = match ctx.params.integer("since")? {
        Some(s) => Some(s),
        None => match headers.get("last-event-id").map(|v| v.to_str()) {
            None => None,
            Some(v) => Some(
                v.unwrap_or_default()
                    .trim()
                    .parse()
                    .map_err(|_| ApiError::parameter("Last-Event-ID", "expected a revision"))?,
            ),
        },
    };
    let core = &ctx.http.core;
    let Some(login) = ctx.login.clone() else {
        return Err(ApiError::from_wire(
            WireError::new(
                syncline_proto::ErrorCode::Unauthorized,
                "Authentication required: HTTP Basic with an API key sid and secret, or Bearer with an access token",
            ),
            resource,
        ));
    };
    ctx.http
        .bucket(&ctx.who)
        .take(core.rate())
        .map_err(|e| ApiError::from_wire(e, resource))?;
    // A watch is a session like a QUIC connection's: the core ends it when its key is
    // revoked, its token expires or its service is deleted.
    let (end_now, ended) = tokio::sync::watch::channel(None);
    let session = core.open_session(
        Edge::Http,
        Arc::new(move |ending| {
            end_now.send_replace(Some(ending));
        }),
    );
    let refused = |e| ApiError::from_wire(e, resource);
    session
        .hello(login, ctx.service_named(Some(service)))
        .await
        .map_err(refused)?;
    let read = Command::Read(ReadCommand::Object {
        object: object.to_owned(),
    });
    let info = match session.execute("read", read).await.map_err(refused)? {
        Outcome::Object(o) if o.kind == kind => o,
        Outcome::Object(_) => return Err(refused(WireError::not_found(kind.name()))),
        other => return Err(unexpected(other)),
    };
    let subscribe = Command::Subscribe {
        sub_id: 1,
        object: info.sid,
        since,
        window: PageSize::clamped(DEFAULT_LIST_WINDOW, core.limits()),
    };
    session
        .execute("subscribe", subscribe)
        .await
        .map_err(refused)?;
    Ok(super::events::stream(
        session,
        ended,
        ctx.http.shutdown.clone(),
    ))
}

/// An item key from the path or a parameter (`param`, named in the error).
/// One page of a list the engine answers whole and sorted by `key` (services,
/// permissions): what comes after `token`, and the token of the next page, if any.
fn page_of<'a, T>(
    all: &'a [T],
    key: impl Fn(&T) -> &str,
    token: Option<&str>,
    size: u32,
) -> (&'a [T], Option<String>) {
    let start = token.map_or(0, |t| all.partition_point(|x| key(x) <= t));
    let end = start.saturating_add(size as usize).min(all.len());
    let shown = &all[start..end];
    let next = (end < all.len())
        .then(|| shown.last().map(|x| key(x).to_owned()))
        .flatten();
    (shown, next)
}

fn item_key(kind: ObjectKind, text: &str, param: &str) -> Result<ItemKey, ApiError> {
    match kind {
        ObjectKind::List => text.parse().map(ItemKey::Index).map_err(|_| {
            ApiError::parameter(param, format!("expected a list index, got {text:?}"))
        }),
        _ => Ok(ItemKey::Key(text.to_owned())),
    }
}

/// An item write's answer: the item, or (for a writer without `read`) where it is.
fn written_item(u: &Urls, kind: ObjectKind, answer: Outcome) -> Result<Value, ApiError> {
    match answer {
        Outcome::Written(w) => Ok(match (w.value, &w.key) {
            (Some(WrittenValue::Item(i)), _) => twilio::item(u, kind, &w.object_sid, &i),
            (_, Some(key)) => twilio::item_without_data(u, kind, &w.object_sid, key, w.revision),
            _ => return Err(unexpected(Outcome::Done)),
        }),
        Outcome::Item(i) => Err(unexpected(Outcome::Item(i))),
        other => Err(unexpected(other)),
    }
}

/// Applies `CollectionTtl` to the item's object after an item write (Twilio's
/// parameter; not atomic with the write).
async fn collection_ttl(
    ctx: &Ctx,
    service: &str,
    kind: ObjectKind,
    object: &str,
) -> Result<(), ApiError> {
    if let Some(ttl) = ttl_param(ctx, &["CollectionTtl"])? {
        let command = Command::Write(WriteCommand::SetTtl {
            kind,
            object: object.to_owned(),
            key: None,
            ttl,
        });
        ctx.run(Some(service), command, Resource::Object(kind))
            .await?;
    }
    Ok(())
}

async fn items_answer(ctx: &Ctx, service: &str, kind: ObjectKind, object: &str) -> Answer {
    let resource = Resource::Item(kind);
    let max = ctx.http.core.limits().max_data_bytes;
    match ctx.method {
        Method::GET => {
            let (size, page, token) = ctx.paging()?;
            let order = match ctx.params.string("Order") {
                None | Some("asc") => Order::Asc,
                Some("desc") => Order::Desc,
                Some(other) => {
                    return Err(ApiError::parameter(
                        "Order",
                        format!("asc or desc, not {other:?}"),
                    ))
                }
            };
            let exclusive = match ctx.params.string("Bounds") {
                None | Some("inclusive") => false,
                Some("exclusive") => true,
                Some(other) => {
                    return Err(ApiError::parameter(
                        "Bounds",
                        format!("inclusive or exclusive, not {other:?}"),
                    ))
                }
            };
            // A page token is where the next page starts (inclusive); else `From`.
            let (from, skip_first) = match (&token, ctx.params.string("From")) {
                (Some(t), _) => (Some(item_key(kind, t, "PageToken")?), false),
                (None, Some(f)) => (Some(item_key(kind, f, "From")?), exclusive),
                (None, None) => (None, false),
            };
            let limit = (size + u32::from(skip_first)).min(ctx.http.core.limits().max_page);
            let command = Command::Read(ReadCommand::Items {
                kind,
                object: object.to_owned(),
                from: from
                    .clone()
                    .map(|k| Key::parse(kind, k, ctx.http.core.limits()))
                    .transpose()
                    .map_err(|e| ApiError::from_wire(e, resource))?,
                order,
                limit: checked(PageSize::parse(limit, ctx.http.core.limits()), resource)?,
            });
            let (items, next) = match ctx.run(Some(service), command, resource).await? {
                Outcome::Items { items, next } => (items, next),
                other => return Err(unexpected(other)),
            };
            let (sid, account) = ctx.urls(service).await?;
            let u = urls(ctx, &sid, &account);
            let object_sid = object_sid(ctx, service, object, resource).await?;
            let records: Vec<Value> = items
                .iter()
                .filter(|i| !(skip_first && Some(&i.key) == from.as_ref()))
                .take(size as usize)
                .map(|i| twilio::item(&u, kind, &object_sid, i))
                .collect();
            Ok((
                StatusCode::OK,
                ctx.page("items", records, size, page, next.map(|k| k.to_string())),
            ))
        }
        Method::POST => {
            let data = json_param(ctx, "Data", max)?
                .ok_or_else(|| ApiError::parameter("Data", "is required"))?;
            let ttl = ttl_param(ctx, &["ItemTtl", "Ttl"])?;
            let command = match kind {
                ObjectKind::List => WriteCommand::ListPush {
                    list: object.to_owned(),
                    data,
                    ttl,
                    create_list: false,
                    ephemeral: false,
                },
                _ => {
                    let key = ItemKey::Key(ctx.params.required("Key")?.to_owned());
                    let key = checked(Key::parse(kind, key, ctx.http.core.limits()), resource)?;
                    WriteCommand::ItemSet {
                        kind,
                        object: object.to_owned(),
                        key,
                        data,
                        if_match: None,
                        ttl,
                        mode: SetMode::Create,
                        create_map: false,
                        ephemeral: false,
                    }
                }
            };
            let answer = ctx
                .run(Some(service), Command::Write(command), resource)
                .await?;
            collection_ttl(ctx, service, kind, object).await?;
            let (sid, account) = ctx.urls(service).await?;
            let body = written_item(&urls(ctx, &sid, &account), kind, answer)?;
            Ok((StatusCode::CREATED, body))
        }
        _ => Err(method_not_allowed(&ctx.method)),
    }
}

async fn item_answer(
    ctx: &Ctx,
    service: &str,
    kind: ObjectKind,
    object: &str,
    key: &str,
) -> Answer {
    let resource = Resource::Item(kind);
    let key = item_key(kind, key, "Index")?;
    let key = checked(Key::parse(kind, key, ctx.http.core.limits()), resource)?;
    let max = ctx.http.core.limits().max_data_bytes;
    let object = object.to_owned();
    let command = match ctx.method {
        Method::GET => Command::Read(ReadCommand::Item {
            kind,
            object: object.clone(),
            key,
        }),
        Method::POST => {
            let ttl = ttl_param(ctx, &["ItemTtl", "Ttl"])?;
            match json_param(ctx, "Data", max)? {
                Some(data) => Command::Write(WriteCommand::ItemSet {
                    kind,
                    object: object.clone(),
                    key,
                    data,
                    if_match: ctx.if_match,
                    ttl,
                    mode: SetMode::Replace,
                    create_map: false,
                    ephemeral: false,
                }),
                None => match ttl {
                    Some(ttl) => Command::Write(WriteCommand::SetTtl {
                        kind,
                        object: object.clone(),
                        key: Some(key),
                        ttl,
                    }),
                    // Only the collection's TTL: apply it, then show the item.
                    None if ctx.params.string("CollectionTtl").is_some() => {
                        collection_ttl(ctx, service, kind, &object).await?;
                        Command::Read(ReadCommand::Item {
                            kind,
                            object: object.clone(),
                            key,
                        })
                    }
                    None => return Err(nothing_to_update()),
                },
            }
        }
        Method::DELETE => Command::Write(WriteCommand::ItemRemove {
            kind,
            object: object.clone(),
            key,
            if_match: ctx.if_match,
        }),
        _ => return Err(method_not_allowed(&ctx.method)),
    };
    let is_write = matches!(
        command,
        Command::Write(WriteCommand::ItemSet { .. } | WriteCommand::SetTtl { .. })
    );
    let answer = ctx.run(Some(service), command, resource).await?;
    if is_write {
        collection_ttl(ctx, service, kind, &object).await?;
    }
    let (sid, account) = ctx.urls(service).await?;
    let u = urls(ctx, &sid, &account);
    match answer {
        Outcome::ItemRemoved { .. } => Ok((StatusCode::NO_CONTENT, Value::Null)),
        Outcome::Item(i) => {
            let object_sid = object_sid(ctx, service, &object, resource).await?;
            Ok((StatusCode::OK, twilio::item(&u, kind, &object_sid, &i)))
        }
        other => Ok((StatusCode::OK, written_item(&u, kind, other)?)),
    }
}

async fn object_sid(
    ctx: &Ctx,
    service: &str,
    object: &str,
    resource: Resource,
) -> Result<String, ApiError> {
    if syncline_proto::ids::is_sid(object) {
        return Ok(object.to_owned());
    }
    let read = Command::Read(ReadCommand::Object {
        object: object.to_owned(),
    });
    match ctx.run(Some(service), read, resource).await? {
        Outcome::Object(o) => Ok(o.sid),
        other => Err(unexpected(other)),
    }
}

async fn message_answer(ctx: &Ctx, service: &str, stream: &str) -> Answer {
    if ctx.method != Method::POST {
        return Err(method_not_allowed(&ctx.method));
    }
    let max = ctx.http.core.limits().max_message_bytes;
    let data =
        json_param(ctx, "Data", max)?.ok_or_else(|| ApiError::parameter("Data", "is required"))?;
    let text = data.as_str().to_owned();
    let command = Command::Publish {
        stream: stream.to_owned(),
        data,
    };
    match ctx.run(Some(service), command, Resource::Message).await? {
        Outcome::Published { sequence } => {
            let sid = syncline_proto::ids::make_sid("TZ", rand::random());
            let data: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            Ok((
                StatusCode::CREATED,
                json!({ "sid": sid, "data": data, "sequence": sequence }),
            ))
        }
        other => Err(unexpected(other)),
    }
}

async fn permission_answer(
    ctx: &Ctx,
    service: &str,
    kind: ObjectKind,
    object: &str,
    identity: Option<&str>,
) -> Answer {
    let resource = Resource::Permission;
    // The object must be of the kind the path names.
    let read = Command::Read(ReadCommand::Object {
        object: object.to_owned(),
    });
    let object_sid = match ctx.run(Some(service), read, Resource::Object(kind)).await? {
        Outcome::Object(o) if o.kind == kind => o.sid,
        Outcome::Object(_) => {
            return Err(ApiError::from_wire(
                syncline_proto::WireError::not_found(kind.name()),
                Resource::Object(kind),
            ))
        }
        other => return Err(unexpected(other)),
    };
    let (sid, account) = ctx.urls(service).await?;
    let u = urls(ctx, &sid, &account);
    let list = || {
        Command::Admin(AdminCommand::PermissionList {
            object: object_sid.clone(),
        })
    };
    match (&ctx.method, identity) {
        (&Method::GET, None) => {
            let (size, page, token) = ctx.paging()?;
            let all = match ctx.run(Some(service), list(), resource).await? {
                Outcome::Permissions(all) => all,
                other => return Err(unexpected(other)),
            };
            let (shown, next) = page_of(&all, |p| &p.identity, token.as_deref(), size);
            let records = shown
                .iter()
                .map(|p| twilio::permission(&u, kind, p))
                .collect();
            Ok((
                StatusCode::OK,
                ctx.page("permissions", records, size, page, next),
            ))
        }
        (&Method::GET, Some(identity)) => {
            let all = match ctx.run(Some(service), list(), resource).await? {
                Outcome::Permissions(all) => all,
                other => return Err(unexpected(other)),
            };
            let p = all.iter().find(|p| p.identity == identity).ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, 20404, "permission not found")
            })?;
            Ok((StatusCode::OK, twilio::permission(&u, kind, p)))
        }
        (&Method::POST, Some(identity)) => {
            let rights = Rights {
                read: ctx.params.required_boolean("Read")?,
                write: ctx.params.required_boolean("Write")?,
                manage: ctx.params.required_boolean("Manage")?,
            };
            let identity = Identity::parse(identity.to_owned(), ctx.http.core.limits());
            let command = Command::Admin(AdminCommand::PermissionGrant {
                object: object_sid.clone(),
                identity: checked(identity, resource)?,
                rights,
            });
            match ctx.run(Some(service), command, resource).await? {
                Outcome::Permission(p) => Ok((StatusCode::OK, twilio::permission(&u, kind, &p))),
                other => Err(unexpected(other)),
            }
        }
        (&Method::DELETE, Some(identity)) => {
            let identity = Identity::parse(identity.to_owned(), ctx.http.core.limits());
            let command = Command::Admin(AdminCommand::PermissionRevoke {
                object: object_sid.clone(),
                identity: checked(identity, resource)?,
            });
            ctx.run(Some(service), command, resource).await?;
            Ok((StatusCode::NO_CONTENT, Value::Null))
        }
        _ => Err(method_not_allowed(&ctx.method)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lists_are_paged_by_their_sort_key() {
        let all: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let page = |token: Option<&str>, size| {
            let (shown, next) = page_of(&all, |s: &String| s.as_str(), token, size);
            (shown.join(""), next)
        };
        assert_eq!(page(None, 2), ("ab".into(), Some("b".into())));
        assert_eq!(page(Some("b"), 2), ("cd".into(), Some("d".into())));
        assert_eq!(page(Some("d"), 2), ("e".into(), None));
        assert_eq!(page(Some("e"), 2), ("".into(), None));
        assert_eq!(page(Some("zz"), 2), ("".into(), None));
        assert_eq!(page(None, 5), ("abcde".into(), None));
        assert_eq!(page_of(&all[..0], |s: &String| s.as_str(), None, 5).1, None);
    }
}
