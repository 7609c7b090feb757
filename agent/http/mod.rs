//! The agent's HTTP server: the review page for traffic police, the evidence
//! files (with range requests, so a browser can seek a clip), Prometheus
//! `/metrics`, `/healthz` and `/readyz`.
//!
//! Every data route needs a user whose role allows it (see [`auth`]): a
//! bearer token (`Authorization: Bearer …`) or the session cookie that
//! `POST /api/login` sets (a `<video>` element cannot send headers).
//! Evidence is served only by event id and a fixed list of file names, so no
//! path outside the evidence folder can be named at all. Connections are
//! capped and must send their headers in time ([`serve`]).

pub mod auth;
mod clip;
pub mod limit;
pub mod metrics;
mod record;
pub mod serve;
pub mod setup;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::evidence::{Evidence, safe_name};
use crate::publish::payload::{EventUpdate, ReviewInfo, UPDATE_SCHEMA};
use crate::store::evidence::{EvidenceQuery, EvidenceRow};

/// A clip's own files: `clip-init.mp4` and `clip-NNN.m4s`.
fn clip_part(name: &str) -> bool {
    name == crate::evidence::CLIP_INIT
        || name
            .strip_prefix("clip-")
            .and_then(|n| n.strip_suffix(".m4s"))
            .is_some_and(|n| n.len() >= 3 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Files of an evidence folder that may be served (`clip.mp4` is made from
/// the clip's segments when the folder has them).
pub const SERVED_FILES: &[&str] = &[
    "clip.mp4",
    "overview.jpg",
    "closeup.jpg",
    "plate.jpg",
    "event.json",
    "manifest.json",
    "manifest.sig",
];

const REVIEW_HTML: &str = include_str!("review.html");
const SETUP_HTML: &str = include_str!("setup.html");

#[derive(Clone)]
pub struct HttpState {
    /// None when `[evidence] enabled = false`: evidence routes answer 404.
    pub evidence: Option<Arc<Evidence>>,
    /// Who may log in, and their sessions.
    pub users: Arc<auth::Users>,
    /// Served over HTTPS: the session cookie is `Secure`.
    pub tls: bool,
    /// Connection counters of the serve loop, for `/metrics`.
    pub conns: Arc<serve::ConnCounters>,
    pub status: Arc<crate::publish::payload::StatusBoard>,
    /// Set once models are loaded and cameras are supervised.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// The setup page's state (config path, running config, snapshots).
    pub setup: Option<Arc<setup::SetupState>>,
    /// Failed logins per client address.
    pub logins: Arc<limit::LoginLimiter>,
    /// Traffic-controller signal states and their counters (`/metrics`).
    pub signals: Option<Arc<crate::rules::signal::SignalBoard>>,
    /// The site's time zone (IANA name): the review page shows times in it.
    pub time_zone: String,
}

impl HttpState {
    fn evidence(&self) -> Result<&Arc<Evidence>, Box<Response>> {
        self.evidence.as_ref().ok_or_else(|| {
            Box::new(error(
                StatusCode::NOT_FOUND,
                "evidence is disabled in this agent's config",
            ))
        })
    }
}

/// Binds `listen` and serves until `cancel` fires. Returns the bound address.
pub async fn serve(
    listen: &str,
    state: HttpState,
    opts: serve::ServeOptions,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot listen on {listen} (http.listen): {e} — is another program using the port?"
            ),
        )
    })?;
    let addr = listener.local_addr()?;
    let conns = state.conns.clone();
    let app = router(state);
    let task = tokio::spawn(serve::serve(listener, app, opts, conns, cancel));
    Ok((addr, task))
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/review") }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_route))
        .route("/review", get(|| async { Html(REVIEW_HTML) }))
        .route("/setup", get(|| async { Html(SETUP_HTML) }))
        .route("/api/setup", get(setup_list))
        .route("/api/setup/{id}/snapshot.jpg", get(setup_snapshot))
        .route("/api/setup/{id}/geometry", post(setup_save))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/types", get(event_types))
        .route("/api/events", get(list_events))
        .route("/api/events/{id}/review", post(review))
        .route("/api/events/{id}/hold", post(hold))
        .route("/api/events/{id}/record", get(event_record))
        .route("/evidence/{id}/{file}", get(evidence_file))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// The inline `<tag>…</tag>` blocks of the pages, as CSP hash sources.
fn inline_hashes(tag: &str) -> String {
    use sha2::Digest;
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    for page in [REVIEW_HTML, SETUP_HTML, record::STYLE] {
        let mut rest = page;
        while let Some(i) = rest.find(&open) {
            let body = &rest[i + open.len()..];
            let Some(j) = body.find(&close) else { break };
            let digest = sha2::Sha256::digest(&body.as_bytes()[..j]);
            out.push(format!("'sha256-{}'", base64(&digest)));
            rest = &body[j..];
        }
    }
    out.join(" ")
}

/// Standard base64 (for CSP hashes).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The Content-Security-Policy: only the pages' own inline script and style
/// (by hash), everything else from this origin, never framed.
fn csp() -> &'static str {
    static CSP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'self'; script-src {}; style-src {}; img-src 'self' blob:; \
             media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
            inline_hashes("script"),
            inline_hashes("style")
        )
    })
}

/// Headers on every response: a strict CSP, no MIME sniffing, no framing,
/// no referrer (URLs carry event ids).
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(csp()) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The 401 or 403 answer for a refused request.
fn refused(r: auth::Refused) -> Response {
    match r {
        auth::Refused::Unknown => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "missing or wrong token, or the session ended; send Authorization: Bearer <your token> or log in at /review"})),
        )
            .into_response(),
        auth::Refused::Forbidden(m) => error(StatusCode::FORBIDDEN, m),
    }
}

/// Checks the request's user against `need`; the `Err` is the answer.
fn require(
    s: &HttpState,
    headers: &HeaderMap,
    need: auth::Need,
) -> Result<auth::Principal, Box<Response>> {
    s.users
        .require(headers, need, std::time::Instant::now())
        .map_err(|r| Box::new(refused(r)))
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

async fn readyz(State(s): State<HttpState>) -> Response {
    let cams = s.status.snapshot();
    let body = json!({
        "ready": s.ready.load(std::sync::atomic::Ordering::Relaxed),
        "cameras": cams.iter().map(|(k, c)| (k.clone(), c.state)).collect::<std::collections::BTreeMap<_, _>>(),
    });
    let code = if s.ready.load(std::sync::atomic::Ordering::Relaxed) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics_route(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    if let Err(r) = require(&s, &headers, auth::Need::Metrics) {
        return *r;
    }
    let st = s.clone();
    match tokio::task::spawn_blocking(move || {
        metrics::render(
            &st.status,
            st.evidence.as_deref(),
            Some(&st.conns),
            st.signals.as_deref(),
        )
    })
    .await
    {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn setup_state(s: &HttpState) -> Result<&Arc<setup::SetupState>, Box<Response>> {
    s.setup
        .as_ref()
        .ok_or_else(|| Box::new(error(StatusCode::NOT_FOUND, "setup is not available")))
}

async fn setup_list(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    if let Err(r) = require(&s, &headers, auth::Need::Setup) {
        return *r;
    }
    let st = match setup_state(&s) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let cams = match st.running.read() {
        Ok(c) => setup::running_geometry(&c),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "config lock poisoned"),
    };
    let status = s.status.snapshot();
    let list: Vec<serde_json::Value> = cams
        .into_iter()
        .map(|(id, g)| {
            let c = status.get(&id);
            json!({
                "id": id,
                "state": c.map(|c| c.state),
                "resolution": c.and_then(|c| c.resolution),
                "snapshot": format!("/api/setup/{id}/snapshot.jpg"),
                "geometry": g,
            })
        })
        .collect();
    Json(json!({"cameras": list, "config": st.config_path.as_ref().map(|p| p.display().to_string())})).into_response()
}

async fn setup_snapshot(
    State(s): State<HttpState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if let Err(r) = require(&s, &headers, auth::Need::Setup) {
        return *r;
    }
    let st = match setup_state(&s) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(frame) = st.snapshots.get(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no picture from camera '{id}' yet; is it streaming?"),
        );
    };
    match tokio::task::spawn_blocking(move || crate::evidence::thumbnail(&frame, 1280, None, &[]))
        .await
    {
        Ok(Ok(j)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            j.bytes,
        )
            .into_response(),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the snapshot",
        ),
    }
}

async fn setup_save(
    State(s): State<HttpState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Json(g): Json<setup::Geometry>,
) -> Response {
    let who = match require(&s, &headers, auth::Need::Setup) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let st = match setup_state(&s) {
        Ok(x) => x.clone(),
        Err(r) => return *r,
    };
    match setup::save(&st, &id, &g).await {
        Ok(()) => {
            tracing::info!(camera = %id, user = %who.name, "setup: geometry saved and applied");
            Json(json!({"ok": true, "applied": true})).into_response()
        }
        Err((code, msg)) => error(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            msg,
        ),
    }
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(
    State(s): State<HttpState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    Json(l): Json<Login>,
) -> Response {
    let now = std::time::Instant::now();
    if let Err(wait) = s.logins.check(peer.ip(), now) {
        let secs = wait.as_secs().max(1).to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.clone())],
            Json(json!({"error": format!("too many wrong tokens from this address; try again in {secs} s")})),
        )
            .into_response();
    }
    let Some(who) = s.users.by_token(&l.token) else {
        s.logins.failed(peer.ip(), now);
        tracing::warn!(client = %peer.ip(), "http: failed login");
        return refused(auth::Refused::Unknown);
    };
    let id = s.users.login(who.clone(), now);
    let secure = if s.tls { "; Secure" } else { "" };
    let cookie = format!(
        "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        auth::SESSION_COOKIE,
        s.users.ttl().as_secs()
    );
    tracing::info!(user = %who.name, role = who.role.as_str(), client = %peer.ip(), "http: logged in");
    match HeaderValue::from_str(&cookie) {
        Ok(v) => (
            StatusCode::OK,
            [(header::SET_COOKIE, v)],
            Json(json!({"ok": true, "user": who.name, "role": who.role, "expires_in_secs": s.users.ttl().as_secs()})),
        )
            .into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the session cookie"),
    }
}

/// Ends the session of the cookie (and clears it).
async fn logout(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    let ended = auth::session_cookie(&headers).is_some_and(|id| s.users.logout(&id));
    let secure = if s.tls { "; Secure" } else { "" };
    let clear = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}",
        auth::SESSION_COOKIE
    );
    match HeaderValue::from_str(&clear) {
        Ok(v) => (
            StatusCode::OK,
            [(header::SET_COOKIE, v)],
            Json(json!({"ok": true, "ended": ended})),
        )
            .into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot clear the cookie"),
    }
}

/// Who is logged in, and what they may do (the pages show or hide buttons
/// by it; the server checks every request anyway).
/// The event types the rules raise, each once, with the names the alerts
/// carry (`name`, `name_vi`): the rule table, no data. The review page fills
/// its type filter from it.
async fn event_types() -> Response {
    let mut seen = std::collections::HashSet::new();
    let types: Vec<serde_json::Value> = crate::rules::KINDS
        .iter()
        .filter(|k| seen.insert(k.event_type))
        .map(|k| json!({"type": k.event_type, "en": k.en, "vi": k.vi}))
        .collect();
    Json(types).into_response()
}

async fn me(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    let Some(p) = s.users.who(&headers, std::time::Instant::now()) else {
        return refused(auth::Refused::Unknown);
    };
    let may = |n| auth::may(p.role, n);
    Json(json!({
        "user": p.name,
        "role": p.role,
        "may": {
            "view": may(auth::Need::View),
            "review": may(auth::Need::Review),
            "setup": may(auth::Need::Setup),
            "metrics": may(auth::Need::Metrics),
        }
    }))
    .into_response()
}

#[derive(Deserialize, Default)]
struct ListQuery {
    camera: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    status: Option<String>,
    place: Option<String>,
    limit: Option<usize>,
}

fn event_json(r: &EvidenceRow) -> serde_json::Value {
    let file = |n: &str| {
        r.files
            .iter()
            .any(|f| f == n)
            .then(|| format!("/evidence/{}/{n}", r.event_id))
    };
    json!({
        "id": r.event_id,
        "type": r.kind,
        "camera": r.camera,
        "rule": r.rule,
        "time": r.time,
        "severity": r.severity,
        "held": r.held,
        "plate": r.plate,
        "review": r.review,
        "files": {
            "overview": file("overview.jpg"),
            "closeup": file("closeup.jpg"),
            "clip": file("clip.mp4").or_else(|| {
                file(crate::evidence::CLIP_INIT).map(|_| format!("/evidence/{}/clip.mp4", r.event_id))
            }),
            "plate": file("plate.jpg"),
            "manifest": file("manifest.json"),
        },
        "objects": r.objects,
        "place": r.place,
        "measured": r.measured,
        "bytes": r.bytes,
    })
}

async fn list_events(
    State(s): State<HttpState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Err(r) = require(&s, &headers, auth::Need::View) {
        return *r;
    }
    let nonempty = |v: Option<String>| v.filter(|x| !x.is_empty());
    let query = EvidenceQuery {
        camera: nonempty(q.camera),
        kind: nonempty(q.kind),
        since: nonempty(q.since),
        until: nonempty(q.until),
        status: nonempty(q.status),
        place: nonempty(q.place),
        limit: q.limit.unwrap_or(200),
    };
    if let Some(st) = &query.status
        && !["pending", "confirmed", "rejected"].contains(&st.as_str())
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("status '{st}' is not one of pending, confirmed, rejected"),
        );
    }
    let store = match s.evidence() {
        Ok(ev) => ev.store().clone(),
        Err(r) => return *r,
    };
    match tokio::task::spawn_blocking(move || store.evidence_list(&query)).await {
        Ok(Ok(rows)) => Json(json!({
            "time_zone": s.time_zone,
            "events": rows.iter().map(event_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
struct ReviewBody {
    status: String,
    #[serde(default)]
    note: String,
}

async fn review(
    State(s): State<HttpState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Json(b): Json<ReviewBody>,
) -> Response {
    let who = match require(&s, &headers, auth::Need::Review) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if b.status != "confirmed" && b.status != "rejected" {
        return error(
            StatusCode::BAD_REQUEST,
            "status must be \"confirmed\" or \"rejected\"",
        );
    }
    if !safe_name(&id) || b.note.len() > 4000 {
        return error(
            StatusCode::BAD_REQUEST,
            "bad event id or note longer than 4000 bytes",
        );
    }
    let ev = match s.evidence() {
        Ok(ev) => ev.clone(),
        Err(r) => return *r,
    };
    let (ev2, id2) = (ev.clone(), id.clone());
    let res = tokio::task::spawn_blocking(move || {
        let rec = ev2.review(&id2, &b.status, &b.note, &who.name, who.role.as_str())?;
        let row = ev2.store().evidence_get(&id2).map_err(|e| e.to_string())?;
        Ok::<_, String>(rec.zip(row))
    })
    .await;
    let ((rec, held), row) = match res {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no sealed evidence for event {id}"),
            );
        }
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    tracing::info!(event_id = %id, status = %rec.status, reviewer = %rec.reviewer, seq = rec.seq, held, "event reviewed");
    let info = ReviewInfo {
        status: rec.status.clone(),
        note: rec.note.clone(),
        at: rec.at.clone(),
        reviewer: rec.reviewer.clone(),
        seq: rec.seq,
    };
    let update = EventUpdate {
        schema: UPDATE_SCHEMA.into(),
        id: ulid::Ulid::new().to_string(),
        event_id: id.clone(),
        kind: "review".into(),
        agent_id: ev.agent_id().to_string(),
        camera: row.camera.clone(),
        place: serde_json::from_value(row.place.clone()).ok(),
        event_type: row.kind.clone(),
        time: rec.at.clone(),
        evidence: None,
        review: Some(info.clone()),
    };
    let sev = match row.severity.as_str() {
        "high" => crate::store::Severity::High,
        "low" => crate::store::Severity::Low,
        _ => crate::store::Severity::Normal,
    };
    ev.publisher().send_update(&update, sev).await;
    Json(json!({"ok": true, "review": info, "held": held})).into_response()
}

#[derive(Deserialize)]
struct HoldBody {
    held: bool,
}

async fn hold(
    State(s): State<HttpState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Json(b): Json<HoldBody>,
) -> Response {
    let who = match require(&s, &headers, auth::Need::Review) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let ev = match s.evidence() {
        Ok(ev) => ev.clone(),
        Err(r) => return *r,
    };
    match tokio::task::spawn_blocking(move || ev.hold(&id, b.held, &who.name)).await {
        Ok(Ok(true)) => Json(json!({"ok": true, "held": b.held})).into_response(),
        Ok(Ok(false)) => error(StatusCode::NOT_FOUND, "no such event"),
        Ok(Err(crate::evidence::HoldError::OverBudget(m))) => error(StatusCode::CONFLICT, m),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The printable violation record of event `id` ([`record`]); its
/// signature is checked against this agent's key as the record is made.
async fn event_record(
    State(s): State<HttpState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if let Err(r) = require(&s, &headers, auth::Need::View) {
        return *r;
    }
    let ev = match s.evidence() {
        Ok(ev) => ev.clone(),
        Err(r) => return *r,
    };
    let Some(dir) = ev.folder(&id) else {
        return error(StatusCode::NOT_FOUND, "no such event");
    };
    let trust = ev.trust();
    let store = ev.store().clone();
    let looked = tokio::task::spawn_blocking(move || {
        let row = store.evidence_get(&id)?;
        let sha = std::fs::read(dir.join("manifest.json")).ok().map(|b| {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&b))
        });
        let seal = match crate::evidence::verify_folder(&dir, &trust) {
            Ok((m, _)) => record::Seal::Valid {
                key_id: if m.key_id.is_empty() {
                    m.public_key
                } else {
                    m.key_id
                },
            },
            Err(problems) => {
                record::Seal::Invalid(problems.iter().map(|p| p.to_string()).collect())
            }
        };
        Ok::<_, crate::store::StoreError>(row.map(|r| (r, sha, seal)))
    })
    .await;
    let (row, manifest_sha256, seal) = match looked {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => return error(StatusCode::NOT_FOUND, "no sealed evidence for this event"),
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let page = record::render(&record::RecordInput {
        row: &row,
        agent_id: ev.agent_id(),
        tz: s.time_zone.parse().unwrap_or(chrono_tz::Asia::Ho_Chi_Minh),
        manifest_sha256,
        seal,
    });
    Html(page).into_response()
}

async fn evidence_file(
    State(s): State<HttpState>,
    UrlPath((id, file)): UrlPath<(String, String)>,
    req: Request,
) -> Response {
    if let Err(r) = require(&s, req.headers(), auth::Need::View) {
        return *r;
    }
    // Only `<ulid>/<known name>`: nothing else can be named, so no `..`,
    // encoded or not, ever reaches the file system.
    if !safe_name(&id) || !(SERVED_FILES.contains(&file.as_str()) || clip_part(&file)) {
        return error(StatusCode::NOT_FOUND, "no such evidence file");
    }
    let ev = match s.evidence() {
        Ok(ev) => ev,
        Err(r) => return *r,
    };
    let Some(dir) = ev.folder(&id) else {
        return error(StatusCode::NOT_FOUND, "no such evidence file");
    };
    let path = dir.join(&file);
    if file == "clip.mp4" && !path.is_file() {
        return clip::serve(&dir, req.headers()).await;
    }
    if !path.is_file() {
        return error(StatusCode::NOT_FOUND, "no such evidence file");
    }
    // Content type from the extension (mp4, jpg, json); ranges handled by ServeFile.
    let svc = tower_http::services::ServeFile::new(&path);
    match svc.oneshot(req).await {
        Ok(r) => r.map(Body::new).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
        // One hash per inline block of the two pages.
        assert_eq!(inline_hashes("script").matches("'sha256-").count(), 2);
    }
}
