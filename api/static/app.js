// The dashboard's live part: one EventSource on /v1/stream updates the tiles, the breaker board and the
// alerts; the silence button posts to the API. The session cookie authenticates (HttpOnly: this script
// never sees the token); X-Guardian-CSRF marks requests as made by this page.
(() => {
  "use strict";
  const received = (window.__guardianSse = []); // receipt times, read by the browser tests
  const $ = (id) => document.getElementById(id);
  const number = (v, digits = 0) =>
    v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", { maximumFractionDigits: digits });

  function ago(iso) {
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 60) return `${Math.floor(s)} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }
  function refreshTimes() {
    for (const t of document.querySelectorAll("time[data-since]")) t.textContent = ago(t.dataset.since);
  }

  function onMetrics(m) {
    if (!$("m-ingest")) return;
    $("m-ingest").textContent = number(m.ingest_per_s, 0);
    $("m-p99").textContent = m.p99_ms === null ? "–" : number(m.p99_ms, 1);
    $("m-lag").textContent = number(m.total_lag);
    $("m-dlq").textContent = number(m.dlq_per_s, 1);
    $("m-workers").textContent = number(m.workers);
    for (const [store, up] of Object.entries(m.stores || {})) {
      const el = $(`store-${store}`);
      if (el) el.dataset.up = up ? "yes" : "no";
    }
    const bars = $("lagbars");
    if (bars && m.lag) {
      const max = Math.max(1, ...Object.values(m.lag));
      bars.replaceChildren(
        ...Object.entries(m.lag).map(([p, lag]) => {
          const bar = document.createElement("div");
          bar.className = "lagbar";
          bar.dataset.partition = p;
          bar.title = `partition ${p}: ${lag} behind`;
          bar.innerHTML = `<span style="height:${Math.round((100 * lag) / max)}%"></span><b>${number(lag)}</b><i>p${p}</i>`;
          return bar;
        }),
      );
    }
  }

  function onBreaker(b) {
    for (const cell of document.querySelectorAll(`.cell[data-symbol="${CSS.escape(b.symbol)}"]`)) {
      cell.className = `cell state-${b.to.toLowerCase()}`;
      cell.querySelector(".state").textContent = b.to;
      const time = cell.querySelector("time");
      if (time) time.dataset.since = new Date(Number(b.event_time) / 1000).toISOString();
    }
    const board = $("board");
    if (board && !board.querySelector(`.cell[data-symbol="${CSS.escape(b.symbol)}"]`)) {
      const cell = document.createElement("a");
      cell.className = `cell state-${b.to.toLowerCase()}`;
      cell.dataset.symbol = b.symbol;
      cell.href = `/symbols/${encodeURIComponent(b.symbol)}`;
      cell.innerHTML = `<b></b><span class="state"></span><time></time>`;
      cell.querySelector("b").textContent = b.symbol;
      cell.querySelector(".state").textContent = b.to;
      cell.querySelector("time").dataset.since = new Date(Number(b.event_time) / 1000).toISOString();
      board.querySelector(".empty")?.remove();
      board.append(cell);
    }
    refreshTimes();
  }

  function connect() {
    const live = $("live-state");
    if (!live) return; // the login page
    const source = new EventSource("/v1/stream");
    // Close the stream as the page goes: a browser keeps ~6 connections per host, and streams of pages
    // left behind (or kept in the back/forward cache) would hold them until the server notices.
    window.addEventListener("pagehide", () => source.close());
    const record = (type, data) => received.push({ type, data, at: Date.now() });
    source.onopen = () => { live.textContent = "live"; live.dataset.ok = "yes"; };
    source.onerror = () => { live.textContent = "reconnecting…"; live.dataset.ok = "no"; };
    source.addEventListener("metrics", (e) => { const m = JSON.parse(e.data); record("metrics", m); onMetrics(m); });
    source.addEventListener("breaker", (e) => { const b = JSON.parse(e.data); record("breaker", b); onBreaker(b); });
    source.addEventListener("alert", (e) => {
      record("alert", JSON.parse(e.data));
      document.body.dispatchEvent(new Event("guardian-alerts"));
    });
  }

  async function silence(button) {
    button.disabled = true;
    const response = await fetch("/v1/silences", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Guardian-CSRF": "1" },
      body: JSON.stringify({ matchers: JSON.parse(button.dataset.matchers), duration: "1h", comment: "silenced from the dashboard" }),
    });
    if (!response.ok) {
      button.disabled = false;
      button.textContent = `refused (${response.status})`;
      return;
    }
    button.replaceWith(Object.assign(document.createElement("span"), { className: "muted", textContent: "silenced" }));
    document.body.dispatchEvent(new Event("guardian-alerts"));
  }

  async function chart() {
    const el = $("chart");
    if (!el || !window.uPlot) return;
    const series = await (await fetch(el.dataset.series)).json();
    // The last 24 h, or less when the history is younger: the chart starts where the data does.
    const now = Date.now() / 1000;
    const start = Math.max(now - 86400, (series.t[0] ?? now) - 60);
    const opts = {
      width: el.clientWidth || 900, height: 260,
      scales: { x: { time: true, range: () => [start, now] } },
      series: [{}, { label: "latency µs (max)", stroke: "#d9480f" }, { label: "p99 µs", stroke: "#1c7ed6" },
        { label: "drift score", stroke: "#2f9e44", scale: "drift" }],
      axes: [{}, { label: "µs" }, { side: 1, scale: "drift", label: "drift", grid: { show: false } }],
    };
    new window.uPlot(opts, [series.t, series.latency_us, series.p99_us, series.drift_score], el);
    el.dataset.points = String(series.t.length);
  }

  document.addEventListener("click", (e) => {
    const button = e.target.closest("[data-action=silence]");
    if (button) silence(button);
  });
  document.addEventListener("DOMContentLoaded", () => {
    refreshTimes();
    setInterval(refreshTimes, 1000);
    connect();
    chart();
  });
})();
