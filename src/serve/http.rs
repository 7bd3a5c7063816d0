//! The network endpoint: an HTTP/1.1 server that answers predictions and model-management
//! requests from a [`Backend`], on its own tokio runtime, away from the timely workers.
//!
//! Endpoints (all bodies JSON unless noted):
//!
//! | method | path | answer |
//! |---|---|---|
//! | POST | `/v1/predict` | one query → a [`Prediction`]; `{"queries": [...]}` → `{"predictions": [...]}` |
//! | GET | `/v1/models` | [`Backend::models`] |
//! | POST | `/v1/models/{name}/pin` | body `{"version": v}` → [`Backend::pin`] |
//! | POST | `/v1/models/{name}/unpin` | [`Backend::unpin`] |
//! | POST | `/v1/models/{name}/rollback` | [`Backend::rollback`] |
//! | GET | `/metrics` | Prometheus text format 0.0.4 |
//! | GET | `/healthz` | 200 while the process lives |
//! | GET | `/readyz` | 200 once [`Backend::ready`], else 503 |
//! | GET | `/` | the operator's console, an HTML page (see [`crate::serve::console`]) |
//! | GET | `/console/{file}` | the console's scripts, styles and uPlot's licence |
//! | GET | `/v1/console?since=N` | [`Backend::console`], with the predictions' latency histogram |
//!
//! Every error is `{"error": "..."}` with a 4xx or 5xx status; see [`HttpConfig`] for the limits.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};
use tower_http::catch_panic::CatchPanicLayer;

/// What the HTTP endpoint serves from. Every method is fast (microseconds) and never blocks on
/// ingestion.
///
/// The server calls it inline on its runtime threads: handing each call to tokio's blocking
/// pool would let the request timeout interrupt a slow call, but it cost 2.8 times the
/// server's CPU per query (56 µs instead of 20 µs, `benches/http.rs`). A call that breaks the
/// promise therefore stalls the server until it returns: the thread it holds may be the one
/// that would next poll the sockets.
pub trait Backend: Send + Sync + 'static {
    /// Scores one query: a JSON object naming the entity and the event's fields (for Sniffable
    /// `{"dog": "dog-17", "hashtags": ["ball","park"]}`), optionally `"model": name` and `"time"`.
    fn predict(&self, query: &Value) -> Result<Prediction, ApiError>;
    /// Body of GET /v1/models: versions held per model, their metrics, which one serves, pins,
    /// decisions.
    fn models(&self) -> Value;
    /// `POST /v1/models/{name}/pin` with `{"version": v}`. Returns a JSON describing the decision.
    fn pin(&self, model: &str, version: u64) -> Result<Value, ApiError>;
    /// `POST /v1/models/{name}/unpin`. Returns a JSON describing the decision.
    fn unpin(&self, model: &str) -> Result<Value, ApiError>;
    /// `POST /v1/models/{name}/rollback`. Returns a JSON describing the decision.
    fn rollback(&self, model: &str) -> Result<Value, ApiError>;
    /// Ready = a query gets an answer: a model is loaded, or a declared fallback answers.
    fn ready(&self) -> bool;
    /// Appends the backend's own Prometheus text-format metrics (facts read, dead letters,
    /// epoch, frontier lag, version served...).
    fn metrics(&self, out: &mut String);
    /// Body of `GET /v1/console?since=N`, what the console polls: a JSON object with the
    /// epochs recorded after number `since` (`epochs`, `last_seq`), counters and the latest
    /// dead letters. A backend that records none answers with empty ones.
    fn console(&self, since: u64) -> Value {
        let _ = since;
        json!({ "last_seq": 0, "epochs": [], "dead_letters": [], "counters": {} })
    }
}

/// One answer to a query.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// The predicted probability of the positive label.
    pub probability: f64,
    /// The model that answered: the pipeline's, or `"constant"` for the declared fallback.
    pub model: String,
    /// The version of that model that answered; `null` for the constant fallback, which has
    /// none.
    pub version: Option<u64>,
    /// The epoch whose features the answer read, if it read any.
    pub features_epoch: Option<u64>,
}

/// Why a backend refused a request; each maps to one HTTP status.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or names a bad field: 400.
    #[error("{0}")]
    BadRequest(String),
    /// The request names something that does not exist (a model, a version): 404.
    #[error("{0}")]
    NotFound(String),
    /// The backend cannot answer yet (no model loaded): 503.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The server's address, limits and threads.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Where to listen; port 0 picks a free port (see [`HttpServer::local_addr`]).
    pub addr: SocketAddr,
    /// Largest request body accepted; a larger one gets 413.
    pub max_body_bytes: usize,
    /// Deadline for a whole request (body and handling), from when its headers are read.
    /// A request past it gets 503: the server could not finish in time. It ends a batch
    /// between queries, but cannot interrupt one backend call in progress (see [`Backend`]).
    pub request_timeout: Duration,
    /// Deadline for receiving a request's body, from when its headers are read. A client that
    /// trickles its body past it gets 408. Keep it below `request_timeout`.
    pub body_timeout: Duration,
    /// Deadline for receiving a request's headers, from when the server starts waiting for
    /// them; the connection is closed past it. This also closes a keep-alive connection idle
    /// for that long.
    pub header_timeout: Duration,
    /// Open connections at most; beyond it the server stops accepting until one closes (new
    /// clients wait in the listen backlog).
    pub max_connections: usize,
    /// Requests being handled at once at most; beyond it a request gets 503 at once (load
    /// shedding) rather than queueing behind the others.
    pub max_in_flight: usize,
    /// Queries in one batch at most; a larger batch gets 413.
    pub max_batch: usize,
    /// Threads of the server's tokio runtime.
    pub worker_threads: usize,
    /// How long [`HttpServer::shutdown`] lets requests in progress finish.
    pub shutdown_grace: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080)),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            max_connections: 1024,
            max_in_flight: 512,
            max_batch: 1000,
            worker_threads: 2,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// A running server. Dropping it shuts it down as [`HttpServer::shutdown`] does.
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// The address the server listens on (with the port it was given when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, lets requests in progress finish (up to
    /// `shutdown_grace`), closes every connection and joins the server's threads.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the accept loop has already ended: nothing to signal.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The accept loop does not panic; a panic in a handler is caught per request.
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Binds `config.addr`, starts the server on a runtime of `config.worker_threads` threads and
/// returns once it listens. A bind failure is an error naming the address; a zero limit is an
/// error naming the setting.
pub fn spawn(config: HttpConfig, backend: Arc<dyn Backend>) -> Result<HttpServer, std::io::Error> {
    for (field, value) in [
        ("max_connections", config.max_connections),
        ("max_in_flight", config.max_in_flight),
        ("max_batch", config.max_batch),
        ("worker_threads", config.worker_threads),
    ] {
        if value == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("HTTP server setting `{field}` must be at least 1"),
            ));
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .thread_name("pooch-http")
        .enable_all()
        .build()?;
    let listener = {
        let _context = runtime.enter();
        bind(config.addr).map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("cannot listen for HTTP on {}: {error}", config.addr),
            )
        })?
    };
    let local_addr = listener.local_addr()?;
    let metrics = ServerMetrics::new();
    let shared = Arc::new(Shared {
        backend,
        metrics,
        max_body_bytes: config.max_body_bytes,
        body_timeout: config.body_timeout,
        max_batch: config.max_batch,
        in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
        max_in_flight: config.max_in_flight,
        request_timeout: config.request_timeout,
        answered_since_trim: AtomicU64::new(0),
        large_bodies: Arc::new(Semaphore::new(2 * config.worker_threads)),
    });
    let router = router(shared.clone());
    let (stop, stopped) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("pooch-http-accept".into())
        .spawn(move || {
            runtime.block_on(accept_loop(listener, router, shared, config, stopped));
        })?;
    Ok(HttpServer {
        local_addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Listens with a deep backlog: a burst of new connections (a load generator opening its pool)
/// should wait in the kernel, not be refused.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    router: Router,
    shared: Arc<Shared>,
    config: HttpConfig,
    mut stopped: oneshot::Receiver<()>,
) {
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let trimmer = tokio::spawn(trim_when_idle(shared.clone()));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .keep_alive(true);
    loop {
        // Wait for a connection slot first, so a full server leaves new clients in the backlog.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
            _ = &mut stopped => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: wait and go on rather than spin.
                    eprintln!("pooch http: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopped => break,
        };
        // Small responses must leave at once, not wait for Nagle.
        let _ = stream.set_nodelay(true);
        shared.metrics.connections_total.inc();
        shared.metrics.connections_open.inc();
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let shared = shared.clone();
        tokio::spawn(async move {
            // A connection ends in error when the client vanishes or trips the header timeout;
            // neither is the server's failure.
            let _ = connection.await;
            shared.metrics.connections_open.dec();
            drop(permit);
        });
    }
    drop(listener);
    trimmer.abort();
    // Ends when every connection has finished its request in progress and closed.
    let _ = tokio::time::timeout(config.shutdown_grace, graceful.shutdown()).await;
}

/// What every handler reads.
struct Shared {
    backend: Arc<dyn Backend>,
    metrics: ServerMetrics,
    max_body_bytes: usize,
    body_timeout: Duration,
    max_batch: usize,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    request_timeout: Duration,
    /// Queries answered since the allocator last gave free memory back (see
    /// [`trim_when_idle`]).
    answered_since_trim: AtomicU64,
    /// Large predict bodies parsed and answered at once at most (see [`LARGE_BODY_BYTES`]).
    large_bodies: Arc<Semaphore>,
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/models", get(models))
        .route("/v1/models/{name}/pin", post(pin))
        .route("/v1/models/{name}/unpin", post(unpin))
        .route("/v1/models/{name}/rollback", post(rollback))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(console_asset))
        .route("/console/{file}", get(console_asset))
        .route("/v1/console", get(console_series))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Layers run from the last added inwards: count and time, catch panics, then guard.
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(shared.clone(), observe))
        .with_state(shared)
}

/// A JSON error body with its status.
fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    let message: String = message.into();
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string());
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error: the request handler panicked ({detail})"),
    )
}

/// Counts every request by endpoint and status and times it.
async fn observe(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let endpoint = endpoint_label(request.uri().path());
    let start = Instant::now();
    let response = next.run(request).await;
    let elapsed = start.elapsed().as_secs_f64();
    shared
        .metrics
        .requests
        .with_label_values(&[endpoint, response.status().as_str()])
        .inc();
    shared
        .metrics
        .duration
        .with_label_values(&[endpoint])
        .observe(elapsed);
    response
}

/// A fixed, small label set: unknown paths must not grow the metrics without bound.
fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/v1/predict" => "predict",
        "/v1/models" => "models",
        "/metrics" => "metrics",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/" => "console",
        "/v1/console" => "console",
        _ if path.starts_with("/console/") => "console",
        _ if path.starts_with("/v1/models/") => match path.rsplit('/').next() {
            Some("pin") => "pin",
            Some("unpin") => "unpin",
            Some("rollback") => "rollback",
            _ => "other",
        },
        _ => "other",
    }
}

/// Sheds load beyond `max_in_flight` and bounds each request's time.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = shared.in_flight.clone().try_acquire_owned() else {
        shared.metrics.shed.inc();
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "server overloaded: {} requests already in progress",
                shared.max_in_flight
            ),
        );
    };
    let deadline = Deadline(Instant::now() + shared.request_timeout);
    let mut request = request;
    request.extensions_mut().insert(deadline);
    match tokio::time::timeout(shared.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_elapsed) => timed_out(&shared),
    }
}

/// When the request in hand must be answered by; handlers doing long work check it.
#[derive(Clone, Copy, Debug)]
struct Deadline(Instant);

fn timed_out(shared: &Shared) -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "request not handled within the {} ms request timeout",
            shared.request_timeout.as_millis()
        ),
    )
}

/// How often the server looks whether it is idle after a flood.
const TRIM_CHECK: Duration = Duration::from_secs(1);

/// Queries answered since the last trim before an idle server gives free memory back: a few
/// batches' worth, so that a client asking one query a second never causes a trim.
const TRIM_AFTER_QUERIES: u64 = 10_000;

/// Gives the allocator's free memory back to the operating system once the server is idle
/// (no request in progress) after answering at least [`TRIM_AFTER_QUERIES`] queries, so that
/// the resident set returns near its level before a flood (see [`crate::serve::memory`]).
/// Under steady load it never runs: the memory freed by one request is reused by the next.
async fn trim_when_idle(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(TRIM_CHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let idle = shared.in_flight.available_permits() == shared.max_in_flight;
        if !idle || shared.answered_since_trim.load(Ordering::Relaxed) < TRIM_AFTER_QUERIES {
            continue;
        }
        shared.answered_since_trim.store(0, Ordering::Relaxed);
        // it holds each arena's lock for a while: off the threads that poll the sockets
        let released = tokio::task::spawn_blocking(crate::serve::memory::release_free_memory);
        if released.await.is_ok() {
            shared.metrics.memory_trims.inc();
        }
    }
}

/// Reads a body of at most `max_body_bytes` within `body_timeout` and parses it as JSON.
async fn read_json(shared: &Shared, headers: &HeaderMap, body: Body) -> Result<Value, Response> {
    parse_json(&read_body(shared, headers, body).await?).map_err(invalid_json)
}

/// Reads a body of at most `max_body_bytes` within `body_timeout`; an empty one is an error.
async fn read_body(shared: &Shared, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let limit = shared.max_body_bytes;
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the limit of {limit} bytes"),
        )
    };
    // Refuse a declared oversized body before reading any of it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let collected = tokio::time::timeout(shared.body_timeout, Limited::new(body, limit).collect());
    let bytes: Bytes = match collected.await {
        Err(_elapsed) => {
            return Err(error_response(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {} ms",
                    shared.body_timeout.as_millis()
                ),
            ));
        }
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(too_large());
        }
        Ok(Err(error)) => {
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {error}"),
            ));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    if bytes.is_empty() {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "the request body is empty; expected a JSON object",
        ));
    }
    Ok(bytes)
}

/// Parses a body as JSON.
fn parse_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// The 400 of a body that is not JSON.
fn invalid_json(error: serde_json::Error) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        format!("invalid JSON in the request body: {error}"),
    )
}

/// Queries of a batch answered between two yields to the runtime.
const BATCH_SLICE: usize = 16;

/// A predict body larger than this waits for one of the server's few large-body permits
/// (twice its threads) before it is parsed: a batch of about 100 queries or more.
const LARGE_BODY_BYTES: usize = 4 * 1024;

/// One element of a batch answer: the prediction or why that query failed.
#[derive(Serialize)]
#[serde(untagged)]
enum BatchAnswer {
    Answer(Prediction),
    Failed { error: String },
}

/// The answer to a batch.
#[derive(Serialize)]
struct BatchAnswers {
    predictions: Vec<BatchAnswer>,
}

async fn predict(
    State(shared): State<Arc<Shared>>,
    deadline: Option<Extension<Deadline>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_body(&shared, &headers, body).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    // A large body (a batch) parses into tens of times its size and is answered a slice at a
    // time: answered all at once, 512 batches in flight held 700 MB. A few are parsed and
    // answered at a time; the others wait with their bytes alone.
    let _large = if bytes.len() > LARGE_BODY_BYTES {
        // the semaphore is never closed
        shared.large_bodies.clone().acquire_owned().await.ok()
    } else {
        None
    };
    let request = match parse_json(&bytes) {
        Ok(request) => request,
        Err(error) => return invalid_json(error),
    };
    let Value::Object(fields) = &request else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "the request body must be a JSON object: a query, or {\"queries\": [...]}",
        );
    };
    let Some(queries) = fields.get("queries") else {
        shared.answered_since_trim.fetch_add(1, Ordering::Relaxed);
        return match shared.backend.predict(&request) {
            Ok(prediction) => axum::Json(prediction).into_response(),
            Err(error) => error_response(error.status(), error.to_string()),
        };
    };
    let Value::Array(queries) = queries else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "field `queries` must be an array of query objects",
        );
    };
    if queries.len() > shared.max_batch {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "batch of {} queries exceeds the limit of {}",
                queries.len(),
                shared.max_batch
            ),
        );
    }
    shared
        .answered_since_trim
        .fetch_add(queries.len() as u64, Ordering::Relaxed);
    let mut predictions = Vec::with_capacity(queries.len());
    for (index, query) in queries.iter().enumerate() {
        // A batch whose queries add up to too long ends at the request timeout...
        if let Some(Extension(Deadline(deadline))) = deadline
            && Instant::now() >= deadline
        {
            return timed_out(&shared);
        }
        // ...and lets other connections' requests run between its slices.
        if index % BATCH_SLICE == BATCH_SLICE - 1 {
            tokio::task::yield_now().await;
        }
        predictions.push(if query.is_object() {
            match shared.backend.predict(query) {
                Ok(prediction) => BatchAnswer::Answer(prediction),
                // no model serves: the batch as a whole cannot be answered
                Err(ApiError::Unavailable(reason)) => {
                    return error_response(StatusCode::SERVICE_UNAVAILABLE, reason);
                }
                Err(error) => BatchAnswer::Failed {
                    error: error.to_string(),
                },
            }
        } else {
            BatchAnswer::Failed {
                error: format!("queries[{index}] is not a JSON object"),
            }
        });
    }
    // serialized straight from the answers: a `json!` tree of them would double the memory a
    // batch holds
    axum::Json(BatchAnswers { predictions }).into_response()
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.backend.models()).into_response()
}

fn decision(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => error_response(error.status(), error.to_string()),
    }
}

async fn pin(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = match read_json(&shared, &headers, body).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    let version = match request.get("version") {
        None => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "missing field `version`: expected {\"version\": <non-negative integer>}",
            );
        }
        Some(value) => match value.as_u64() {
            Some(version) => version,
            None => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    format!("field `version` must be a non-negative integer, got {value}"),
                );
            }
        },
    };
    decision(shared.backend.pin(&name, version))
}

async fn unpin(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    decision(shared.backend.unpin(&name))
}

async fn rollback(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    decision(shared.backend.rollback(&name))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let mut text = String::with_capacity(8 * 1024);
    let encoded =
        prometheus::TextEncoder::new().encode_utf8(&shared.metrics.registry.gather(), &mut text);
    if let Err(error) = encoded {
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the server's metrics: {error}"),
        );
    }
    shared.backend.metrics(&mut text);
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.backend.ready() {
        axum::Json(json!({ "ready": true })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "ready": false, "error": "no model loaded yet" })),
        )
            .into_response()
    }
}

/// A file of the console, from the binary.
async fn console_asset(request: Request) -> Response {
    match crate::serve::console::asset(request.uri().path()) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            asset.body,
        )
            .into_response(),
        None => not_found(request).await,
    }
}

/// What the console polls: the backend's journal after `since`, and the latency histogram of
/// predictions as cumulative bucket counts (`le` in seconds) with the total `count`.
async fn console_series(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let query = request.uri().query().unwrap_or("");
    let mut since = 0;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "since" {
            match value.parse::<u64>() {
                Ok(value) => since = value,
                Err(_) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "query parameter `since` must be a non-negative integer, got {value:?}"
                        ),
                    );
                }
            }
        }
    }
    let mut body = shared.backend.console(since);
    let predict = shared.metrics.duration.with_label_values(&["predict"]);
    let buckets = latency_buckets(&predict);
    if let Value::Object(object) = &mut body {
        object.insert("latency".into(), buckets);
    }
    axum::Json(body).into_response()
}

/// A histogram's cumulative buckets, count and sum, as JSON.
fn latency_buckets(histogram: &prometheus::Histogram) -> Value {
    use prometheus::core::Collector;
    let families = histogram.collect();
    let Some(metric) = families
        .first()
        .and_then(|family| family.get_metric().first())
    else {
        return json!({ "buckets": [], "count": 0, "sum": 0.0 });
    };
    let sampled = metric.get_histogram();
    let buckets: Vec<Value> = sampled
        .get_bucket()
        .iter()
        .map(|bucket| json!({ "le": bucket.upper_bound(), "count": bucket.cumulative_count() }))
        .collect();
    json!({
        "buckets": buckets,
        "count": sampled.get_sample_count(),
        "sum": sampled.get_sample_sum(),
    })
}

async fn not_found(request: Request) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        format!("no endpoint at {}", request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// The server's own metrics, in the Prometheus text format beside the backend's.
///
/// The `prometheus` crate writes text format 0.0.4, which the backend's lines can simply be
/// appended to; `prometheus-client` writes OpenMetrics, which must end in `# EOF` after every
/// family, so the backend's lines could not follow.
struct ServerMetrics {
    registry: prometheus::Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    connections_open: IntGauge,
    connections_total: IntCounter,
    shed: IntCounter,
    memory_trims: IntCounter,
}

impl ServerMetrics {
    fn new() -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "pooch_http_requests_total",
                "HTTP requests answered, by endpoint and status code",
            ),
            &["endpoint", "status"],
        )
        .expect("a valid metric definition");
        // 25 µs to about 3.3 s, doubling: a query takes tens of microseconds when all is well.
        let buckets =
            prometheus::exponential_buckets(0.000_025, 2.0, 18).expect("valid histogram buckets");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "pooch_http_request_duration_seconds",
                "Server-side handling time of HTTP requests, from headers read to response ready",
            )
            .buckets(buckets),
            &["endpoint"],
        )
        .expect("a valid metric definition");
        let connections_open =
            IntGauge::new("pooch_http_connections_open", "HTTP connections open now")
                .expect("a valid metric definition");
        let connections_total =
            IntCounter::new("pooch_http_connections_total", "HTTP connections accepted")
                .expect("a valid metric definition");
        let shed = IntCounter::new(
            "pooch_http_requests_shed_total",
            "HTTP requests refused with 503 because max_in_flight were in progress",
        )
        .expect("a valid metric definition");
        let memory_trims = IntCounter::new(
            "pooch_http_memory_trims_total",
            "Times the idle server gave the allocator's free memory back after a flood of queries",
        )
        .expect("a valid metric definition");
        let registry = prometheus::Registry::new();
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(connections_open.clone()),
            Box::new(connections_total.clone()),
            Box::new(shed.clone()),
            Box::new(memory_trims.clone()),
        ] {
            registry.register(collector).expect("distinct metric names");
        }
        ServerMetrics {
            registry,
            requests,
            duration,
            connections_open,
            connections_total,
            shed,
            memory_trims,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_labels_are_a_fixed_set() {
        assert_eq!(endpoint_label("/v1/predict"), "predict");
        assert_eq!(endpoint_label("/v1/models"), "models");
        assert_eq!(endpoint_label("/v1/models/pooch/pin"), "pin");
        assert_eq!(endpoint_label("/v1/models/pooch/unpin"), "unpin");
        assert_eq!(endpoint_label("/v1/models/pooch/rollback"), "rollback");
        assert_eq!(endpoint_label("/v1/models/pooch/other"), "other");
        assert_eq!(endpoint_label("/anything/else"), "other");
    }

    #[test]
    fn api_errors_map_to_their_status() {
        assert_eq!(
            ApiError::BadRequest("x".into()).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError::NotFound("x".into()).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::Unavailable("x".into()).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
