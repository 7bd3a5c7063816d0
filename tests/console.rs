//! The operator's console in a real browser: `pooch run --http` on generated data, the page
//! at `/` opened in headless Chromium through chromedriver (WebDriver, by `fantoccini`).
//!
//! It checks that the curves have points, the versions table has rows and the latency
//! histogram counts the predictions asked; that a pin through a row's button, confirmed,
//! changes what `/v1/models` reports; that a lost server shows as lost and the page recovers
//! when a server is back on the address. It takes a screenshot (in cargo's test temporary
//! folder, and at `POOCH_SCREENSHOT` if set).
//!
//! Without Chromium and chromedriver the test is skipped with a message saying how to get
//! them; under CI (`CI` set) their absence fails it. `POOCH_CHROMIUM` and
//! `POOCH_CHROMEDRIVER` name other binaries.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value as Json, json};

pub mod support;
use support::{POOCH, generate, sniffable_spec};

/// A binary named by `variable`, or the first of `names` on the PATH.
fn find_binary(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// A process killed when dropped, so that a failing test leaves nothing running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pooch run --http ADDR` on `data`, serving on after the input; its stderr lines are
/// collected.
fn start_pooch(data: &Path, out: &Path, addr: &str) -> (Killed, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(POOCH)
        .args(["run", "--quiet", "--pipeline"])
        .arg(sniffable_spec())
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(["--http", addr, "--", "-w", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pooch starts");
    let stderr = child.stderr.take().expect("stderr");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            collected.lock().unwrap().push(line);
        }
    });
    (Killed(child), lines)
}

/// Waits until a stderr line contains `text`, and returns it.
fn wait_line(lines: &Mutex<Vec<String>>, text: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(line) = lines
            .lock()
            .unwrap()
            .iter()
            .find(|line| line.contains(text))
        {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "pooch printed no line with {text:?} within {within:?}; its stderr:\n{}",
            lines.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client")
}

/// Runs `script` in the page until it returns true, or fails naming `what`.
async fn until(browser: &Client, what: &str, script: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let value = browser
            .execute(script, vec![])
            .await
            .expect("the script runs");
        if value == Json::Bool(true) {
            return;
        }
        if Instant::now() >= deadline {
            let state = browser
                .execute(
                    "return document.getElementById('connection').textContent",
                    vec![],
                )
                .await
                .unwrap_or(Json::Null);
            panic!(
                "the console never showed {what} within {within:?} (last: {value}; connection: {state})"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET /v1/models`, from a thread of its own: a blocking client may not run on the runtime.
fn models(base: &str) -> Json {
    let url = format!("{base}/v1/models");
    std::thread::spawn(move || -> Json {
        http()
            .get(url)
            .send()
            .expect("GET /v1/models")
            .json()
            .expect("JSON")
    })
    .join()
    .expect("the request thread")
}

async fn number(browser: &Client, script: &str) -> u64 {
    let value = browser
        .execute(script, vec![])
        .await
        .expect("the script runs");
    value
        .as_u64()
        .unwrap_or_else(|| panic!("`{script}` gave {value}, not a count"))
}

#[test]
fn the_console_shows_the_run_and_pins_through_its_button() {
    let (Some(chromium), Some(chromedriver)) = (
        find_binary(
            "POOCH_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        ),
        find_binary("POOCH_CHROMEDRIVER", &["chromedriver"]),
    ) else {
        let message = "SKIPPED the console's browser test: it needs Chromium and chromedriver \
                       (Debian/Ubuntu: `apt-get install chromium chromium-driver`; or set \
                       POOCH_CHROMIUM and POOCH_CHROMEDRIVER to their paths)";
        assert!(
            std::env::var_os("CI").is_none(),
            "{message}; under CI they must be installed (.ci/run does)"
        );
        eprintln!("{message}");
        return;
    };

    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    generate(&data, 300, 7);
    let (pooch, lines) = start_pooch(&data, &out, "127.0.0.1:0");
    let serving = wait_line(&lines, "serving on http://", Duration::from_secs(60));
    let address = serving
        .split("serving on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an address")
        .to_owned();
    let base = format!("http://{address}");
    // the input read, what the page shows stays put while the test clicks
    wait_line(&lines, "the input is read", Duration::from_secs(180));
    let client = http();
    for dog in 0..20 {
        let answer = client
            .post(format!("{base}/v1/predict"))
            .json(&json!({"dog": format!("dog-{dog}"), "hashtags": ["ball"]}))
            .send()
            .expect("a prediction");
        assert!(answer.status().is_success());
    }

    let port = free_port();
    let _driver = Killed(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("{} does not start: {error}", chromedriver.display())),
    );
    let driver_url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{driver_url}/status")).send().is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let pooch = runtime.block_on(async {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1500"],
            }),
        );
        let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver_url)
            .await
            .expect("a browser session through chromedriver");
        let result = drive(&browser, &base, &out, &data, &address, pooch).await;
        let _ = browser.close().await;
        result
    });
    drop(pooch);
}

/// What the test does in the browser; returns the server that runs at the end.
async fn drive(
    browser: &Client,
    base: &str,
    out: &Path,
    data: &Path,
    address: &str,
    pooch: Killed,
) -> Killed {
    let long = Duration::from_secs(60);
    browser
        .goto(&format!("{base}/"))
        .await
        .expect("the console loads");
    until(
        browser,
        "a live connection",
        "return document.getElementById('connection').dataset.state === 'live'",
        long,
    )
    .await;
    until(
        browser,
        "points on the curves",
        "return window.poochConsole.series.runLogloss.filter(v => v !== null).length > 0",
        long,
    )
    .await;
    until(
        browser,
        "rows in the versions table",
        "return document.querySelectorAll('#versions tbody tr').length > 0",
        long,
    )
    .await;
    until(
        browser,
        "predictions in the latency histogram",
        "return Number(document.getElementById('chart-latency').dataset.points) >= 20",
        long,
    )
    .await;
    let drawn = number(
        browser,
        "return window.poochConsole.charts.logloss.data[1].filter(v => v !== null).length",
    )
    .await;
    assert!(drawn > 0, "the logloss chart holds no points");
    let auc = number(
        browser,
        "return window.poochConsole.charts.auc.data[1].filter(v => v !== null).length",
    )
    .await;
    assert!(auc > 0, "the AUC chart holds no points");
    let rows = number(
        browser,
        "return document.querySelectorAll('#versions tbody tr').length",
    )
    .await;
    assert!(rows > 0);

    // pin a version that does not serve, through its row's button
    let models = models(base);
    let serving = models["models"][0]["serving"].as_u64();
    let target = number(
        browser,
        "const row = [...document.querySelectorAll('#versions tbody tr')].find(r => !r.classList.contains('serving') && r.querySelector('button.pin')); return row ? Number(row.dataset.version) : null",
    )
    .await;
    assert_ne!(Some(target), serving);
    let button = browser
        .find(Locator::Css(&format!(
            "#versions tr[data-version=\"{target}\"] button.pin"
        )))
        .await
        .expect("the row's pin button");
    button.click().await.expect("the button clicks");
    browser
        .accept_alert()
        .await
        .expect("a confirmation asked, and accepted");
    until(
        browser,
        "the pin's result",
        "return document.getElementById('action-result').textContent.includes('done')",
        long,
    )
    .await;
    let models = self::models(base);
    assert_eq!(
        models["models"][0]["pinned"],
        json!(target),
        "{}",
        models["models"][0]["pinned"]
    );
    assert_eq!(models["models"][0]["serving"], json!(target));
    until(
        browser,
        "the pinned version in its tile",
        &format!("return document.getElementById('tile-pinned').textContent === 'v{target}'"),
        long,
    )
    .await;

    let screenshot = browser.screenshot().await.expect("a screenshot");
    assert!(
        screenshot.starts_with(b"\x89PNG"),
        "the screenshot is a PNG"
    );
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    std::fs::write(&path, &screenshot).expect("the screenshot is written");
    eprintln!("console screenshot: {}", path.display());
    if let Some(extra) = std::env::var_os("POOCH_SCREENSHOT") {
        std::fs::write(&extra, &screenshot).expect("the screenshot is written");
    }

    // the server goes: the page says so; a server back on the address: the page recovers
    drop(pooch);
    until(
        browser,
        "a lost connection",
        "return document.getElementById('connection').dataset.state === 'lost'",
        long,
    )
    .await;
    let (again, lines) = start_pooch(data, out, address);
    wait_line(&lines, "serving on http://", long);
    until(
        browser,
        "the connection back",
        "return document.getElementById('connection').dataset.state === 'live'",
        long,
    )
    .await;
    again
}
