"""The status page served at ``/``: the portfolio and pipeline at a glance, no Grafana needed.

One self-contained HTML document (no external assets) that reads ``/api/status`` every
few seconds and renders it with ``textContent`` only (nothing from the API is parsed as HTML).
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>CryptoSpreadEdge — status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #0f1419; color: #e6e6e6; }
  header { padding: 12px 20px; background: #1a2129; display: flex; gap: 24px; align-items: baseline; }
  h1 { font-size: 18px; margin: 0; }
  main { display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: 16px;
         padding: 16px 20px; }
  section { background: #1a2129; border-radius: 6px; padding: 12px 16px; }
  h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .05em; color: #8b98a5; margin: 0 0 8px; }
  .big { font-size: 28px; font-weight: 600; }
  table { width: 100%; border-collapse: collapse; }
  td { padding: 2px 0; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
  .ok { color: #3fb950; } .bad { color: #f85149; } .muted { color: #8b98a5; }
  #halt.bad { background: #5a1d1d; padding: 2px 8px; border-radius: 4px; }
</style>
</head>
<body>
<header>
  <h1>CryptoSpreadEdge</h1>
  <span id="halt" class="muted">trading: …</span>
  <span id="updated" class="muted">loading…</span>
</header>
<main>
  <section><h2>Portfolio value</h2>
    <div class="big" id="total-value">—</div>
    <div class="muted">PnL <span id="pnl-total">—</span> · drawdown <span id="drawdown">—</span></div>
  </section>
  <section><h2>Allocation</h2><table id="allocation"></table></section>
  <section><h2>PnL by exchange</h2><table id="pnl"></table></section>
  <section><h2>Rebalance</h2>
    <div>leader: <span id="leader">—</span></div>
    <div>last: <span id="last-plan">—</span></div>
  </section>
  <section><h2>Pipeline (recent)</h2><table id="recent"></table></section>
  <section><h2>Dependencies</h2><table id="deps"></table></section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const money = (x) => x == null ? "—" : x.toLocaleString(undefined, {maximumFractionDigits: 2});
const pct = (x) => x == null ? "—" : (100 * x).toFixed(2) + " %";
function rows(table, entries, fmt, cls) {
  table.replaceChildren();
  for (const [k, v] of entries) {
    const tr = document.createElement("tr");
    const a = document.createElement("td"); a.textContent = k;
    const b = document.createElement("td"); b.className = "n " + (cls ? cls(v) : ""); b.textContent = fmt(v);
    tr.append(a, b); table.append(tr);
  }
}
async function refresh() {
  try {
    const r = await fetch("/api/status", {cache: "no-store"});
    const s = await r.json();
    if (!r.ok) throw new Error(s.error || r.status);
    const halt = $("halt");
    const why = s.halt.reason ? ": " + s.halt.reason : "";
    halt.textContent = s.halt.halted ? "TRADING HALTED" + why : "trading: on";
    halt.className = s.halt.halted ? "bad" : "ok";
    const p = s.portfolio;
    if (p) {
      $("total-value").textContent = money(p.total_value) + " " + p.quote;
      $("pnl-total").textContent = money(p.pnl_total);
      $("drawdown").textContent = pct(p.drawdown);
      rows($("allocation"), Object.entries(p.allocation).sort((a, b) => b[1] - a[1]), pct);
      rows($("pnl"), Object.entries(p.pnl_by_exchange), money, (v) => v < 0 ? "bad" : "ok");
    } else {
      $("total-value").textContent = "not valued yet";
    }
    $("leader").textContent = s.rebalance.leader || "none";
    const last = s.rebalance.last;
    $("last-plan").textContent = last
      ? last.status + ", " + last.orders.length + " orders" + (last.dry_run ? " (dry run)" : "")
      : "none yet";
    rows($("recent"), Object.entries(s.recent), (v) => String(v));
    rows($("deps"), Object.entries(s.dependencies), (v) => v ? "up" : "DOWN", (v) => v ? "ok" : "bad");
    $("updated").textContent = "updated " + new Date(s.ts_ms).toLocaleTimeString();
    $("updated").className = "muted";
  } catch (e) {
    $("updated").textContent = "API unreachable: " + e.message;
    $("updated").className = "bad";
  }
}
refresh();
setInterval(refresh, 3000);
</script>
</body>
</html>
"""
