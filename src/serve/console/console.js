// pooch's operator console: polls /v1/console and /v1/models, draws with uPlot, and posts
// pin, unpin and rollback to /v1/models/{name}/... . No build step: plain browser JavaScript.
"use strict";

(function () {
  const POLL_MS = 1000;
  const MAX_BACKOFF_MS = 5000;
  const VERSION_ROWS = 100;

  // the epochs seen so far, as columns
  const series = {
    epoch: [], elapsed: [], examples: [], facts: [], version: [],
    logloss: [], auc: [], truthLogloss: [], truthAuc: [],
    runLogloss: [], runAuc: [], runOnline: [], runTruthLogloss: [], runTruthAuc: [],
  };
  let lastSeq = 0;
  let model = null;
  let pinned = null;
  let lastModelsJson = "";
  let lastDeadJson = "";
  let failures = 0;

  const $ = (id) => document.getElementById(id);
  const fmt = (value, digits) => (value === null || value === undefined || Number.isNaN(value))
    ? "–" : Number(value).toFixed(digits);
  const num = (value) => (value === null || value === undefined) ? "–" : Number(value).toLocaleString("en-US");
  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  // --- charts -----------------------------------------------------------------------------
  function width(el) { return Math.max(320, el.clientWidth || 560); }
  function line(label, stroke, extra) {
    return Object.assign({ label, stroke, width: 1.5, spanGaps: true,
      value: (u, v) => fmt(v, 4) }, extra || {});
  }
  function makeChart(id, opts, data) {
    const el = $(id);
    opts.width = width(el);
    opts.height = 230;
    return new uPlot(opts, data, el);
  }
  const epochAxis = { label: "epoch", values: (u, ticks) => ticks.map((t) => String(t)) };
  const charts = {};
  // the first epochs, scored on a few examples, can reach a logloss of 5: the range follows
  // the running curves past their first tenth, with room for the epochs' own around them
  function settledMax() {
    let high = 0;
    for (const column of [series.runLogloss, series.runOnline, series.runTruthLogloss]) {
      for (let i = Math.floor(column.length / 10); i < column.length; i++) {
        if (column[i] !== null && column[i] > high) high = column[i];
      }
    }
    return high > 0 ? high * 1.6 : null;
  }
  charts.logloss = makeChart("chart-logloss", {
    scales: { x: { time: false }, y: { range: (u, min, max) => {
      const cap = settledMax();
      return [0, cap === null ? max : Math.min(max, cap)];
    } } },
    axes: [epochAxis, { label: "logloss" }],
    series: [
      { label: "epoch" },
      line("running", "#1565c0"),
      line("running, replicas", "#7e57c2", { dash: [4, 3] }),
      line("running, truth", "#2e7d32"),
      line("epoch", "rgba(21,101,192,0.35)", { width: 1 }),
      line("epoch, truth", "rgba(46,125,50,0.35)", { width: 1 }),
    ],
  }, [[], [], [], [], [], []]);
  charts.auc = makeChart("chart-auc", {
    scales: { x: { time: false } },
    axes: [epochAxis, { label: "AUC" }],
    series: [
      { label: "epoch" },
      line("running", "#1565c0"),
      line("running, truth", "#2e7d32"),
      line("epoch", "rgba(21,101,192,0.35)", { width: 1 }),
      line("epoch, truth", "rgba(46,125,50,0.35)", { width: 1 }),
    ],
  }, [[], [], [], [], []]);
  charts.ingest = makeChart("chart-ingest", {
    scales: { x: { time: false }, lag: {} },
    axes: [{ label: "seconds since the run started" }, { label: "per second" },
      { scale: "lag", side: 1, label: "frontier lag (s)", grid: { show: false } }],
    series: [
      { label: "s" },
      line("facts/s", "#ef6c00", { value: (u, v) => fmt(v, 0) }),
      line("examples/s", "#00838f", { value: (u, v) => fmt(v, 0) }),
      line("frontier lag (s)", "#8d6e63", { scale: "lag", value: (u, v) => fmt(v, 0) }),
    ],
  }, [[], [], [], []]);
  charts.latency = makeChart("chart-latency", {
    scales: { x: { time: false, distr: 3 } },
    axes: [{ label: "ms (bucket upper bound)" }, { label: "requests" }],
    series: [
      { label: "≤ ms", value: (u, v) => fmt(v, 3) },
      { label: "predict requests", stroke: "#6a1b9a", fill: "rgba(106,27,154,0.25)",
        paths: uPlot.paths.bars({ size: [0.8, 40] }), points: { show: false },
        value: (u, v) => num(v) },
    ],
  }, [[], []]);
  window.addEventListener("resize", () => {
    for (const [key, chart] of Object.entries(charts)) {
      const el = $("chart-" + key);
      chart.setSize({ width: width(el), height: 230 });
    }
  });

  // the ingest chart's columns, and the lag seen at each poll
  const ingest = { x: [], facts: [], examples: [], lag: [] };
  let lastLag = null;

  function addEpochs(points) {
    for (const p of points) {
      series.epoch.push(p.epoch);
      series.elapsed.push(p.elapsed_secs);
      series.examples.push(p.running_examples);
      series.facts.push(p.facts);
      series.version.push(p.model_version);
      series.logloss.push(p.logloss);
      series.auc.push(p.auc);
      series.truthLogloss.push(p.truth_logloss);
      series.truthAuc.push(p.truth_auc);
      series.runLogloss.push(p.running_logloss);
      series.runAuc.push(p.running_auc);
      series.runOnline.push(p.running_online_logloss);
      series.runTruthLogloss.push(p.running_truth_logloss);
      series.runTruthAuc.push(p.running_truth_auc);
      // a rate over at least half a second of the run, so that bursts do not spike it
      const n = ingest.x.length;
      const at = p.elapsed_secs;
      if (n === 0) {
        ingest.x.push(at); ingest.facts.push(null); ingest.examples.push(null); ingest.lag.push(lastLag);
        ingest.base = { at, facts: p.facts, examples: p.running_examples };
      } else if (at - ingest.base.at >= 0.5) {
        const dt = at - ingest.base.at;
        ingest.x.push(at);
        ingest.facts.push((p.facts - ingest.base.facts) / dt);
        ingest.examples.push((p.running_examples - ingest.base.examples) / dt);
        ingest.lag.push(lastLag);
        ingest.base = { at, facts: p.facts, examples: p.running_examples };
      }
    }
  }

  function redrawCurves() {
    // running figures by epoch, the epoch's own beside them
    charts.logloss.setData([series.epoch, series.runLogloss, series.runOnline,
      series.runTruthLogloss, series.logloss, series.truthLogloss]);
    charts.auc.setData([series.epoch, series.runAuc, series.runTruthAuc, series.auc, series.truthAuc]);
    charts.ingest.setData([ingest.x, ingest.facts, ingest.examples, ingest.lag]);
    $("chart-logloss").dataset.points = String(series.epoch.length);
    $("chart-auc").dataset.points = String(series.epoch.length);
    $("chart-ingest").dataset.points = String(ingest.x.length);
  }

  function drawLatency(latency) {
    if (!latency || !latency.buckets) return;
    const xs = [], ys = [];
    let below = 0;
    for (const bucket of latency.buckets) {
      xs.push(bucket.le * 1000);
      ys.push(bucket.count - below);
      below = bucket.count;
    }
    charts.latency.setData([xs, ys]);
    $("chart-latency").dataset.points = String(latency.count || 0);
  }

  // --- tiles, tables ----------------------------------------------------------------------
  let lastRate = null;
  function drawTiles(answer) {
    const c = answer.counters || {};
    $("pipeline").textContent = answer.pipeline ? "· " + answer.pipeline + " · " + answer.model : "";
    const epochs = series.epoch;
    $("tile-epoch").textContent = epochs.length ? num(epochs[epochs.length - 1]) + " (" + num(epochs.length) + " reported)" : "–";
    $("tile-facts").textContent = num(c.facts_read);
    const now = performance.now();
    if (lastRate && c.facts_read !== undefined && now > lastRate.at) {
      const rate = (c.facts_read - lastRate.facts) * 1000 / (now - lastRate.at);
      $("tile-rate").textContent = num(Math.round(rate)) + " /s";
    }
    lastRate = { at: now, facts: c.facts_read };
    lastLag = c.frontier_lag_secs === undefined ? null : c.frontier_lag_secs;
    $("tile-lag").textContent = lastLag === null ? "–" : num(lastLag) + " s";
    $("tile-dead").textContent = num(c.dead_letters);
    const versions = series.version;
    $("tile-versions").textContent = versions.length ? num(versions[versions.length - 1]) : "–";
    $("tile-serving").textContent = answer.serving === null || answer.serving === undefined ? "none" : "v" + answer.serving;
  }

  function drawDeadLetters(dead) {
    const json = JSON.stringify(dead || []);
    if (json === lastDeadJson) return;
    lastDeadJson = json;
    const body = $("dead-letters").tBodies[0];
    body.replaceChildren();
    for (const letter of dead || []) {
      const row = body.insertRow();
      cell(row, letter.source);
      cell(row, letter.file + ":" + letter.line);
      cell(row, letter.reason);
    }
  }

  function loss(metrics) {
    if (!metrics) return "–";
    return fmt(metrics.logloss, 4) + " (" + num(metrics.examples) + ")";
  }

  function drawModels(models) {
    const json = JSON.stringify(models);
    if (json === lastModelsJson) return;
    lastModelsJson = json;
    const entry = (models.models || [])[0];
    if (!entry) return;
    model = entry.name || (entry.supervisor && entry.supervisor.model);
    pinned = entry.pinned === undefined ? null : entry.pinned;
    $("tile-pinned").textContent = pinned === null ? "none" : "v" + pinned;
    if (entry.serving !== undefined) {
      $("tile-serving").textContent = entry.serving === null ? "none" : "v" + entry.serving;
    }
    const finite = new Map((entry.held || []).map((held) => [held.version, held.finite]));
    const versions = ((entry.supervisor && entry.supervisor.versions) || entry.held || []).slice();
    versions.sort((a, b) => b.version - a.version);
    const body = $("versions").tBodies[0];
    body.replaceChildren();
    for (const version of versions.slice(0, VERSION_ROWS)) {
      const row = body.insertRow();
      row.dataset.version = String(version.version);
      const serving = version.version === entry.serving;
      const isPinned = version.version === pinned;
      if (serving) row.classList.add("serving");
      if (isPinned) row.classList.add("pinned");
      cell(row, "v" + version.version, "num");
      cell(row, String(version.epoch), "num");
      const status = cell(row, "");
      const badge = document.createElement("span");
      const name = version.status || "unknown";
      badge.className = "badge " + name;
      badge.textContent = name;
      status.appendChild(badge);
      if (isPinned && name !== "pinned") {
        const pin = document.createElement("span");
        pin.className = "badge pinned";
        pin.textContent = "pinned";
        status.appendChild(document.createTextNode(" "));
        status.appendChild(pin);
      }
      if (finite.get(version.version) === false) status.appendChild(document.createTextNode(" non-finite"));
      cell(row, loss(version.round || version.metrics), "num");
      cell(row, loss(version.window), "num");
      cell(row, version.reason || "");
      const actions = cell(row, "");
      if (!isPinned) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "pin";
        button.textContent = "pin";
        button.addEventListener("click", () => act("pin v" + version.version, "pin", { version: version.version }));
        actions.appendChild(button);
      }
    }
    const decisions = (entry.recent_decisions || []).slice().reverse();
    const dbody = $("decisions").tBodies[0];
    dbody.replaceChildren();
    for (const decision of decisions) {
      const row = dbody.insertRow();
      cell(row, decision.time_unix_ms ? new Date(decision.time_unix_ms).toLocaleTimeString() : "");
      cell(row, decision.version === null || decision.version === undefined ? "" : "v" + decision.version, "num");
      cell(row, String(decision.action));
      cell(row, String(decision.by));
      cell(row, decision.reason || "");
    }
  }

  // --- actions ----------------------------------------------------------------------------
  async function act(what, path, body) {
    const result = $("action-result");
    if (!model) {
      result.className = "result error";
      result.textContent = "no model known yet";
      return;
    }
    if (!window.confirm(what + " of " + model + "?")) {
      result.className = "result";
      result.textContent = what + ": cancelled";
      return;
    }
    result.className = "result";
    result.textContent = what + ": sending…";
    try {
      const response = await fetch("/v1/models/" + encodeURIComponent(model) + "/" + path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: body ? JSON.stringify(body) : undefined,
      });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) {
        result.className = "result error";
        result.textContent = what + " refused (" + response.status + "): " + (answer.error || "no reason given");
      } else {
        const reasons = (answer.decisions || []).map((d) => d.action + ": " + d.reason).join("; ");
        result.className = "result ok";
        result.textContent = what + " done: serving " + (answer.serving === null ? "none" : "v" + answer.serving) +
          ", pinned " + (answer.pinned === null ? "none" : "v" + answer.pinned) + (reasons ? " — " + reasons : "");
      }
      lastModelsJson = "";
      await pollModels();
    } catch (error) {
      result.className = "result error";
      result.textContent = what + " failed: " + error;
    }
  }
  $("unpin").addEventListener("click", () => act("unpin", "unpin"));
  $("rollback").addEventListener("click", () => act("roll back", "rollback"));

  // --- polling ----------------------------------------------------------------------------
  function connection(state, text) {
    const el = $("connection");
    el.className = "status " + state;
    el.dataset.state = state;
    el.textContent = text;
  }

  async function getJson(path) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 4000);
    try {
      const response = await fetch(path, { cache: "no-store", signal: controller.signal });
      if (!response.ok) throw new Error(path + ": HTTP " + response.status);
      return await response.json();
    } finally {
      clearTimeout(timer);
    }
  }

  async function pollModels() {
    drawModels(await getJson("/v1/models"));
  }

  async function poll() {
    try {
      let answer;
      // take every epoch not seen yet, a page at a time
      for (;;) {
        answer = await getJson("/v1/console?since=" + lastSeq);
        if (answer.last_seq < lastSeq) {
          // a new run behind the same address: start over
          for (const column of Object.values(series)) column.length = 0;
          for (const key of ["x", "facts", "examples", "lag"]) ingest[key].length = 0;
          lastSeq = 0;
          continue;
        }
        const points = answer.epochs || [];
        addEpochs(points);
        if (points.length) lastSeq = points[points.length - 1].seq;
        if (!points.length || lastSeq >= answer.last_seq) break;
      }
      drawTiles(answer);
      redrawCurves();
      drawLatency(answer.latency);
      drawDeadLetters(answer.dead_letters);
      await pollModels();
      failures = 0;
      connection("live", "live · updated " + new Date().toLocaleTimeString());
    } catch (error) {
      failures += 1;
      connection("lost", "connection lost (" + (error.message || error) + "); retrying");
    }
    const delay = failures ? Math.min(MAX_BACKOFF_MS, POLL_MS * failures) : POLL_MS;
    setTimeout(poll, delay);
  }
  window.poochConsole = { series, charts };
  poll();
})();
