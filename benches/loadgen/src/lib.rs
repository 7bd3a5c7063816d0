//! An HTTP load generator for the serving benchmark: keep-alive connections sending POST
//! requests open-loop at a target rate or closed-loop as fast as answers come back, recording
//! each round trip in an HDR histogram.
//!
//! Open loop avoids coordinated omission: request `k` is due at `start + k / rate`, and its
//! latency counts from that due time, not from when a busy connection got round to sending it.
//! A server that stalls therefore shows its stall in every request that was due meanwhile.
//! When the connection was idle at the due time, the request counts from when it was actually
//! sent instead: tokio's timer wakes up to a millisecond late, and that slack is the
//! generator's, not the server's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// What to send, where, how fast and for how long.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The server's address.
    pub addr: SocketAddr,
    /// The path every request is POSTed to, e.g. `/v1/predict`.
    pub path: String,
    /// Keep-alive connections, each with one request outstanding at most (no pipelining).
    pub connections: usize,
    /// Requests per second over all connections (open loop); `None` sends the next request as
    /// soon as the previous answer is back (closed loop, maximum throughput).
    pub rate_per_sec: Option<f64>,
    /// How long to send requests whose answers are recorded.
    pub duration: Duration,
    /// How long to send requests first, without recording them (connections warm, caches hot).
    pub warmup: Duration,
    /// Threads of the generator's own tokio runtime.
    pub threads: usize,
}

/// What a run measured. Latencies are round trips in microseconds.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Requests answered with another status.
    pub non_2xx: u64,
    /// Requests that failed without an answer (connection refused, reset, closed).
    pub errors: u64,
    /// Open loop: requests that were due before the end but never sent because their
    /// connection was still waiting on earlier answers. Zero in closed loop.
    pub unsent: u64,
    /// Requests answered during the warm-up (not in the histogram): with `ok + non_2xx`, every
    /// request the server handled.
    pub warmup_answered: u64,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Answered requests (any status) per second of `elapsed`.
    pub achieved_per_sec: f64,
    /// Median round trip.
    pub p50_us: u64,
    /// 99th percentile round trip.
    pub p99_us: u64,
    /// 99.9th percentile round trip.
    pub p999_us: u64,
    /// Longest round trip.
    pub max_us: u64,
    /// Every answered request's round trip.
    pub histogram: Histogram<u64>,
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration cannot describe a run.
    #[error("bad load configuration: {0}")]
    Config(String),
    /// The generator's runtime could not start.
    #[error("cannot start the load generator's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// One connection's tally, merged at the end.
struct Tally {
    ok: u64,
    non_2xx: u64,
    errors: u64,
    unsent: u64,
    warmup_answered: u64,
    histogram: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            ok: 0,
            non_2xx: 0,
            errors: 0,
            unsent: 0,
            warmup_answered: 0,
            // One microsecond to a minute at three significant digits.
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("valid histogram bounds"),
        }
    }
}

/// Runs the load described by `config`, building request `k`'s body with `body(k)`.
pub fn run<F>(config: &LoadConfig, body: F) -> Result<LoadReport, LoadError>
where
    F: Fn(u64) -> Vec<u8> + Send + Sync + 'static,
{
    run_inspecting(config, body, |_| {})
}

/// [`run`], handing the body of every measured 2xx answer to `inspect` (on the generator's
/// threads, as the answer comes in): for a test that checks what every answer says.
pub fn run_inspecting<F, I>(
    config: &LoadConfig,
    body: F,
    inspect: I,
) -> Result<LoadReport, LoadError>
where
    F: Fn(u64) -> Vec<u8> + Send + Sync + 'static,
    I: Fn(&[u8]) + Send + Sync + 'static,
{
    if config.connections == 0 {
        return Err(LoadError::Config("connections must be at least 1".into()));
    }
    if let Some(rate) = config.rate_per_sec
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(LoadError::Config(format!(
            "rate_per_sec must be a positive number, got {rate}"
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads.max(1))
        .thread_name("pooch-loadgen")
        .enable_all()
        .build()?;
    let body = Arc::new(body);
    let inspect: Arc<dyn Fn(&[u8]) + Send + Sync> = Arc::new(inspect);
    let tallies = runtime.block_on(async {
        let start = Instant::now() + Duration::from_millis(10);
        let measure_from = start + config.warmup;
        let end = measure_from + config.duration;
        let tasks: Vec<_> = (0..config.connections)
            .map(|connection| {
                let plan = Plan {
                    addr: config.addr,
                    path: config.path.clone(),
                    connection: connection as u64,
                    connections: config.connections as u64,
                    rate_per_sec: config.rate_per_sec,
                    start,
                    measure_from,
                    end,
                };
                tokio::spawn(drive_connection(plan, body.clone(), inspect.clone()))
            })
            .collect();
        let mut tallies = Vec::with_capacity(tasks.len());
        for task in tasks {
            // A connection task only ends by returning its tally.
            if let Ok(tally) = task.await {
                tallies.push(tally);
            }
        }
        tallies
    });
    let mut total = Tally::new();
    for tally in tallies {
        total.ok += tally.ok;
        total.non_2xx += tally.non_2xx;
        total.errors += tally.errors;
        total.unsent += tally.unsent;
        total.warmup_answered += tally.warmup_answered;
        // Same bounds on both sides, so adding cannot fail.
        let _ = total.histogram.add(&tally.histogram);
    }
    let elapsed = config.duration;
    let answered = total.ok + total.non_2xx;
    let histogram = total.histogram;
    Ok(LoadReport {
        ok: total.ok,
        non_2xx: total.non_2xx,
        errors: total.errors,
        unsent: total.unsent,
        warmup_answered: total.warmup_answered,
        elapsed,
        achieved_per_sec: answered as f64 / elapsed.as_secs_f64(),
        p50_us: histogram.value_at_quantile(0.50),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
        max_us: histogram.max(),
        histogram,
    })
}

/// One connection's share of the run.
struct Plan {
    addr: SocketAddr,
    path: String,
    connection: u64,
    connections: u64,
    rate_per_sec: Option<f64>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

impl Plan {
    /// When the connection's `round`-th request is due, open loop: the global request number
    /// `round * connections + connection` spaced `1 / rate` apart.
    fn due(&self, round: u64, rate_per_sec: f64) -> Instant {
        let request = round * self.connections + self.connection;
        self.start + Duration::from_secs_f64(request as f64 / rate_per_sec)
    }
}

async fn connect(addr: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    // The connection task ends when the sender is dropped or the server closes.
    tokio::spawn(connection);
    Some(sender)
}

async fn drive_connection<F>(
    plan: Plan,
    body: Arc<F>,
    inspect: Arc<dyn Fn(&[u8]) + Send + Sync>,
) -> Tally
where
    F: Fn(u64) -> Vec<u8> + Send + Sync + 'static,
{
    let mut tally = Tally::new();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let host = plan.addr.to_string();
    let mut round = 0u64;
    let mut previous_answer_at = plan.start;
    loop {
        let request_number = round * plan.connections + plan.connection;
        // When this request was due, and when its latency counts from: the due time if an
        // answer still pending made it wait, else its send time (always, in closed loop).
        let (due, counted_from) = match plan.rate_per_sec {
            Some(rate) => {
                let due = plan.due(round, rate);
                if due >= plan.end {
                    break;
                }
                let now = Instant::now();
                if now >= plan.end {
                    // Still behind schedule at the end: every request due from here on was
                    // never sent; count them rather than silently drop them.
                    let due_in_run = ((plan.end - plan.start).as_secs_f64() * rate).ceil() as u64;
                    let rounds_in_run = due_in_run
                        .saturating_sub(plan.connection)
                        .div_ceil(plan.connections);
                    tally.unsent += rounds_in_run.saturating_sub(round);
                    break;
                }
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                    (due, Instant::now())
                } else if previous_answer_at <= due {
                    (due, now)
                } else {
                    (due, due)
                }
            }
            None => {
                let now = Instant::now();
                if now >= plan.end {
                    break;
                }
                if now < plan.start {
                    tokio::time::sleep_until(plan.start.into()).await;
                }
                let now = Instant::now();
                (now, now)
            }
        };
        round += 1;
        let measured = due >= plan.measure_from;
        if sender.as_ref().is_none_or(|sender| sender.is_closed()) {
            sender = connect(plan.addr).await;
            if sender.is_none() {
                if measured {
                    tally.errors += 1;
                }
                // Not listening (yet, or any more): do not spin on connect.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        }
        let Some(active) = sender.as_mut() else {
            continue;
        };
        let request = Request::post(plan.path.as_str())
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body(request_number))));
        let Ok(request) = request else {
            tally.errors += 1;
            continue;
        };
        let outcome = match active.ready().await {
            Ok(()) => match active.send_request(request).await {
                // The body must be read whole before the connection can carry the next request.
                Ok(response) => {
                    let status = response.status();
                    response
                        .into_body()
                        .collect()
                        .await
                        .map(|collected| (status, collected.to_bytes()))
                        .map_err(|_| ())
                }
                Err(_) => Err(()),
            },
            Err(_) => Err(()),
        };
        previous_answer_at = Instant::now();
        if outcome.is_err() {
            // Reconnect for the next request.
            sender = None;
        }
        if !measured {
            tally.warmup_answered += u64::from(outcome.is_ok());
            continue;
        }
        match outcome {
            Ok((status, answer)) => {
                let latency_us = previous_answer_at.duration_since(counted_from).as_micros() as u64;
                tally.histogram.saturating_record(latency_us.max(1));
                if status.is_success() {
                    inspect(&answer);
                    tally.ok += 1;
                } else {
                    tally.non_2xx += 1;
                }
            }
            Err(()) => tally.errors += 1,
        }
    }
    tally
}
