"""The page served at ``/``: a placeholder until the live dashboard lands (no external assets)."""

INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stratum-proxy</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
code { background: #f3f3f3; padding: 0 .25rem; }
li { margin: .3rem 0; }
</style>
</head>
<body>
<h1>stratum-proxy</h1>
<p>The live dashboard is coming. Until then the control plane is available here:</p>
<ul>
<li><a href="/api/v1/status">/api/v1/status</a>: uptime, rigs, hashrate, active pools, counters</li>
<li><a href="/api/v1/pools">/api/v1/pools</a>: per-pool state, shares, latency</li>
<li><a href="/api/v1/rigs">/api/v1/rigs</a>: connected rigs
(<code>?offset=&amp;limit=&amp;pool=&amp;q=</code>)</li>
<li><a href="/api/v1/events">/api/v1/events</a>: pool switches and other decisions</li>
<li><a href="/api/v1/history">/api/v1/history</a>: per-minute pool history
(<code>?pool=&amp;minutes=</code>)</li>
<li><a href="/api/v1/rentals">/api/v1/rentals</a>: rented hashpower</li>
<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>
</ul>
<p>Writes (<code>PATCH /api/v1/pools/{name}</code>, <code>POST /api/v1/pools/{name}/drain</code>,
<code>POST /api/v1/pools/{name}/undrain</code>, <code>POST /api/v1/reload</code>) need
<code>Authorization: Bearer &lt;api.token&gt;</code>.</p>
</body>
</html>
"""
