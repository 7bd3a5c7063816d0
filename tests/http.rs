//! The HTTP endpoint against a fake backend: answers, every class of bad request, limits,
//! timeouts, panics, readiness and metrics. Each test starts its own server on port 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pooch::serve::http::{self, ApiError, Backend, HttpConfig, HttpServer, Prediction};
use serde_json::{Value, json};

/// Scores a dog by a hash of its name; `"dog": "panic"` panics, a set delay makes it slow.
#[derive(Default)]
struct FakeBackend {
    ready: AtomicBool,
    delay_ms: AtomicU64,
    queries: AtomicU64,
}

impl Backend for FakeBackend {
    fn predict(&self, query: &Value) -> Result<Prediction, ApiError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let delay_ms = self.delay_ms.load(Ordering::Relaxed);
        if delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(delay_ms));
        }
        let dog = match query.get("dog") {
            Some(Value::String(dog)) => dog,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "field `dog` must be a string, got {other}"
                )));
            }
            None => return Err(ApiError::BadRequest("missing field `dog`".into())),
        };
        let model = query
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("pooch");
        if model != "pooch" {
            return Err(ApiError::NotFound(format!("unknown model `{model}`")));
        }
        if dog == "panic" {
            panic!("the fake backend was asked to panic");
        }
        Ok(Prediction {
            probability: score(dog),
            model: "pooch".into(),
            version: Some(3),
            features_epoch: Some(42),
        })
    }

    fn models(&self) -> Value {
        json!({"pooch": {"versions": [1, 2, 3], "serving": 3, "pinned": null}})
    }

    fn pin(&self, model: &str, version: u64) -> Result<Value, ApiError> {
        if model != "pooch" {
            return Err(ApiError::NotFound(format!("unknown model `{model}`")));
        }
        if !(1..=3).contains(&version) {
            return Err(ApiError::NotFound(format!(
                "model `pooch` holds no version {version}"
            )));
        }
        Ok(json!({"model": model, "pinned": version}))
    }

    fn unpin(&self, model: &str) -> Result<Value, ApiError> {
        match model {
            "pooch" => Ok(json!({"model": model, "pinned": null, "serving": 3})),
            _ => Err(ApiError::NotFound(format!("unknown model `{model}`"))),
        }
    }

    fn rollback(&self, model: &str) -> Result<Value, ApiError> {
        match model {
            "pooch" => Ok(json!({"model": model, "serving": 2})),
            _ => Err(ApiError::NotFound(format!("unknown model `{model}`"))),
        }
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn metrics(&self, out: &mut String) {
        out.push_str("# TYPE fake_backend_queries_total counter\n");
        out.push_str(&format!(
            "fake_backend_queries_total {}\n",
            self.queries.load(Ordering::Relaxed)
        ));
    }
}

fn score(dog: &str) -> f64 {
    let hash = dog
        .bytes()
        .fold(7u64, |hash, byte| hash.wrapping_mul(31) + byte as u64);
    (hash % 1000) as f64 / 1000.0
}

fn start(config: HttpConfig) -> (HttpServer, Arc<FakeBackend>) {
    let backend = Arc::new(FakeBackend::default());
    backend.ready.store(true, Ordering::Relaxed);
    let config = HttpConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    let server = http::spawn(config, backend.clone()).expect("the server starts");
    (server, backend)
}

fn url(server: &HttpServer, path: &str) -> String {
    format!("http://{}{path}", server.local_addr())
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// POSTs `body` and returns the status and the JSON answer.
fn post(server: &HttpServer, path: &str, body: impl Into<reqwest::blocking::Body>) -> (u16, Value) {
    let response = client()
        .post(url(server, path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .expect("an answer");
    let status = response.status().as_u16();
    let text = response.text().expect("a body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("answer is not JSON ({error}): {text}"));
    (status, json)
}

fn get(server: &HttpServer, path: &str) -> (u16, String) {
    let response = client().get(url(server, path)).send().expect("an answer");
    (response.status().as_u16(), response.text().expect("a body"))
}

fn error_of(answer: &Value) -> &str {
    answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {answer}"))
}

/// The server still answers a good query.
fn assert_serving(server: &HttpServer) {
    let (status, answer) = post(server, "/v1/predict", r#"{"dog": "dog-1"}"#);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["probability"], json!(score("dog-1")));
}

#[test]
fn single_and_batch_predictions() {
    let (server, _backend) = start(HttpConfig::default());
    let (status, answer) = post(
        &server,
        "/v1/predict",
        r#"{"dog": "dog-17", "hashtags": ["ball", "park"]}"#,
    );
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"probability": score("dog-17"), "model": "pooch", "version": 3, "features_epoch": 42})
    );

    // One bad query in a batch fails alone.
    let (status, answer) = post(
        &server,
        "/v1/predict",
        r#"{"queries": [{"dog": "a"}, {"hashtags": []}, 5, {"dog": "b", "model": "other"}, {"dog": "c"}]}"#,
    );
    assert_eq!(status, 200, "{answer}");
    let predictions = answer["predictions"]
        .as_array()
        .expect("a predictions array");
    assert_eq!(predictions.len(), 5);
    assert_eq!(predictions[0]["probability"], json!(score("a")));
    assert_eq!(predictions[1]["error"], json!("missing field `dog`"));
    assert_eq!(
        predictions[2]["error"],
        json!("queries[2] is not a JSON object")
    );
    assert_eq!(predictions[3]["error"], json!("unknown model `other`"));
    assert_eq!(predictions[4]["probability"], json!(score("c")));
}

#[test]
fn a_flood_of_concurrent_queries_all_succeed_on_kept_alive_connections() {
    let (server, backend) = start(HttpConfig::default());
    let clients = 16;
    let per_client = 250;
    std::thread::scope(|scope| {
        for client_index in 0..clients {
            let server = &server;
            scope.spawn(move || {
                let client = client();
                for request in 0..per_client {
                    let dog = format!("dog-{client_index}-{request}");
                    let response = client
                        .post(url(server, "/v1/predict"))
                        .body(json!({"dog": dog}).to_string())
                        .send()
                        .expect("an answer");
                    assert_eq!(response.status().as_u16(), 200);
                    let answer: Value = response.json().expect("JSON");
                    assert_eq!(answer["probability"], json!(score(&dog)));
                }
            });
        }
    });
    assert_eq!(
        backend.queries.load(Ordering::Relaxed),
        clients * per_client
    );
    // Each client reused its connection rather than opening one per request.
    let (_, metrics) = get(&server, "/metrics");
    let connections = metric_value(&metrics, "pooch_http_connections_total");
    assert!(
        connections <= (clients + 4) as f64,
        "{connections} connections for {clients} keep-alive clients"
    );
}

#[test]
fn each_bad_request_gets_its_4xx_and_a_message_and_the_server_goes_on() {
    let (server, _backend) = start(HttpConfig {
        max_batch: 10,
        ..HttpConfig::default()
    });

    let (status, answer) = post(&server, "/v1/predict", "{\"dog\": \n  ");
    assert_eq!(status, 400);
    assert!(
        error_of(&answer).contains("invalid JSON")
            && error_of(&answer).contains("at line 2 column"),
        "{answer}"
    );
    assert_serving(&server);

    let (status, answer) = post(&server, "/v1/predict", r#"{"hashtags": ["ball"]}"#);
    assert_eq!((status, error_of(&answer)), (400, "missing field `dog`"));
    assert_serving(&server);

    let (status, answer) = post(&server, "/v1/predict", "[1, 2]");
    assert_eq!(status, 400);
    assert!(
        error_of(&answer).contains("must be a JSON object"),
        "{answer}"
    );

    let (status, answer) = post(&server, "/v1/predict", r#"{"queries": 3}"#);
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("`queries`"), "{answer}");

    let (status, answer) = post(&server, "/v1/predict", "");
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("empty"), "{answer}");

    let (status, answer) = post(&server, "/v1/predict", r#"{"dog": "d", "model": "nope"}"#);
    assert_eq!((status, error_of(&answer)), (404, "unknown model `nope`"));
    assert_serving(&server);

    let oversized = json!({"dog": "d", "padding": "x".repeat(100 * 1024)}).to_string();
    let (status, answer) = post(&server, "/v1/predict", oversized);
    assert_eq!(status, 413);
    assert!(error_of(&answer).contains("65536 bytes"), "{answer}");
    assert_serving(&server);

    let batch = json!({"queries": vec![json!({"dog": "d"}); 11]}).to_string();
    let (status, answer) = post(&server, "/v1/predict", batch);
    assert_eq!(status, 413);
    assert_eq!(
        error_of(&answer),
        "batch of 11 queries exceeds the limit of 10"
    );

    let (status, body) = get(&server, "/v1/nothing-here");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, error_of(&answer)),
        (404, "no endpoint at /v1/nothing-here")
    );

    let (status, body) = get(&server, "/v1/predict");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, error_of(&answer)),
        (405, "method GET is not allowed on /v1/predict")
    );
    assert_serving(&server);
}

#[test]
fn model_management() {
    let (server, _backend) = start(HttpConfig::default());
    let (status, body) = get(&server, "/v1/models");
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(models["pooch"]["serving"], json!(3));

    assert_eq!(
        post(&server, "/v1/models/pooch/pin", r#"{"version": 2}"#),
        (200, json!({"model": "pooch", "pinned": 2}))
    );
    let (status, answer) = post(&server, "/v1/models/pooch/pin", r#"{"version": 9}"#);
    assert_eq!(
        (status, error_of(&answer)),
        (404, "model `pooch` holds no version 9")
    );
    let (status, answer) = post(&server, "/v1/models/pooch/pin", r#"{"version": -1}"#);
    assert_eq!(status, 400);
    assert!(
        error_of(&answer).contains("non-negative integer, got -1"),
        "{answer}"
    );
    let (status, answer) = post(&server, "/v1/models/pooch/pin", r#"{}"#);
    assert_eq!(status, 400);
    assert!(
        error_of(&answer).contains("missing field `version`"),
        "{answer}"
    );
    let (status, answer) = post(&server, "/v1/models/cat/pin", r#"{"version": 1}"#);
    assert_eq!((status, error_of(&answer)), (404, "unknown model `cat`"));

    assert_eq!(
        post(&server, "/v1/models/pooch/unpin", ""),
        (200, json!({"model": "pooch", "pinned": null, "serving": 3}))
    );
    assert_eq!(
        post(&server, "/v1/models/pooch/rollback", ""),
        (200, json!({"model": "pooch", "serving": 2}))
    );
    assert_eq!(post(&server, "/v1/models/cat/rollback", "").0, 404);
}

#[test]
fn a_slowloris_client_is_cut_off_and_does_not_stop_others() {
    let (server, _backend) = start(HttpConfig {
        header_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    });
    // Half the headers, then silence.
    let mut slow = TcpStream::connect(server.local_addr()).unwrap();
    slow.write_all(b"POST /v1/predict HTTP/1.1\r\nHost: pooch\r\nContent-")
        .unwrap();
    let started = Instant::now();
    // Others are answered meanwhile.
    assert_serving(&server);
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buffer = Vec::new();
    // The server closes the connection: end of stream (or a reset), not a read timeout.
    let closed = match slow.read_to_end(&mut buffer) {
        Ok(_) => true,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the stalled connection was not closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    assert_serving(&server);
}

#[test]
fn a_trickled_body_times_out_with_408() {
    let (server, _backend) = start(HttpConfig {
        body_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    });
    let mut slow = TcpStream::connect(server.local_addr()).unwrap();
    slow.write_all(
        b"POST /v1/predict HTTP/1.1\r\nHost: pooch\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"dog\":",
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("request body not received within 300 ms"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_serving(&server);
}

#[test]
fn a_slow_backend_hits_the_request_timeout() {
    let (server, backend) = start(HttpConfig {
        request_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(200),
        ..HttpConfig::default()
    });
    // 40 queries of 50 ms: 2 s of work, cut at the 300 ms deadline between queries.
    backend.delay_ms.store(50, Ordering::Relaxed);
    let batch = json!({"queries": vec![json!({"dog": "d"}); 40]}).to_string();
    let started = Instant::now();
    let (status, answer) = post(&server, "/v1/predict", batch);
    let waited = started.elapsed();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        error_of(&answer),
        "request not handled within the 300 ms request timeout"
    );
    assert!(
        waited < Duration::from_millis(1_500),
        "answered after {waited:?}"
    );
    assert!(backend.queries.load(Ordering::Relaxed) < 40);
    backend.delay_ms.store(0, Ordering::Relaxed);
    assert_serving(&server);
}

#[test]
fn a_panicking_backend_gives_500_and_the_next_request_succeeds() {
    let (server, _backend) = start(HttpConfig::default());
    for _ in 0..3 {
        let (status, answer) = post(&server, "/v1/predict", r#"{"dog": "panic"}"#);
        assert_eq!(status, 500);
        assert!(
            error_of(&answer).contains("the fake backend was asked to panic"),
            "{answer}"
        );
        assert_serving(&server);
    }
}

#[test]
fn readiness_follows_the_backend_and_health_is_constant() {
    let (server, backend) = start(HttpConfig::default());
    assert_eq!(get(&server, "/readyz").0, 200);
    backend.ready.store(false, Ordering::Relaxed);
    let (status, body) = get(&server, "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("no model loaded"), "{body}");
    assert_eq!(get(&server, "/healthz").0, 200);
    backend.ready.store(true, Ordering::Relaxed);
    assert_eq!(get(&server, "/readyz").0, 200);
}

/// The value of a sample line `name value` (exact name and labels).
fn metric_value(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(name_and_labels)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|value| value.parse().expect("a number"))
        })
        .unwrap_or_else(|| panic!("no {name_and_labels} in:\n{metrics}"))
}

#[test]
fn an_idle_server_gives_a_floods_memory_back_once_and_not_for_a_trickle() {
    let (server, _backend) = start(HttpConfig::default());
    let trims = |server: &HttpServer| {
        let (_, metrics) = get(server, "/metrics");
        metric_value(&metrics, "pooch_http_memory_trims_total")
    };
    // a trickle of single queries is not a flood
    for _ in 0..20 {
        assert_serving(&server);
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(trims(&server), 0.0);
    // 11 batches of 1000 are: once idle, the server trims, once
    let batch = json!({"queries": (0..1000).map(|index| json!({"dog": format!("dog-{index}")})).collect::<Vec<_>>()});
    for _ in 0..11 {
        let (status, answer) = post(&server, "/v1/predict", batch.to_string());
        assert_eq!(status, 200, "{answer}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while trims(&server) == 0.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(trims(&server), 1.0, "one trim after the flood");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(trims(&server), 1.0, "no trim while nothing new is answered");
}

#[test]
fn metrics_count_requests_and_time_them() {
    let (server, _backend) = start(HttpConfig::default());
    for _ in 0..5 {
        assert_serving(&server);
    }
    post(&server, "/v1/predict", "not json");
    get(&server, "/nowhere");
    let (status, metrics) = get(&server, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric_value(
            &metrics,
            r#"pooch_http_requests_total{endpoint="predict",status="200"}"#
        ),
        5.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"pooch_http_requests_total{endpoint="predict",status="400"}"#
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"pooch_http_requests_total{endpoint="other",status="404"}"#
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"pooch_http_request_duration_seconds_count{endpoint="predict"}"#
        ),
        6.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"pooch_http_request_duration_seconds_bucket{endpoint="predict",le="+Inf"}"#
        ),
        6.0
    );
    assert!(metrics.contains("# TYPE pooch_http_request_duration_seconds histogram"));
    // The backend's own lines follow the server's.
    assert_eq!(metric_value(&metrics, "fake_backend_queries_total"), 5.0);
}

#[test]
fn shutdown_closes_the_listener_and_a_taken_address_is_named() {
    let (server, backend) = start(HttpConfig::default());
    let addr: SocketAddr = server.local_addr();
    let taken = http::spawn(
        HttpConfig {
            addr,
            ..HttpConfig::default()
        },
        backend,
    );
    let error = taken.err().expect("the address is taken");
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
    let zero = http::spawn(
        HttpConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            max_in_flight: 0,
            ..HttpConfig::default()
        },
        Arc::new(FakeBackend::default()),
    );
    assert_eq!(
        zero.err().expect("a zero limit is refused").to_string(),
        "HTTP server setting `max_in_flight` must be at least 1"
    );
    assert_serving(&server);
    server.shutdown();
    assert!(TcpStream::connect(addr).is_err(), "still listening");
}

#[test]
fn requests_beyond_max_in_flight_are_shed_with_503() {
    let (server, _backend) = start(HttpConfig {
        max_in_flight: 1,
        body_timeout: Duration::from_millis(800),
        ..HttpConfig::default()
    });
    // A request whose body never finishes holds the only slot until its body timeout.
    let mut stalled = TcpStream::connect(server.local_addr()).unwrap();
    stalled
        .write_all(b"POST /v1/predict HTTP/1.1\r\nHost: pooch\r\nContent-Length: 50\r\n\r\n{")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (status, body) = get(&server, "/healthz");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, error_of(&answer)),
        (503, "server overloaded: 1 requests already in progress")
    );
    // Once the stalled request has timed out, the slot is free again.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stalled.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 408"));
    assert_serving(&server);
}

#[test]
fn the_load_generator_counts_answers_and_keeps_its_rate() {
    use loadgen::LoadConfig;
    let (server, backend) = start(HttpConfig::default());
    let config = LoadConfig {
        addr: server.local_addr(),
        path: "/v1/predict".into(),
        connections: 4,
        rate_per_sec: Some(1000.0),
        duration: Duration::from_millis(1000),
        warmup: Duration::from_millis(200),
        threads: 1,
    };
    let report = loadgen::run(&config, |request| {
        format!(r#"{{"dog": "dog-{request}"}}"#).into_bytes()
    })
    .unwrap();
    assert_eq!((report.errors, report.non_2xx), (0, 0));
    // Open loop: the schedule, not the server, sets the count.
    assert!(
        (900..=1010).contains(&(report.ok + report.unsent)),
        "{report:?}"
    );
    assert_eq!(report.histogram.len(), report.ok);
    assert!(report.p50_us >= 1 && report.p50_us <= report.p99_us && report.p99_us <= report.max_us);
    assert_eq!(
        backend.queries.load(Ordering::Relaxed),
        report.ok + report.warmup_answered
    );

    // Closed loop, to a path that answers 404: counted as answered but not 2xx.
    let report = loadgen::run(
        &LoadConfig {
            path: "/v1/nowhere".into(),
            rate_per_sec: None,
            duration: Duration::from_millis(300),
            warmup: Duration::ZERO,
            ..config.clone()
        },
        |_| b"{}".to_vec(),
    )
    .unwrap();
    assert!(
        report.non_2xx > 0 && report.ok == 0 && report.errors == 0,
        "{report:?}"
    );

    // Nothing listening: errors, not a hang or a panic.
    let addr = server.local_addr();
    server.shutdown();
    let report = loadgen::run(
        &LoadConfig {
            addr,
            rate_per_sec: None,
            duration: Duration::from_millis(200),
            warmup: Duration::ZERO,
            ..config
        },
        |_| b"{}".to_vec(),
    )
    .unwrap();
    assert!(report.errors > 0 && report.ok == 0, "{report:?}");
}

#[test]
fn beyond_max_connections_new_clients_wait_for_a_free_slot() {
    let (server, _backend) = start(HttpConfig {
        max_connections: 1,
        header_timeout: Duration::from_millis(600),
        ..HttpConfig::default()
    });
    // An idle connection takes the only slot until the header timeout closes it.
    let idle = TcpStream::connect(server.local_addr()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    assert_serving(&server);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "answered after {waited:?} while the only slot was taken"
    );
    drop(idle);
}
