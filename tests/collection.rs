//! Collection end to end: following growing files, reading whatever arrives, retractions,
//! the same facts at any layout, and backpressure.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use pooch::runtime::{RunOptions, run_until};
use proptest::prelude::*;
use serde_json::Value as Json;

pub mod support;
use support::{
    POOCH, TinySpec, check, generate, run, sniffable_spec, summary, two_process_hostfile,
};

/// Events of users with a score; the label is a high score.
fn events_spec() -> TinySpec {
    TinySpec::new("events")
}

#[test]
fn following_a_growing_file_reads_every_fact_once_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spec = events_spec().write(dir.path());
    let data = dir.path().join("events.csv");
    std::fs::write(&data, "").expect("empty file");
    let out = dir.path().join("out");

    let mut child = Command::new(POOCH)
        .args([
            "run",
            "--quiet",
            "--follow",
            "--poll-ms",
            "10",
            "--pipeline",
        ])
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .args(["--", "-w", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pooch starts");

    // the header and 300 lines, appended in pieces: some lines split over two writes, one
    // of them (line 150) with a pause in the middle
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&data)
        .expect("append");
    let mut write = |bytes: &[u8]| {
        file.write_all(bytes).expect("write");
        file.flush().expect("flush");
    };
    write(b"user,sco");
    std::thread::sleep(Duration::from_millis(50));
    write(b"re,time\n");
    for index in 0..300u64 {
        let line = format!("u{},{},{}\n", index % 7, index % 5, 1_000 + index);
        if index % 10 == 3 || index == 150 {
            let (head, tail) = line.as_bytes().split_at(line.len() / 2);
            write(head);
            if index == 150 {
                std::thread::sleep(Duration::from_millis(300));
            }
            write(tail);
        } else {
            write(line.as_bytes());
        }
        if index % 50 == 0 {
            std::thread::sleep(Duration::from_millis(40));
        }
    }
    std::thread::sleep(Duration::from_millis(700));
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "pooch did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = child
        .stderr
        .take()
        .map(std::io::read_to_string)
        .and_then(Result::ok)
        .unwrap_or_default();
    assert!(
        exit.success(),
        "pooch exited with {exit} after SIGTERM:\n{stderr}"
    );

    let followed = summary(&out);
    assert_eq!(followed["stopped_by_signal"], true);
    assert_eq!(followed["facts_read"], 300, "{followed}");
    assert_eq!(followed["dead_lettered"], 0);
    assert!(
        out.join("snapshots/events/MANIFEST.json").is_file(),
        "a final snapshot is written"
    );

    // reading the finished file in one go reads the very same facts
    let whole = dir.path().join("whole");
    check(&run(&spec, &whole, &[], &["-w", "1"]));
    assert_eq!(summary(&whole)["facts_digest"], followed["facts_digest"]);
}

/// Posts that can be withdrawn by an `op` line, likes that a corrections source withdraws.
const RETRACTION_SPEC: &str = r#"
[pipeline]
name = "corrections"
tick_secs = 10

[[sources]]
name = "posts"
path = "posts.csv"
format = "csv"
header = true
time = "time"
key = ["post"]
op = "op"
fields = [
  { name = "post", type = "string" },
  { name = "dog", type = "string", required = true },
  { name = "op", type = "string" },
  { name = "time", type = "timestamp" },
]

[[sources]]
name = "likes"
path = "likes.csv"
format = "csv"
header = true
time = "time"
key = ["post", "liker"]
fields = [
  { name = "post", type = "string" },
  { name = "liker", type = "string" },
  { name = "time", type = "timestamp" },
]

[[sources]]
name = "unlikes"
path = "unlikes.csv"
format = "csv"
header = true
time = "time"
corrects = "likes"
key = ["post", "liker"]
fields = [
  { name = "post", type = "string" },
  { name = "liker", type = "string" },
  { name = "time", type = "timestamp" },
]

[examples]
source = "posts"
id = "post"
entity = "dog"

[label]
kind = "count_within"
source = "likes"
key = "post"
within_secs = 30
at_least = 2

[[features]]
name = "posts"
kind = "aggregate"
source = "posts"
key = "dog"
function = "count"

[[features]]
name = "posts_25s"
kind = "aggregate"
source = "posts"
key = "dog"
function = "count"
window_secs = 25

[[features]]
name = "likes"
kind = "aggregate"
source = "likes"
key = "post"
via = { source = "posts", key = "post", value = "dog" }
function = "count"

[[features]]
name = "likes_40s"
kind = "aggregate"
source = "likes"
key = "post"
via = { source = "posts", key = "post", value = "dog" }
function = "count"
window_secs = 40

[model]
name = "dogs"
bits = 10
"#;

fn answers_by_query(out: &Path) -> Vec<(String, Json)> {
    let mut answers: Vec<(String, Json)> = std::fs::read_to_string(out.join("answers.jsonl"))
        .expect("answers")
        .lines()
        .map(|line| {
            let answer: Json = serde_json::from_str(line).expect("JSON answer");
            (
                answer["query"].as_str().expect("query id").to_owned(),
                answer["features"].clone(),
            )
        })
        .collect();
    answers.sort_by(|a, b| a.0.cmp(&b.0));
    answers
}

#[test]
fn retractions_update_every_feature_exactly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write("spec.toml", RETRACTION_SPEC);
    // asked at the same time in both runs, after every fact and correction
    write(
        "queries.jsonl",
        "{\"id\": \"d1\", \"dog\": \"d1\", \"time\": 60}\n{\"id\": \"d2\", \"dog\": \"d2\", \"time\": 60}\n{\"id\": \"d3\", \"dog\": \"d3\", \"time\": 60}\n",
    );

    // with corrections: post p3 is withdrawn at 35 (its likes go with it), a like at 52, and a
    // withdrawal of a post that never was changes nothing
    write(
        "posts.csv",
        "post,dog,op,time\np1,d1,,10\np2,d1,,12\np3,d2,,14\np4,d2,,20\np5,d3,,31\np3,d2,retract,35\npX,d3,retract,36\np6,d1,,41\np7,d2,,44\n",
    );
    write(
        "likes.csv",
        "post,liker,time\np1,d2,11\np3,d1,15\np3,d3,16\np4,d1,22\np5,d1,33\np1,d3,40\np6,d2,45\n",
    );
    write("unlikes.csv", "post,liker,time\np4,d1,52\np9,d9,53\n");
    let corrected = dir.path().join("corrected");
    let spec = dir.path().join("spec.toml");
    let queries = dir.path().join("queries.jsonl");
    let queries_arg = ["--queries", queries.to_str().expect("utf-8")];
    check(&run(&spec, &corrected, &queries_arg, &["-w", "2"]));

    // as if the withdrawn facts had never been
    write(
        "posts.csv",
        "post,dog,op,time\np1,d1,,10\np2,d1,,12\np4,d2,,20\np5,d3,,31\np6,d1,,41\np7,d2,,44\n",
    );
    write(
        "likes.csv",
        "post,liker,time\np1,d2,11\np3,d1,15\np3,d3,16\np5,d1,33\np1,d3,40\np6,d2,45\n",
    );
    write("unlikes.csv", "post,liker,time\n");
    let clean = dir.path().join("clean");
    check(&run(&spec, &clean, &queries_arg, &["-w", "1"]));

    let (with_corrections, without) = (answers_by_query(&corrected), answers_by_query(&clean));
    assert_eq!(with_corrections.len(), 3);
    assert_eq!(with_corrections, without);
    // and the features say what the surviving facts say
    let d2 = &with_corrections[1].1;
    assert_eq!(d2["posts"], 2.0, "{d2}");
    assert_eq!(d2["likes"], 0.0, "{d2}");
    assert_eq!(with_corrections[0].1["likes"], 3.0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random bytes and mutated lines: the run never fails, and every line is either a fact
    /// or a dead letter.
    #[test]
    fn every_line_is_a_fact_or_a_dead_letter(
        lines in proptest::collection::vec(line(), 0..60),
        format in prop_oneof![Just("csv"), Just("tsv"), Just("jsonl")],
        workers in 1usize..3,
    ) {
        let dir = tempfile::tempdir().expect("temporary directory");
        TinySpec {
            format: format.to_owned(),
            header: false,
            path: "events.data".to_owned(),
            ..events_spec()
        }
        .write(dir.path());
        let mut bytes = Vec::new();
        for line in &lines {
            bytes.extend_from_slice(&line.render(format));
        }
        std::fs::write(dir.path().join("events.data"), &bytes).expect("data");
        // every `\n` ends a line, and trailing bytes without one are a line too
        let total = bytes.split(|&byte| byte == b'\n').count() - usize::from(bytes.is_empty() || bytes.ends_with(b"\n"));

        let mut options = RunOptions::new(dir.path().join("spec.toml"), dir.path().join("out"));
        options.timely_args = vec!["-w".into(), workers.to_string()];
        options.progress = false;
        let summary = run_until(options, None, Arc::new(AtomicBool::new(false)))
            .expect("the run completes")
            .expect("process 0 summary");
        prop_assert_eq!(
            summary.facts_read + summary.dead_lettered,
            total as u64,
            "{:?}",
            summary
        );
    }
}

/// One line of test input: a good event, a mangled one, or noise.
#[derive(Clone, Debug)]
enum Line {
    Good {
        user: u8,
        score: u8,
        time: u16,
    },
    Mutated {
        user: u8,
        score: u8,
        time: u16,
        at: usize,
        byte: u8,
    },
    Noise(Vec<u8>),
}

impl Line {
    fn render(&self, format: &str) -> Vec<u8> {
        let good = |user: u8, score: u8, time: u16| match format {
            "csv" => format!("u{user},{score},{time}"),
            "tsv" => format!("u{user}\t{score}\t{time}"),
            _ => format!("{{\"user\": \"u{user}\", \"score\": {score}, \"time\": {time}}}"),
        };
        let mut bytes = match self {
            Line::Good { user, score, time } => good(*user, *score, *time).into_bytes(),
            Line::Mutated {
                user,
                score,
                time,
                at,
                byte,
            } => {
                let mut bytes = good(*user, *score, *time).into_bytes();
                let at = at % (bytes.len() + 1);
                bytes.insert(at, *byte);
                bytes
            }
            Line::Noise(bytes) => bytes.clone(),
        };
        bytes.push(b'\n');
        bytes
    }
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        4 => (0u8..5, 0u8..6, 0u16..400).prop_map(|(user, score, time)| Line::Good { user, score, time }),
        2 => (0u8..5, 0u8..6, 0u16..400, any::<usize>(), any::<u8>()).prop_map(|(user, score, time, at, byte)| Line::Mutated { user, score, time, at, byte }),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Line::Noise),
    ]
}

#[test]
fn every_layout_reads_the_same_facts() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    generate(&data, 300, 4);
    let data_arg = ["--data", data.to_str().expect("utf-8"), "--chunk-mib", "1"];

    let one = dir.path().join("one");
    check(&run(&sniffable_spec(), &one, &data_arg, &["-w", "1"]));
    let two = dir.path().join("two");
    check(&run(&sniffable_spec(), &two, &data_arg, &["-w", "2"]));

    let processes = dir.path().join("processes");
    let hosts = two_process_hostfile(dir.path());
    let second = {
        let (processes, hosts, data) = (processes.clone(), hosts.clone(), data.clone());
        std::thread::spawn(move || {
            run(
                &sniffable_spec(),
                &processes,
                &["--data", data.to_str().expect("utf-8")],
                &["-n", "2", "-p", "1", "-h", &hosts],
            )
        })
    };
    check(&run(
        &sniffable_spec(),
        &processes,
        &data_arg,
        &["-n", "2", "-p", "0", "-h", &hosts],
    ));
    check(&second.join().expect("second process"));

    let (one, two, processes) = (summary(&one), summary(&two), summary(&processes));
    assert!(one["facts_read"].as_u64().expect("facts") > 10_000);
    for other in [&two, &processes] {
        assert_eq!(one["facts_read"], other["facts_read"]);
        assert_eq!(one["facts_digest"], other["facts_digest"]);
        assert_eq!(other["dead_lettered"], 0);
    }
}

#[test]
fn reading_waits_for_slow_training() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    generate(&data, 200, 3);
    let out = dir.path().join("out");
    let args = [
        "--data",
        data.to_str().expect("utf-8"),
        "--max-epochs-behind",
        "2",
        "--debug-slow-training-ms",
        "20",
    ];
    check(&run(&sniffable_spec(), &out, &args, &["-w", "2"]));
    let summary = summary(&out);
    let ahead = summary["max_read_ahead_epochs"]
        .as_u64()
        .expect("read ahead");
    // the open epoch, and at most two closed ones that training has not finished
    assert!(ahead <= 3, "reading ran {ahead} epochs ahead of training");
    assert!(
        summary["epochs"].as_u64().expect("epochs") > 48,
        "{summary}"
    );
}
