//! What the root crate's integration tests share: the `pooch` binary and runs of it,
//! generated Sniffable data, a tiny one-source spec, and reading a run's outputs.
//!
//! Each test file includes it as `pub mod support;`. Every test file is its own crate and
//! uses part of this module; being public, the rest is not reported as unused there.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;

/// The `pooch` binary cargo built for these tests.
pub const POOCH: &str = env!("CARGO_BIN_EXE_pooch");

/// The root crate's folder, where `pipelines/` and `tests/` are.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped Sniffable spec, `pipelines/sniffable.toml`.
pub fn sniffable_spec() -> PathBuf {
    root().join("pipelines/sniffable.toml")
}

/// Runs `pooch ARGS` to the end.
pub fn pooch(args: &[&str]) -> Output {
    Command::new(POOCH)
        .args(args)
        .output()
        .expect("pooch starts")
}

/// Fails the test, with pooch's stderr, unless it exited successfully.
pub fn check(output: &Output) {
    assert!(
        output.status.success(),
        "pooch failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Generates Sniffable data for `dogs` dogs over `days` days into `dir`.
pub fn generate(dir: &Path, dogs: usize, days: u32) {
    check(
        &Command::new(POOCH)
            .args(["generate", "sniffable", "--out"])
            .arg(dir)
            .args(["--dogs", &dogs.to_string(), "--days", &days.to_string()])
            .output()
            .expect("pooch starts"),
    );
}

/// `pooch run --quiet --pipeline SPEC --out OUT EXTRA -- TIMELY`, to the end.
pub fn run(spec: &Path, out: &Path, extra: &[&str], timely: &[&str]) -> Output {
    Command::new(POOCH)
        .args(["run", "--quiet", "--pipeline"])
        .arg(spec)
        .arg("--out")
        .arg(out)
        .args(extra)
        .arg("--")
        .args(timely)
        .output()
        .expect("pooch starts")
}

/// A finished run's `summary.json`.
pub fn summary(out: &Path) -> Json {
    let text = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary is JSON")
}

/// The lines of a JSON Lines file, parsed.
pub fn json_lines(path: &Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// The lines of a file, sorted.
pub fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .expect("readable")
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// Writes `dir/hosts`, a timely hostfile for two local processes on ports nobody listens on
/// right now, and returns its path.
pub fn two_process_hostfile(dir: &Path) -> String {
    let first = TcpListener::bind("127.0.0.1:0").expect("bind");
    let second = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = |listener: &TcpListener| listener.local_addr().expect("addr").port();
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", port(&first), port(&second)),
    )
    .expect("hostfile");
    hosts.to_str().expect("utf-8").to_owned()
}

/// A pipeline over one hand-made source of `user,score,time` lines: an example per line,
/// labelled by a score of 3 or more, with the user and one aggregate of the user's lines as
/// features. The pipeline, its source and its model share one name.
pub struct TinySpec {
    /// The pipeline's, source's and model's name.
    pub name: String,
    /// The source's file, relative to the spec.
    pub path: String,
    /// `csv`, `tsv` or `jsonl`.
    pub format: String,
    /// Whether the file starts with a header line.
    pub header: bool,
    /// The aggregate feature's function over the user's lines: `count`, or one that reads
    /// `score` (`sum`, `mean`, `last`).
    pub function: String,
    /// The field the label reads; `score` unless a test misspells it.
    pub label_field: String,
}

impl TinySpec {
    /// A spec named `name` reading `NAME.csv`, with a header, counting each user's lines.
    pub fn new(name: &str) -> Self {
        TinySpec {
            name: name.to_owned(),
            path: format!("{name}.csv"),
            format: "csv".to_owned(),
            header: true,
            function: "count".to_owned(),
            label_field: "score".to_owned(),
        }
    }

    /// The spec's text.
    pub fn toml(&self) -> String {
        let TinySpec {
            name,
            path,
            format,
            header,
            function,
            label_field,
        } = self;
        let field = if function == "count" {
            ""
        } else {
            "field = \"score\"\n"
        };
        format!(
            r#"[pipeline]
name = "{name}"
tick_secs = 10

[[sources]]
name = "{name}"
path = "{path}"
format = "{format}"
header = {header}
time = "time"
fields = [
  {{ name = "user", type = "string", required = true }},
  {{ name = "score", type = "int" }},
  {{ name = "time", type = "timestamp" }},
]

[examples]
source = "{name}"
entity = "user"

[label]
kind = "threshold"
field = "{label_field}"
at_least = 3

[[features]]
name = "user"
kind = "categorical"
field = "user"

[[features]]
name = "user_{function}"
kind = "aggregate"
source = "{name}"
key = "user"
function = "{function}"
{field}
[model]
name = "{name}"
bits = 10
"#
        )
    }

    /// Writes the spec to `dir/spec.toml` and returns that path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("spec.toml");
        std::fs::write(&path, self.toml()).expect("spec");
        path
    }
}

/// Runs `options` with the HTTP endpoint on a free loopback port, serving after its input is
/// read; `with` is called with the endpoint's address (`http://…`) while the run goes on, then
/// the run is stopped and its summary returned with what `with` gave.
pub fn serve_during<T: Send + 'static>(
    mut options: pooch::runtime::RunOptions,
    with: impl FnOnce(String) -> T + Send + 'static,
) -> (Option<pooch::runtime::Summary>, T) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    options.http = Some(pooch::serve::http::HttpConfig {
        addr: "127.0.0.1:0".parse().expect("an address"),
        ..pooch::serve::http::HttpConfig::default()
    });
    options.serve_after_input = true;
    let (bound, address) = std::sync::mpsc::channel();
    options.http_bound = Some(bound);
    let stop = Arc::new(AtomicBool::new(false));
    let run = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || pooch::runtime::run_until(options, None, stop))
    };
    let address = address
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the endpoint listens");
    let result = with(format!("http://{address}"));
    stop.store(true, Ordering::Relaxed);
    let summary = run
        .join()
        .expect("the run thread")
        .expect("the run succeeds");
    (summary, result)
}

/// An HTTP client that gives up on an answer after 10 s.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("a client")
}
