#!/usr/bin/env bash
# pooch's entry points.
#
#   ./run.sh                  the main job: Sniffable, generated if missing, at 2 workers
#   ./run.sh test             formatting, lints, the release build and every test
#   ./run.sh bench            the benchmarks (figures go to target/bench-results/)
#   ./run.sh bench quick      the side-by-side benchmark (pooch beside VW) alone, on small streams
#   ./run.sh movielens        the MovieLens 100K pipeline on ../shared/data
#   ./run.sh elec2            the elec2 pipeline on ../shared/data
#   ./run.sh quality          progressive logloss on ../shared/data beside the anchors
#   ./run.sh cluster N ARGS   `pooch run ARGS` as N local processes under `pooch cluster`; `-- FLAGS` passes timely flags
#   ./run.sh bless            rewrites the golden files (tests/golden/*/expected) from this build
set -euo pipefail
cd "$(dirname "$0")"

# The release binary, set by `build`: cargo says where its target directory is
# (CARGO_TARGET_DIR and `build.target-dir` in a cargo config move it).
POOCH=

build() {
    cargo build --release --quiet
    local target
    target=$(cargo metadata --format-version 1 --no-deps \
        | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    if [ -z "$target" ]; then
        echo "run.sh: cargo metadata names no target directory" >&2
        exit 1
    fi
    POOCH=$target/release/pooch
}

main_job() {
    build
    if [ ! -s data/sniffable/posts.csv ]; then
        echo "== generating Sniffable data into data/sniffable"
        "$POOCH" generate sniffable --out data/sniffable
    fi
    echo "== running pipelines/sniffable.toml at 2 workers, serving predictions over HTTP"
    local log
    log=$(mktemp)
    # port 0: a free port, named on stderr; the endpoint closes when the input is read
    "$POOCH" run --pipeline pipelines/sniffable.toml --out out/sniffable \
        --queries data/sniffable/queries.jsonl --http "${POOCH_HTTP:-127.0.0.1:0}" --exit-after-input \
        -- -w 2 2> >(tee "$log" >&2) &
    local run=$! address=""
    for _ in $(seq 100); do
        address=$(sed -n 's|.*serving on \(http://[^ ]*\).*|\1|p' "$log" | head -1)
        [ -n "$address" ] && break
        sleep 0.05
    done
    if [ -n "$address" ]; then
        echo "== the console, while it runs: $address/"
        local query='{"dog": "dog-17", "hashtags": ["ball", "park"]}'
        echo "== while it runs: curl -s $address/v1/predict -d '$query'"
        if command -v curl > /dev/null; then
            # the supervisor serves a version once one has beaten the constant model on
            # examples it scored itself; until then /v1/predict says why not (503)
            for _ in $(seq 100); do
                curl -sf --max-time 1 "$address/readyz" > /dev/null && break
                sleep 0.1
            done
            curl -s --max-time 2 "$address/v1/predict" -d "$query" || echo "(no answer: the run may have ended)"
            echo
        fi
    fi
    local status=0
    wait "$run" || status=$?
    rm -f "$log"
    [ "$status" = 0 ] || exit "$status"
    echo "== probe queries (data/sniffable/queries.jsonl)"
    cat data/sniffable/queries.jsonl
    echo "== their answers (out/sniffable/answers.jsonl; the true probabilities are in data/sniffable/truth.json)"
    sort out/sniffable/answers.jsonl
    echo "== the report: learning curve, calibration, speed"
    "$POOCH" report out/sniffable
}

run_tests() {
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    cargo build --release
    # tests that read ../shared/data are #[ignore]d for users without it; here they run too
    if [ "${SKIP_SHARED_DATA:-0}" = 1 ]; then
        cargo test --release --workspace
    else
        cargo test --release --workspace -- --include-ignored
    fi
}

movielens() {
    build
    "$POOCH" run --pipeline pipelines/movielens.toml --out out/movielens -- -w 2
}

# One summary.json field, from its pretty-printed JSON.
summary_field() {
    sed -n "s/^  \"$2\": \([^,]*\),\{0,1\}$/\1/p" "$1" | head -1
}

# The quality table of issue 4: progressive logloss on the shared data, beside the anchors.
quality() {
    build
    local out=out/quality
    printf '%-28s %7s %9s %9s %9s %s\n' data workers logloss online auc "best anchor (logloss)"
    run_quality() {
        local name=$1 spec=$2 workers=$3 anchor=$4
        "$POOCH" run --pipeline "$spec" --out "$out/$name-w$workers" --quiet -- -w "$workers" > /dev/null
        local summary=$out/$name-w$workers/summary.json
        printf '%-28s %7s %9.4f %9.4f %9.4f %s\n' "$name" "$workers" \
            "$(summary_field "$summary" logloss)" "$(summary_field "$summary" online_logloss)" \
            "$(summary_field "$summary" auc)" "$anchor"
    }
    rm -rf "$out"
    for workers in 1 2; do
        run_quality ml-100k-ids pipelines/movielens-ids.toml "$workers" "0.5776 (VW --ftrl)"
        run_quality ml-100k-features pipelines/movielens.toml "$workers" "0.5776 (VW --ftrl, ids only)"
    done
    # elec2 publishes a model per row: at 2 workers every row is a round trip (minutes)
    run_quality elec2 pipelines/elec2.toml 1 "0.3650 (River SGD 0.1)"
}

elec2() {
    build
    "$POOCH" run --pipeline pipelines/elec2.toml --out out/elec2 -- -w 1
}

# Regenerates the golden files from the current build (tests/golden.rs says what they pin).
bless() {
    POOCH_BLESS=1 cargo test --release --test golden
    echo "== golden files rewritten; review the change with: git diff tests/golden"
}

# Runs `pooch run` as N processes on this machine under `pooch cluster`, which joins them by a
# hostfile (ports from POOCH_PORT_BASE, 2101 by default), restarts the cluster when one dies
# (within a restart budget), logs every event to OUT/cluster.log and, with --http, serves.
cluster() {
    local processes=${1:?usage: ./run.sh cluster N [pooch run args] [-- timely flags]}
    shift
    if ! [[ $processes =~ ^[1-9][0-9]*$ ]]; then
        echo "cluster: N must be a positive number, not '$processes'" >&2
        exit 2
    fi
    build
    exec "$POOCH" cluster -n "$processes" --port-base "${POOCH_PORT_BASE:-2101}" "$@"
}

# The benchmarks; `quick` runs the side-by-side benchmark alone, on small streams, once each.
bench() {
    build
    if [ "${1:-}" = quick ]; then
        BENCH_QUICK=1 cargo bench --bench side_by_side
        return
    fi
    cargo bench --bench pipeline
    cargo bench --bench ingest
    cargo bench --bench http
    cargo bench --bench flood
    cargo bench --bench learn
    cargo bench --bench side_by_side
    cargo bench --bench cluster_failover
}

case "${1:-}" in
    "") main_job ;;
    test) run_tests ;;
    bench) bench "${2:-}"; "$POOCH" report --bench target/bench-results ;;
    movielens) movielens ;;
    elec2) elec2 ;;
    quality) quality ;;
    cluster) shift; cluster "$@" ;;
    bless) bless ;;
    -h|--help|help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) echo "unknown command '$1'; see ./run.sh --help" >&2; exit 2 ;;
esac
