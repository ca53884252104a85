// The Live page: an EventSource on /live/stream (same filters and Last-Event-ID resume as
// GET /api/v1/events/stream). Rows are built with textContent only: event fields are data,
// never markup. A file, not an inline script: the page's CSP allows scripts from 'self' only.
(function () {
  "use strict";
  var MAX_ROWS = 200;
  var source = null;

  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined || text === "" ? "–" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
  }

  function add(ev, tbody) {
    var tr = document.createElement("tr");
    tr.dataset.testid = "live-row";
    tr.dataset.eventId = ev.id;
    cell(tr, (ev.timestamp || "").replace("T", " ").replace(/\.\d+Z$/, "Z"));
    var td = document.createElement("td");
    var a = document.createElement("a");
    a.href = "/agents/" + encodeURIComponent(ev.agent_id);
    a.textContent = ev.agent_id;
    td.appendChild(a);
    tr.appendChild(td);
    cell(tr, ev.direction);
    cell(tr, (ev.provider || "–") + " / " + (ev.model || "–"));
    cell(tr, ev.status_code, "n");
    cell(tr, ev.total_tokens, "n");
    cell(tr, ev.cost_usd === null ? null : "$" + Number(ev.cost_usd).toFixed(4), "n");
    cell(tr, ev.error);
    tbody.insertBefore(tr, tbody.firstChild);
    while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(tbody.rows.length - 1);
  }

  function start() {
    var table = document.getElementById("live-table");
    var state = document.getElementById("live-state");
    if (!table || !window.EventSource) return;
    if (source) source.close();
    var tbody = document.getElementById("live-rows");
    source = new EventSource(table.dataset.stream);
    source.onopen = function () { state.textContent = "live"; state.dataset.state = "live"; };
    source.onerror = function () { state.textContent = "reconnecting…"; state.dataset.state = "reconnecting"; };
    source.addEventListener("agent_event", function (msg) {
      try { add(JSON.parse(msg.data), tbody); } catch (e) { /* a malformed message: skip it */ }
    });
  }

  function stopIfGone() {
    if (source && !document.getElementById("live-table")) { source.close(); source = null; }
  }

  document.addEventListener("DOMContentLoaded", start);
  // hx-boost swaps pages without a reload: start on arriving at Live, stop on leaving it.
  document.addEventListener("htmx:afterSettle", function () {
    if (document.getElementById("live-table")) { if (!source) start(); } else { stopIfGone(); }
  });
})();
