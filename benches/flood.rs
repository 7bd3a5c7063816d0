//! The server's memory after a flood of batch requests (issue 15): the resident set of a
//! `pooch run --http` process once its input is read, before and after many connections send
//! 2,000 batches of 1,000 queries, and its peak.
//!
//! Run with `cargo bench --bench flood` (part of `./run.sh bench`). The release binary runs as
//! a child process on the default Sniffable data (generated once into
//! `target/bench-data/sniffable`) at 2 workers, so the figures are the server's alone, not the
//! load generator's. `FLOOD_CONNECTIONS` (default 128) connections share `FLOOD_BATCHES`
//! (default 2000) batches of `FLOOD_BATCH` (default 1000) queries, one request outstanding per
//! connection. The resident set is read from `/proc/PID/status` (`VmRSS`, and `VmHWM` for the
//! peak) 2 s after the input is read and 3 s after the last answer. `FLOOD_POOCH` names
//! another pooch binary to measure (an older build, for a before/after). Figures are printed
//! and written to `target/bench-results/flood.json`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pooch::generate::sniffable::{SniffableConfig, generate_sniffable};
use serde_json::json;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A field of `/proc/PID/status` in kB (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Starts `pooch run --http` on port 0 and returns the child, its address, and a channel that
/// receives a message once the input is read.
fn start_server(data: &Path, out: &Path) -> (Child, SocketAddr, mpsc::Receiver<()>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let _ = std::fs::remove_dir_all(out);
    let binary =
        std::env::var("FLOOD_POOCH").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pooch").into());
    let mut child = Command::new(&binary)
        .args(["run", "--quiet", "--pipeline"])
        .arg(root.join("pipelines/sniffable.toml"))
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(["--http", "127.0.0.1:0", "--", "-w", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pooch run --http");
    let stderr = child.stderr.take().expect("the child's stderr");
    let (address, address_seen) = mpsc::channel();
    let (read, input_read) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("pooch: serving on http://") {
                let _ = address.send(addr.parse::<SocketAddr>().expect("an address"));
            } else if line.starts_with("pooch: the input is read") {
                let _ = read.send(());
            } else {
                eprintln!("{line}");
            }
        }
    });
    let addr = address_seen
        .recv_timeout(Duration::from_secs(120))
        .expect("the server listens");
    (child, addr, input_read)
}

/// One batch of `size` queries, the `number`th of the flood.
fn batch_body(number: usize, size: usize) -> String {
    let queries: Vec<_> = (0..size)
        .map(|index| {
            json!({"dog": format!("dog-{}", (number * size + index) % 5000), "hashtags": ["ball", "park"]})
        })
        .collect();
    json!({ "queries": queries }).to_string()
}

/// Sends the batches `first, first + step, ...` below `batches` on one keep-alive connection;
/// the number answered 200.
fn send_batches(addr: SocketAddr, first: usize, step: usize, batches: usize, size: usize) -> u64 {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    let mut ok = 0;
    for number in (first..batches).step_by(step) {
        let body = batch_body(number, size);
        write!(
            writer,
            "POST /v1/predict HTTP/1.1\r\nHost: pooch\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send a batch");
        let mut status = String::new();
        reader.read_line(&mut status).expect("a status line");
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("a header");
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("a content length");
            }
        }
        let mut answer = vec![0; length];
        reader.read_exact(&mut answer).expect("the answer");
        if status.split_whitespace().nth(1) == Some("200") {
            ok += 1;
        }
    }
    ok
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("target/bench-data/sniffable");
    if !data.join("posts.csv").exists() {
        eprintln!("generating Sniffable data into {}", data.display());
        generate_sniffable(&SniffableConfig::default(), &data).expect("generate data");
    }
    let connections: usize = env_or("FLOOD_CONNECTIONS", 128);
    let batches: usize = env_or("FLOOD_BATCHES", 2000);
    let size: usize = env_or("FLOOD_BATCH", 1000);

    let (mut child, addr, input_read) = start_server(&data, &root.join("target/bench-out/flood"));
    let pid = child.id();
    input_read
        .recv_timeout(Duration::from_secs(600))
        .expect("the run reads its input");
    std::thread::sleep(Duration::from_secs(2));
    let before_kb = status_kb(pid, "VmRSS");
    let peak_before_kb = status_kb(pid, "VmHWM");

    let started = Instant::now();
    let senders: Vec<_> = (0..connections)
        .map(|first| {
            std::thread::spawn(move || send_batches(addr, first, connections, batches, size))
        })
        .collect();
    let ok: u64 = senders
        .into_iter()
        .map(|sender| sender.join().expect("a sender"))
        .sum();
    let flood_secs = started.elapsed().as_secs_f64();
    let right_after_kb = status_kb(pid, "VmRSS");
    std::thread::sleep(Duration::from_secs(3));
    let after_kb = status_kb(pid, "VmRSS");
    let peak_kb = status_kb(pid, "VmHWM");
    let _ = child.kill();
    let _ = child.wait();

    let ratio = after_kb as f64 / before_kb as f64;
    println!(
        "flood: {ok} of {batches} batches of {size} answered 200 on {connections} connections in {flood_secs:.1} s"
    );
    println!(
        "  RSS before {} MB, right after {} MB, 3 s after {} MB ({ratio:.2}x before); peak {} MB (before the flood {} MB)",
        before_kb / 1024,
        right_after_kb / 1024,
        after_kb / 1024,
        peak_kb / 1024,
        peak_before_kb / 1024
    );
    let results = json!({
        "connections": connections,
        "batches": batches,
        "batch_size": size,
        "answered_ok": ok,
        "flood_secs": flood_secs,
        "rss_before_kb": before_kb,
        "rss_right_after_kb": right_after_kb,
        "rss_after_kb": after_kb,
        "rss_after_over_before": ratio,
        "peak_rss_kb": peak_kb,
        "peak_rss_before_flood_kb": peak_before_kb,
    });
    let results_dir = root.join("target/bench-results");
    std::fs::create_dir_all(&results_dir).expect("results directory");
    let path = results_dir.join("flood.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&results).expect("json") + "\n",
    )
    .expect("write results");
    println!("results in {}", path.display());
}
