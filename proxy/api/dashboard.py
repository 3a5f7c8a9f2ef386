"""The operator dashboard served at ``/``: plain HTML, CSS and JS from ``static/``, no build step.

The page is one self-contained document: the stylesheet and the script are inlined when this
module is imported, so the page needs no request but the API calls it makes (a farm network
has no internet, and a half-loaded page at 3 a.m. helps nobody).  ``INDEX_HEADERS`` carries a
Content-Security-Policy that allows exactly that script and that stylesheet (by hash) and
connections to this origin only: a worker name or a pool's error text is untrusted input,
and even if it ever reached the page as markup it could not run.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import resources

_STATIC = resources.files(__package__).joinpath("static")
STYLESHEET_TAG = '<link rel="stylesheet" href="dashboard.css">'
SCRIPT_TAG = '<script src="dashboard.js"></script>'


def _read(name: str) -> str:
    return _STATIC.joinpath(name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def build_index() -> tuple[str, dict[str, str]]:
    """The page with its CSS and JS inlined, and the response headers that go with it."""
    html, css, js = _read("index.html"), _read("dashboard.css"), _read("dashboard.js")
    if html.count(STYLESHEET_TAG) != 1 or html.count(SCRIPT_TAG) != 1:
        raise RuntimeError("proxy/api/static/index.html must reference dashboard.css and dashboard.js once")
    style = f"\n{css}"
    script = f"\n{js}"
    page = (html.replace(STYLESHEET_TAG, f"<style>{style}</style>")
            .replace(SCRIPT_TAG, f"<script>{script}</script>"))
    csp = "; ".join([
        "default-src 'none'",
        f"script-src {_sha256(script)}",
        f"style-src {_sha256(style)}",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])
    headers = {"Content-Security-Policy": csp, "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
    return page, headers


INDEX_HTML, INDEX_HEADERS = build_index()
