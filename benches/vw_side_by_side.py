#!/usr/bin/env python3
"""Vowpal Wabbit on the files pooch reads, for benches/side_by_side.rs: one stream, one JSON line.

Usage: python vw_side_by_side.py KIND PATH WORK RUNS
    KIND  criteo | sniffable | ml100k | elec2
    PATH  criteo: the directory holding criteo.tsv; sniffable: the directory holding posts.csv,
          follows.csv and likes.csv; ml100k and elec2: the shared data directory (holding
          ml-100k/ and elec2/)
    WORK  a directory for the VW-format copy of the stream (kept, and reused while it is newer
          than its source)
    RUNS  how many timed learn-only passes (the median is reported)

What is timed, and what is not:
    learn_secs     VW reading its own text file and learning, one pass, no predictions written:
                   `Workspace("-d FILE ...").run_parser()`, the wheel's native driver (the wheel
                   ships no `vw` binary). VW parses on a second thread. The conversion of the
                   stream into VW's format is not timed.
    logloss, auc   progressive validation: a further pass that writes VW's predictions, each made
                   before the example is learned (not timed). On Sniffable the logloss comes from
                   pooch's protocol instead (labels learned when due, 24 hours after the post),
                   driven example by example from Python, as ../shared/anchors/sniffable_vw.py
                   does; its wall time is reported as protocol_secs and includes the Python loop.
Encodings follow ../shared/anchors: ML-100K user and item ids only, label rating >= 4, in
(timestamp, line) order; elec2 the six features as numbers, in file order; Criteo-shaped rows the
13 integers through log1p (negatives to 0, as pooch's transform) and the 26 categoricals each
hashed in a namespace of its own, an empty field adding nothing; Sniffable the features of
pipelines/sniffable.toml, computed strictly before each post.
"""
import csv
import heapq
import json
import math
import os
import statistics
import sys
import time
from collections import defaultdict, deque

import numpy as np
import vowpalwabbit

BASE_ARGS = "--loss_function logistic --link logistic -b 18 --quiet --ftrl"


def logloss(y, p):
    p = np.clip(np.asarray(p, float), 1e-15, 1 - 1e-15)
    y = np.asarray(y, float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def auc(y, p):
    y, p = np.asarray(y, float), np.asarray(p, float)
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    positives = y.sum()
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return None
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def criteo_lines(directory):
    with open(f"{directory}/criteo.tsv") as source:
        for line in source:
            columns = line.rstrip("\n").split("\t")
            label = columns[0]
            numbers = " ".join(f"I{j}:{math.log1p(max(int(columns[j]), 0)):.6f}"
                               for j in range(1, 14) if columns[j])
            categoricals = " ".join(f"|C{c} {columns[13 + c]}" for c in range(1, 27) if columns[13 + c])
            yield f"{1 if label == '1' else -1} |I {numbers} {categoricals}"


def ml100k_lines(data):
    rows = [line.rstrip("\n").split("\t") for line in open(f"{data}/ml-100k/u.data")]
    order = sorted(range(len(rows)), key=lambda i: (int(rows[i][3]), i))
    for i in order:
        user, item, rating, _ = rows[i]
        yield f"{1 if int(rating) >= 4 else -1} |f user={user} item={item}"


def elec2_lines(data):
    lines = open(f"{data}/elec2/elec.csv").read().splitlines()
    header = lines[0].split(",")
    for line in lines[1:]:
        columns = line.split(",")
        features = " ".join(f"{header[k]}:{columns[k]}" for k in range(len(columns) - 1))
        yield f"{1 if int(columns[-1]) else -1} |f {features}"


WINDOW_SECS = 7 * 86400
LABEL_WITHIN_SECS = 86400
AT_LEAST = 5


def sniffable_examples(data):
    """(time, features, label) per post, in time order: ../shared/anchors/sniffable_vw.py's."""
    posts = [(int(r["time"]), r["post"], r["dog"], r["hashtags"])
             for r in csv.DictReader(open(f"{data}/posts.csv"))]
    follows = [(int(r["time"]), r["followee"]) for r in csv.DictReader(open(f"{data}/follows.csv"))]
    likes = [(int(r["time"]), r["post"]) for r in csv.DictReader(open(f"{data}/likes.csv"))]
    post_dog = {p[1]: p[2] for p in posts}
    post_time = {p[1]: p[0] for p in posts}
    likes_in_time = defaultdict(int)
    for t, post in likes:
        if post in post_time and t < post_time[post] + LABEL_WITHIN_SECS:
            likes_in_time[post] += 1
    events = [(t, 0, d) for t, d in follows]
    events += [(t, 2, post_dog.get(p)) for t, p in likes]
    events += [(p[0], 1, p[2]) for p in posts]
    events.sort(key=lambda e: e[0])
    posts.sort(key=lambda p: p[0])
    followers = defaultdict(int)
    recent_posts = defaultdict(deque)
    recent_likes = defaultdict(deque)
    rows, i = [], 0
    for t, post, dog, tags in posts:
        while i < len(events) and events[i][0] < t:  # strictly before the post
            when, kind, d = events[i]
            i += 1
            if d is None:
                continue
            if kind == 0:
                followers[d] += 1
            elif kind == 1:
                recent_posts[d].append(when)
            else:
                recent_likes[d].append(when)
        for window in (recent_posts[dog], recent_likes[dog]):
            while window and window[0] < t - WINDOW_SECS:
                window.popleft()
        features = [f"dog={dog}", f"hour={(t // 3600) % 24}",
                    f"followers:{math.log1p(followers[dog]):.6f}",
                    f"posts_7d:{math.log1p(len(recent_posts[dog])):.6f}",
                    f"likes_7d:{math.log1p(len(recent_likes[dog])):.6f}"]
        features += [f"tag={tag}" for tag in tags.split("|") if tag]
        rows.append((t, "|f " + " ".join(features), int(likes_in_time[post] >= AT_LEAST)))
    return rows


def sniffable_protocol(rows):
    """Scores each post at its time; learns its label when due. Returns (labels, predictions)."""
    vw = vowpalwabbit.Workspace(BASE_ARGS)
    due, predictions = [], []
    for t, features, _ in rows:
        while due and due[0][0] <= t:
            _, j = heapq.heappop(due)
            vw.learn(f"{1 if rows[j][2] else -1} {rows[j][1]}")
        predictions.append(vw.predict(features))
        heapq.heappush(due, (t + LABEL_WITHIN_SECS, len(predictions) - 1))
    vw.finish()
    return [r[2] for r in rows], predictions


def write_vw_file(path, lines):
    temporary = path + ".partial"
    with open(temporary, "w") as out:
        for line in lines:
            out.write(line + "\n")
    os.replace(temporary, path)


def fresh(path, sources):
    return os.path.exists(path) and all(os.path.getmtime(path) > os.path.getmtime(s) for s in sources)


def main():
    kind, path, work, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    os.makedirs(work, exist_ok=True)
    vw_file = f"{work}/{kind}.vw"
    sniffable_rows = None
    if kind == "criteo":
        sources, lines = [f"{path}/criteo.tsv"], lambda: criteo_lines(path)
    elif kind == "ml100k":
        sources, lines = [f"{path}/ml-100k/u.data"], lambda: ml100k_lines(path)
    elif kind == "elec2":
        sources, lines = [f"{path}/elec2/elec.csv"], lambda: elec2_lines(path)
    elif kind == "sniffable":
        sources = [f"{path}/{name}.csv" for name in ("posts", "follows", "likes")]
        sniffable_rows = sniffable_examples(path)
        lines = lambda: (f"{1 if label else -1} {features}" for _, features, label in sniffable_rows)
    else:
        sys.exit(f"vw_side_by_side.py: unknown kind '{kind}'")
    if sniffable_rows is not None or not fresh(vw_file, sources):
        write_vw_file(vw_file, lines())
    labels = [1 if line.startswith("1 ") else 0 for line in open(vw_file)]

    learn_secs = []
    for _ in range(runs):
        started = time.perf_counter()
        workspace = vowpalwabbit.Workspace(f"-d {vw_file} {BASE_ARGS}")
        workspace.run_parser()
        workspace.finish()
        learn_secs.append(time.perf_counter() - started)
    median = statistics.median(learn_secs)
    result = {
        "learner": "vw",
        "vw_version": vowpalwabbit.__version__,
        "args": BASE_ARGS,
        "examples": len(labels),
        "learn_secs_runs": learn_secs,
        "learn_secs": median,
        "examples_per_sec": len(labels) / median,
    }
    if sniffable_rows is not None:
        started = time.perf_counter()
        y, p = sniffable_protocol(sniffable_rows)
        result["protocol"] = "labels learned when due (24 h), scored at the post's time"
        result["protocol_secs"] = time.perf_counter() - started
    else:
        predictions = f"{work}/{kind}.pred"
        workspace = vowpalwabbit.Workspace(f"-d {vw_file} -p {predictions} {BASE_ARGS}")
        workspace.run_parser()
        workspace.finish()
        y, p = labels, np.loadtxt(predictions).reshape(len(labels), -1)[:, 0]
        result["protocol"] = "progressive validation: predicted before learned, file order"
    result["logloss"] = logloss(y, p)
    result["auc"] = auc(y, p)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
