"""The page's static assets, read from ``report/assets/`` with `importlib.resources`, and the
Content-Security-Policy that pins them by the SHA-256 of the exact text inlined.

The script (table sorting and filtering) reads the DOM only; no data is ever placed in it. The
severity colours come from `quantdebug.thresholds.SEVERITY`, so their rules are generated here
and appended to the stylesheet rather than written into the file.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from importlib import resources

from quantdebug.thresholds import SEVERITY


def _read(name: str) -> str:
    return resources.files("quantdebug.report").joinpath("assets", name).read_text(encoding="utf-8")


@functools.cache
def style() -> str:
    """The stylesheet inlined in ``<style>``: the file, then one rule set per severity level."""
    severities = "".join(
        f".sev-{k}{{background:{c};}}.sw-{k}{{background:{c};}}.sev-{k}-text{{color:{c};}}"
        for k, (_, c) in SEVERITY.items()
    )
    return "\n" + _read("report.css") + severities + "\n"


@functools.cache
def script() -> str:
    """The script inlined in ``<script>``."""
    return "\n" + _read("report.js")


def sha256(text: str) -> str:
    """The CSP source expression that allows exactly ``text`` (``'sha256-...'`` without the quotes)."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def content_security_policy() -> str:
    """Nothing but the inlined style and script, and data: images; no network, no forms, no base URL."""
    return (
        f"default-src 'none'; script-src '{sha256(script())}'; style-src '{sha256(style())}'; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
