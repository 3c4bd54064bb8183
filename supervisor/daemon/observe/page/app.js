// The status page: one EventSource, a "history" event then a "snapshot"
// event per second. No inline script or style anywhere (the CSP forbids
// both); every element is built with textContent, never innerHTML.
"use strict";

(function () {
  const MAX_POINTS = 600;
  const series = { t: [], rate: [], p50: [], p99: [], queued: [] };
  let plots = null;

  function $(id) { return document.getElementById(id); }
  function text(id, value) { $(id).textContent = value; }
  function ms(seconds) { return seconds == null ? null : seconds * 1000; }
  function fmtSecs(s) {
    if (s == null) return "-";
    if (s < 1) return (s * 1000).toFixed(1) + " ms";
    if (s < 120) return s.toFixed(1) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  function fmtBytes(b) {
    if (b == null) return "-";
    return (b / 1048576).toFixed(1) + " MiB";
  }

  function makePlots() {
    if (typeof uPlot === "undefined") return null;
    const width = Math.max(400, $("plot-throughput").clientWidth || 500);
    const common = { width: width, height: 200, scales: { x: { time: true } } };
    const tp = new uPlot(Object.assign({}, common, {
      series: [{}, { label: "tasks/s", stroke: "#1f77b4" }, { label: "queued", stroke: "#ff7f0e", scale: "q" }],
      axes: [{}, { size: 60 }, { scale: "q", side: 1, size: 60, grid: { show: false } }],
    }), [series.t, series.rate, series.queued], $("plot-throughput"));
    const lat = new uPlot(Object.assign({}, common, {
      series: [{}, { label: "p50 ms", stroke: "#2ca02c" }, { label: "p99 ms", stroke: "#d62728" }],
    }), [series.t, series.p50, series.p99], $("plot-latency"));
    return { tp: tp, lat: lat };
  }

  function addPoint(p) {
    // Point is an array: [at, throughput, p50, p99, queued, in_flight]
    series.t.push(p[0]); series.rate.push(p[1]);
    series.p50.push(ms(p[2])); series.p99.push(ms(p[3])); series.queued.push(p[4]);
    for (const k in series) { if (series[k].length > MAX_POINTS) series[k].shift(); }
  }

  function redraw() {
    if (!plots) plots = makePlots();
    if (!plots) return;
    plots.tp.setData([series.t, series.rate, series.queued]);
    plots.lat.setData([series.t, series.p50, series.p99]);
  }

  function cell(tr, value, cls) {
    const td = document.createElement("td");
    td.textContent = value;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }

  function renderWorkers(workers) {
    const body = $("workers").tBodies[0];
    const rows = [];
    for (const w of workers) {
      const tr = document.createElement("tr");
      tr.dataset.slot = String(w.slot);
      cell(tr, String(w.slot));
      cell(tr, w.state, "state " + w.state);
      cell(tr, w.pid == null ? "-" : String(w.pid), "pid");
      cell(tr, w.pid == null ? "-" : fmtSecs(w.uptime));
      cell(tr, String(w.restarts), "restarts");
      cell(tr, fmtBytes(w.rss));
      cell(tr, w.cpu == null ? "-" : w.cpu.toFixed(0) + "%");
      cell(tr, String(w.done));
      cell(tr, String(w.failed));
      cell(tr, String(w.held));
      cell(tr, w.last_exit || "-");
      rows.push(tr);
    }
    body.replaceChildren.apply(body, rows);
  }

  function renderRecent(recent) {
    const items = [];
    for (let i = recent.length - 1; i >= 0; i--) {
      const r = recent[i];
      const li = document.createElement("li");
      li.className = r.kind;
      const when = new Date(r.at * 1000).toLocaleTimeString();
      li.textContent = when + " " + r.kind + " slot " + r.slot + (r.task ? " " + r.task : "") + ": " + r.detail;
      items.push(li);
    }
    const ol = $("recent");
    ol.replaceChildren.apply(ol, items);
  }

  function renderConfig(c) {
    const dl = $("config");
    const rows = [];
    const entries = [["workers", c.workers], ["start method", c.start_method],
      ["intake", c.intake], ["publisher", c.publisher], ["allow", c.allow.join(", ")],
      ["timeout", c.timeout ? c.timeout + " s" : "none"], ["max attempts", c.max_attempts],
      ["max pending", c.max_pending], ["max prefetch", c.max_prefetch],
      ["config file", c.source]];
    for (const [k, v] of entries) {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = String(v);
      rows.push(dt, dd);
    }
    dl.replaceChildren.apply(dl, rows);
  }

  function render(s) {
    text("version", s.version);
    text("pid", String(s.pid));
    text("uptime", fmtSecs(s.uptime));
    text("updated", new Date(s.taken_at * 1000).toLocaleTimeString());
    text("mode", s.draining ? "(draining)" : s.paused ? "(intake paused)" : "");
    for (const k of ["queued", "in_flight", "accepted", "succeeded", "failed", "retried", "quarantined"]) {
      text(k, String(s[k]));
    }
    text("latency", fmtSecs(s.latency_p50) + " / " + fmtSecs(s.latency_p99));
    renderWorkers(s.workers);
    renderRecent(s.recent);
    renderConfig(s.config);
  }

  function connect() {
    const es = new EventSource("/events");
    es.addEventListener("open", function () {
      const c = $("conn"); c.textContent = "live"; c.className = "conn up";
    });
    es.addEventListener("error", function () {
      const c = $("conn"); c.textContent = "reconnecting"; c.className = "conn down";
    });
    es.addEventListener("history", function (ev) {
      for (const k in series) series[k].length = 0;
      for (const p of JSON.parse(ev.data)) addPoint(p);
      redraw();
    });
    es.addEventListener("snapshot", function (ev) {
      const msg = JSON.parse(ev.data);
      render(msg.snapshot);
      if (msg.point) addPoint(msg.point);
      redraw();
    });
  }

  document.addEventListener("DOMContentLoaded", connect);
})();
