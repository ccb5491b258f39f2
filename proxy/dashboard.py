"""The status page: one self-contained HTML document (CSS, script and SVG charts inline).

Nothing is fetched from elsewhere: the page carries the first ``/-/stats`` document, draws
it at once, then fetches ``-/stats`` every two seconds and redraws in place (no reload). The
charts are hand-written SVG paths. Laid out as cards that reflow down to one column, so it
reads on a 480 px wide screen without scrolling sideways.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

from .route_view import ROUTES_JS

__all__ = ["PAGE_POLICY", "render_page"]

REFRESH_MS = 2000


def render_page(snapshot: dict[str, Any]) -> str:
    """The page, with ``snapshot`` (a ``/-/stats`` document) embedded for the first paint."""
    # "<" escaped so that no string in the document can close the script element.
    data = json.dumps(snapshot, separators=(",", ":")).replace("<", "\\u003c")
    title = f"lbrec proxy {snapshot.get('generation') or ''}".strip()
    return (
        _PAGE.replace("__TITLE__", _escape(title))
        .replace("__REFRESH_MS__", str(REFRESH_MS))
        .replace("__INITIAL__", data)
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
:root{--bg:#f4f5f7;--card:#fff;--fg:#1d2330;--mute:#6b7385;--line:#e1e4ea;
--up:#1a9b55;--down:#d63b3b;--checking:#c98a06;--ejected:#d0621b;--draining:#8a8f9c;
--c2:#1a9b55;--c3:#3577d4;--c4:#d99a06;--c5:#d63b3b;--c0:#a0a6b4;--rps:#3577d4;--p99:#8a4fd6}
@media (prefers-color-scheme:dark){:root{--bg:#14171d;--card:#1d222b;--fg:#e4e7ee;
--mute:#8d95a7;--line:#2c323d}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1280px;margin:0 auto;padding:12px}
a{color:var(--rps)}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:4px 14px;margin-bottom:10px}
header h1{font-size:18px;margin:0}
.meta{color:var(--mute);font-size:12px;overflow-wrap:anywhere}
.meta b{color:var(--fg);font-weight:600}
nav{margin-left:auto;font-size:13px}
nav a{margin-left:10px}
.live{display:inline-block;width:8px;height:8px;border-radius:50%;background:var(--up);
margin-right:4px;vertical-align:middle}
.live.stale{background:var(--down)}
.banner{background:#fde8e8;color:#7a1c1c;border-radius:6px;padding:6px 10px;margin:8px 0;
overflow-wrap:anywhere}
.banner[hidden]{display:none}
.rev{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px 12px;
margin-bottom:10px;font-size:13px;overflow-wrap:anywhere}
.rev code{font-weight:600}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(110px,1fr));gap:8px;
margin-bottom:12px}
.tile{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px 10px}
.tile .v{font-size:20px;font-weight:600;font-variant-numeric:tabular-nums}
.tile .k{color:var(--mute);font-size:12px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,360px),1fr));gap:10px}
.card{background:var(--card);border:1px solid var(--line);border-left:5px solid var(--mute);
border-radius:8px;padding:10px 12px;min-width:0}
.card.up{border-left-color:var(--up)}.card.down{border-left-color:var(--down)}
.card.checking{border-left-color:var(--checking)}.card.ejected{border-left-color:var(--ejected)}
.card.draining{border-left-color:var(--draining);opacity:.8}
.top{display:flex;align-items:center;gap:8px;flex-wrap:wrap}
.name{font-weight:600;font-size:15px;overflow-wrap:anywhere}
.pill{border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600;color:#fff;
background:var(--mute);white-space:nowrap}
.pill.up{background:var(--up)}.pill.down{background:var(--down)}
.pill.checking{background:var(--checking)}.pill.ejected{background:var(--ejected)}
.pill.draining{background:var(--draining)}
.pill.version{background:#5b5bd6}
.for{color:var(--mute);font-size:12px}
.url{color:var(--mute);font-size:12px;overflow-wrap:anywhere;margin:2px 0 6px}
.nums{display:grid;grid-template-columns:repeat(4,1fr);gap:4px;margin:6px 0}
.nums div{min-width:0}
.nums .v{font-weight:600;font-variant-numeric:tabular-nums;white-space:nowrap}
.nums .k{color:var(--mute);font-size:11px}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:8px;margin:6px 0}
.chart{min-width:0}
.chart .k{color:var(--mute);font-size:11px;display:flex;justify-content:space-between;gap:4px}
.chart svg{display:block;width:100%;height:38px;background:var(--bg);border-radius:4px}
.bar{position:relative;height:8px;border-radius:4px;background:var(--bg);overflow:visible;
margin:3px 0}
.bar .fill{position:absolute;left:0;top:0;bottom:0;border-radius:4px;background:var(--rps)}
.bar .mark{position:absolute;top:-3px;bottom:-3px;width:2px;background:var(--fg)}
.split{display:flex;height:8px;border-radius:4px;overflow:hidden;background:var(--bg);margin:3px 0}
.split span{display:block;height:100%}
.row{display:flex;justify-content:space-between;gap:8px;font-size:12px;color:var(--mute);
flex-wrap:wrap}
.row b{color:var(--fg);font-weight:600}
.check{font-size:12px;margin-top:6px;overflow-wrap:anywhere}
.check code{font-weight:600}
.check.fail code{color:var(--down)}.check.ok code{color:var(--up)}
.certs{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:8px 12px;margin-bottom:12px;font-size:13px;overflow-x:auto}
.certs[hidden]{display:none}
.certs h2{font-size:14px;margin:0 0 6px}
.certs table{border-collapse:collapse;width:100%}
.certs th{color:var(--mute);font-weight:600;font-size:12px;text-align:left;padding:2px 8px 2px 0}
.certs td{padding:3px 8px 3px 0;vertical-align:top;border-top:1px solid var(--line)}
.certs td.err{color:var(--down);overflow-wrap:anywhere;min-width:12em}
.pill.valid{background:var(--up)}.pill.failing,.pill.pending{background:var(--checking)}
.pill.expired,.pill.refused{background:var(--down)}
.key span{display:inline-block;width:8px;height:8px;border-radius:2px;margin:0 3px 0 8px}
footer{color:var(--mute);font-size:12px;margin-top:12px}
</style></head>
<body>
<main>
<header>
<h1><span class="live" id="live" title="live"></span>lbrec proxy</h1>
<span class="meta" id="meta"></span>
<nav><a href="metrics">/metrics</a><a href="-/pool">/-/pool</a><a href="-/stats">/-/stats</a></nav>
</header>
<div class="banner" id="stale" hidden></div>
<div class="banner" id="reload-error" hidden></div>
<div class="rev" id="revision"></div>
<section class="tiles" id="tiles"></section>
<section class="certs" id="certs" hidden></section>
<section class="cards" id="cards"></section>
<footer id="foot"></footer>
<noscript><p>This page draws with JavaScript; the figures are at
<a href="-/stats">/-/stats</a> and <a href="-/pool">/-/pool</a>.</p></noscript>
</main>
<script id="initial" type="application/json">__INITIAL__</script>
<script>
"use strict";
const REFRESH_MS = __REFRESH_MS__;
let SLOTS = 120;  // chart points: the ring's length, from the document
const CLASSES = [["2xx", "--c2"], ["3xx", "--c3"], ["4xx", "--c4"], ["5xx", "--c5"],
  ["1xx", "--c0"], ["other", "--c0"]];
const state = {loadedAt: Date.now(), refreshes: 0, failures: 0, lastOk: Date.now()};
window.lbrecDashboard = state;

function esc(value) {
  return String(value).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;"})[c]);
}
function dur(s) {
  s = Math.max(0, Math.floor(s));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  if (s < 86400) {
    return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  }
  return Math.floor(s / 86400) + "d" + Math.floor(s % 86400 / 3600) + "h";
}
function num(v, digits) {
  if (v === null || v === undefined) return "\u2013";
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e4) return (v / 1e3).toFixed(1) + "k";
  return Number(v).toFixed(digits === undefined ? 0 : digits);
}
function rate(v) { return v >= 100 ? num(v) : num(v, v >= 10 ? 1 : 2); }
function ms(v) {
  if (v === null || v === undefined) return "\u2013";
  if (v >= 1000) return (v / 1000).toFixed(2) + " s";
  return (v >= 10 ? v.toFixed(0) : v.toFixed(v >= 1 ? 1 : 2)) + " ms";
}
function pct(v) { return v === null || v === undefined ? "\u2013" : (v * 100).toFixed(0) + "%"; }

// A sparkline: each series a path over SLOTS fixed slots, newest on the right, gaps for null.
function spark(series, colors, fillFirst, title) {
  let max = 0;
  for (const s of series) for (const v of s) if (v !== null && v > max) max = v;
  const W = 120, H = 38, top = 3;
  const scale = max > 0 ? (H - top - 1) / max : 0;
  let out = "";
  series.forEach((values, n) => {
    const offset = SLOTS - values.length;
    let d = "", open = false, first = null, last = null;
    values.forEach((v, i) => {
      if (v === null) { open = false; return; }
      const x = ((offset + i) / (SLOTS - 1) * W).toFixed(1);
      const y = (H - 1 - v * scale).toFixed(1);
      d += (open ? "L" : "M") + x + " " + y;
      open = true;
      if (first === null) first = x;
      last = x;
    });
    if (!d) return;
    if (n === 0 && fillFirst && first !== null) {
      out += `<path d="${d}L${last} ${H}L${first} ${H}Z" fill="var(${colors[n]})" opacity=".15"/>`;
    }
    out += `<path d="${d}" fill="none" stroke="var(${colors[n]})" stroke-width="1.5" ` +
      `vector-effect="non-scaling-stroke" stroke-linejoin="round"/>`;
  });
  return `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img">` +
    `<title>${esc(title)}</title>${out}</svg>`;
}

function splitBar(status) {
  const total = CLASSES.reduce((a, [k]) => a + (status[k] || 0), 0);
  if (!total) return `<div class="split"></div>`;
  return `<div class="split">` + CLASSES.filter(([k]) => status[k]).map(([k, c]) =>
    `<span style="width:${(status[k] / total * 100).toFixed(2)}%;background:var(${c})" ` +
    `title="${k}: ${status[k]}"></span>`).join("") + `</div>`;
}
function splitText(status) {
  return ["2xx", "3xx", "4xx", "5xx"].map(k => `${k} <b>${num(status[k] || 0)}</b>`).join(" · ");
}

function card(b, now, span) {
  const s = b.series;
  const check = b.check;
  const checkLine = check === null ? `<div class="check">check: not yet</div>` :
    `<div class="check ${check.ok ? "ok" : "fail"}" title="${esc(check.detail)}">check: ` +
    `<code>${esc(check.summary)}</code> · ${dur(now - check.at)} ago</div>`;
  const expected = b.expected_share, observed = b.observed_share;
  return `<article class="card ${esc(b.state)}" data-backend="${esc(b.key)}"
 data-state="${esc(b.state)}">
<div class="top"><span class="name">${esc(b.name)}</span>
<span class="pill ${esc(b.state)}">${esc(b.state.toUpperCase())}</span>
${b.version ? `<span class="pill version" title="canary split">${esc(b.version)}
 ${esc(b.percent)}%</span>` : ""}
<span class="for">for ${dur(now - b.since)}</span>
${b.in_rotation ? "" : `<span class="for">· out of rotation</span>`}</div>
<div class="url">${esc(b.url)}${b.instance ? " · " + esc(b.instance) : ""}</div>
<div class="nums">
<div><div class="v" data-field="rps">${rate(b.rps)}</div><div class="k">req/s</div></div>
<div><div class="v" data-field="eps">${rate(b.eps)}</div><div class="k">err/s</div></div>
<div><div class="v">${ms(b.p50_ms)}</div><div class="k">p50</div></div>
<div><div class="v">${ms(b.p99_ms)}</div><div class="k">p99</div></div>
</div>
<div class="charts">
<div class="chart"><div class="k"><span>req/s · <span style="color:var(--c5)">err/s</span></span>
<span>${span}</span></div>${spark([s.rps, s.eps], ["--rps", "--c5"], true,
  `requests/s (blue) and errors/s (red), last ${span}`)}</div>
<div class="chart"><div class="k"><span>p50 · <span style="color:var(--p99)">p99</span></span>
<span>${ms(Math.max(0, ...s.p99.filter(v => v !== null)) || null)}</span></div>
${spark([s.p50, s.p99], ["--rps", "--p99"], false,
  `p50 (blue) and p99 (purple), last ${span}`)}</div>
</div>
<div class="row"><span>share <b>${pct(observed)}</b> of traffic (1 min)</span>
<span>expected <b>${pct(expected)}</b> · weight <b>${b.weight}</b></span></div>
<div class="bar" title="observed share (bar) against expected (mark)">
<div class="fill" style="width:${((observed || 0) * 100).toFixed(1)}%"></div>
<div class="mark" style="left:calc(${(expected * 100).toFixed(1)}% - 1px)"></div></div>
${splitBar(b.status)}
<div class="row"><span>${splitText(b.status)}</span></div>
<div class="row"><span>requests <b data-field="requests">${b.requests}</b>
 · errors <b data-field="errors">${b.errors}</b></span>
<span>in flight <b>${b.inflight}</b> · conns <b>${b.connections}</b></span></div>
${checkLine}
</article>`;
}

function revision(doc) {
  const r = doc.revision;
  if (!r || !r.commit) {
    return "deployed revision: not known (backends.json carries none; " +
      "<code>lbrec sync</code> records it)";
  }
  const when = r.time ? Date.parse(r.time) : NaN;
  const ago = isNaN(when) ? esc(r.time || "") :
    `${esc(r.time)} (${dur(doc.now - when / 1000)} ago)`;
  const message = (r.message || "").split("\n")[0];
  return `deployed <code title="${esc(r.commit)}">${esc(r.commit.slice(0, 8))}</code> ` +
    `${esc(message)}${r.author ? ` — ${esc(r.author)}` : ""}${ago ? ` · ${ago}` : ""}` +
    `${r.source ? ` · <span class="meta">${esc(r.source)}</span>` : ""}`;
}

// Certificates the TLS listener serves (and names the manager orders that none serves yet):
// names, issuer, expiry, next renewal, last error. Never a key: the document has none.
function day(iso) { return iso ? esc(iso.slice(0, 10)) : "\u2013"; }
function certRow(c, now) {
  const left = c.expires_in_s === null ? "" :
    ` <span class="for">(${c.expires_in_s > 0 ? "in " + dur(c.expires_in_s) : "expired"})</span>`;
  const next = c.next_renewal ? esc(c.next_renewal.slice(0, 16).replace("T", " ")) +
    (Date.parse(c.next_renewal) / 1000 <= now ?
    ` <span class="for">(due)</span>` : "") : (c.source === "file" ? "yours" : "\u2013");
  const error = c.last_error ? esc(c.last_error) +
    (c.failures > 1 ? ` (${c.failures} failures)` : "") +
    (c.serving && c.state === "failing" ? " \u2014 the certificate in service stays" : "") : "";
  return `<tr data-cert="${esc(c.name)}" data-state="${esc(c.state)}">` +
    `<td><b>${esc(c.name)}</b>${c.names.length > 1 ?
      `<div class="for">${esc(c.names.filter(n => n !== c.name).join(", "))}</div>` : ""}</td>` +
    `<td><span class="pill ${esc(c.state)}">${esc(c.state)}</span>` +
    `${c.serving ? "" : ` <span class="for">not served</span>`}</td>` +
    `<td>${esc(c.issuer || "\u2013")}</td><td>${day(c.not_after)}${left}</td>` +
    `<td>${next}</td><td class="err" data-field="last-error">${error || "\u2013"}</td></tr>`;
}
function certs(tls, now) {
  const section = document.getElementById("certs");
  const rows = tls ? tls.certificates : [];
  const problems = tls ? tls.load_errors.concat(tls.manager.error ? [tls.manager.error] : []) : [];
  section.hidden = !rows.length && !problems.length;
  if (section.hidden) return;
  section.innerHTML = `<h2>certificates</h2>` + problems.map(p =>
    `<div class="banner" data-field="cert-load-error">${esc(p)}</div>`).join("") +
    `<table><thead><tr><th>name</th><th>state</th><th>issuer</th><th>expires</th>` +
    `<th>next renewal</th><th>last error</th></tr></thead><tbody>` +
    rows.map(c => certRow(c, now)).join("") + `</tbody></table>`;
}

function tile(value, key, field) {
  return `<div class="tile"><div class="v"${field ? ` data-field="${field}"` : ""}>${value}</div>` +
    `<div class="k">${key}</div></div>`;
}

function render(doc) {
  const t = doc.totals, rt = doc.runtime || {};
  SLOTS = doc.buckets || SLOTS;
  document.getElementById("meta").innerHTML =
    `version <b>${esc(doc.version)}</b> · generation <b>${esc(doc.generation || "\u2013")}</b>` +
    ` · up ${dur(doc.uptime_s)} · reloads ${doc.reloads}` +
    (doc.reload_errors ? ` · rejected files ${doc.reload_errors}` : "") +
    ` · ${esc(rt.event_loop || "")}`;
  document.getElementById("revision").innerHTML = revision(doc);
  const err = document.getElementById("reload-error");
  err.hidden = !doc.last_reload_error;
  err.textContent = doc.last_reload_error ? "last reload rejected: " + doc.last_reload_error : "";
  document.getElementById("tiles").innerHTML =
    tile(`${t.up}/${t.backends}`, "backends up") +
    tile(rate(t.rps), "req/s (10 s)", "total-rps") +
    tile(rate(t.eps), "err/s (10 s)") +
    tile(num(t.requests), "requests", "total-requests") +
    tile(num(t.errors), "errors") +
    tile(num(doc.client_connections), "client conns") +
    `<div class="tile" style="grid-column:1/-1;min-width:0">${splitBar(t.status)}` +
    `<div class="k">${splitText(t.status)}</div></div>`;
  certs(doc.tls, doc.now);
  routes(doc.routes || []);
  document.getElementById("cards").innerHTML =
    doc.backends.map(b => card(b, doc.now, dur(doc.bucket_s * SLOTS))).join("") ||
    `<p class="meta">no backends configured</p>`;
  document.getElementById("foot").innerHTML =
    `${esc(rt.parser || "")} · python ${esc(rt.python || "")}` +
    ` · rates over ${doc.rate_window_s} s,` +
    ` latency (time to the answer's first byte) over ${doc.latency_window_s} s,` +
    ` charts ${doc.bucket_s} s a point · updated ${new Date(doc.now * 1000).toLocaleTimeString()}`;
  document.body.dataset.refreshes = String(state.refreshes);
}

async function refresh() {
  if (document.hidden) return;
  try {
    const response = await fetch("-/stats", {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    const doc = await response.json();
    state.refreshes += 1;
    state.lastOk = Date.now();
    render(doc);
    document.getElementById("live").classList.remove("stale");
    document.getElementById("stale").hidden = true;
  } catch (error) {
    state.failures += 1;
    document.getElementById("live").classList.add("stale");
    const banner = document.getElementById("stale");
    banner.hidden = false;
    banner.textContent = `cannot reach the proxy (${error.message}); figures are ` +
      `${dur((Date.now() - state.lastOk) / 1000)} old, retrying`;
  }
}

__ROUTES_JS__
render(JSON.parse(document.getElementById("initial").textContent));
setInterval(refresh, REFRESH_MS);
document.addEventListener("visibilitychange", refresh);
</script>
</body></html>
""".replace("__ROUTES_JS__", ROUTES_JS)


def _script_hashes(page: str) -> str:
    """``'sha256-...'`` of each inline script that runs (a JSON data block does not)."""
    bodies = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
        for body in bodies
    )


# The status page's Content-Security-Policy: its one inline script by hash (no other script
# runs, however a figure is crafted), inline styles (its own, and the bars' widths set in
# style attributes), fetches of ``-/stats`` on the same origin, and nothing else; never framed.
PAGE_POLICY = (
    "default-src 'none'; "
    f"script-src {_script_hashes(_PAGE.replace('__REFRESH_MS__', str(REFRESH_MS)))}; "
    "style-src 'unsafe-inline'; "
    "connect-src 'self'; "
    "img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
