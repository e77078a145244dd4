"""Render a quantdebug HTML report and screenshot it with headless chromium.

    python scripts/screenshot_report.py report.png                      # a small built-in model run
    python scripts/screenshot_report.py report.png --stats out/stats    # a saved statistics folder
    python scripts/screenshot_report.py report.png --whole-model --demo-extras --html report.html

``--demo-extras`` adds made-up histograms and a made-up fix trace, only to preview those sections.
The helpers `find_chromium`, `run_chromium` and `console_messages` are also used by the tests.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
)
_CONSOLE = re.compile(r":CONSOLE(?:\(\d+\)|:\d+)?\]\s*(.*)")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(
    html_path: Path,
    *,
    screenshot: Path | None = None,
    dump_dom: bool = False,
    window: tuple[int, int] = (1280, 2000),
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Load ``html_path`` (file:// URL) headless, with a throw-away profile; returns the process result."""
    exe = find_chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="qd-chromium-") as profile:
        args = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}"]
        if screenshot is not None:
            args.append(f"--screenshot={screenshot.resolve()}")
        if dump_dom:
            args.append("--dump-dom")
        args.append(html_path.resolve().as_uri())
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def console_messages(stderr: str) -> list[str]:
    """Every message the page wrote to its console (errors, CSP violations, uncaught exceptions, logs)."""
    return [m.group(1) for line in stderr.splitlines() if (m := _CONSOLE.search(line))]


def demo_extras(statistics: Any, seed: int = 0) -> None:
    """Made-up histograms and fix trace, to preview those report sections."""
    import numpy as np

    rng = np.random.default_rng(seed)
    hists: dict[str, Any] = {}
    for row in statistics.layers:
        lo, hi = row.qmin * row.scale - row.zero_point * row.scale, row.qmax * row.scale - row.zero_point * row.scale
        x = rng.normal((lo + hi) / 2, (hi - lo) / 6, 4000)
        q = np.clip(np.round(x / row.scale) * row.scale, lo, hi)
        edges = np.linspace(lo, hi, 49)
        hists[row.tensor_name] = {
            "edges": edges.tolist(),
            "float": np.histogram(x, edges)[0].tolist(),
            "quantized": np.histogram(q, edges)[0].tolist(),
        }
    statistics.extras["histograms"] = hists
    trace = []
    quality = 0.80
    for step in range(12):
        cand = quality + float(rng.normal(0.012, 0.01))
        accepted = cand > quality
        trace.append(
            {
                "quality": cand,
                "non_int8_nodes": step + 1,
                "size": 1000 + 40 * step,
                "accepted": accepted,
                "changes": [f"node_{step} -> int16"],
            }
        )
        quality = max(quality, cand)
    statistics.extras["fix"] = {"trace": trace, "float_quality": 0.95, "int8_quality": 0.80, "fixed_quality": quality}


def builtin_statistics(whole_model: bool) -> Any:
    """Statistics of the test suite's ``all_ops`` model, run on random inputs."""
    import numpy as np

    import quantdebug as qd

    sys.path.insert(0, str(ROOT))
    from tests import models

    rng = np.random.default_rng(0)
    model = models.all_ops(rng)
    samples = [models.input_feed(model, rng) for _ in range(8)]
    options = qd.DebugOptions(verify_mode="whole_model") if whole_model else None
    debugger = qd.QuantizationDebugger(model, lambda: iter(samples), debug_options=options)
    debugger.run()
    return debugger.statistics()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("png", type=Path, help="where to write the screenshot")
    parser.add_argument("--stats", type=Path, help="a statistics folder (default: run a small built-in model)")
    parser.add_argument("--html", type=Path, help="also keep the HTML report here")
    parser.add_argument("--whole-model", action="store_true", help="built-in run in whole-model mode")
    parser.add_argument("--demo-extras", action="store_true", help="add made-up histograms and fix trace")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args(argv)

    import quantdebug as qd
    from quantdebug.report import save_html

    statistics = qd.Statistics.load(args.stats) if args.stats else builtin_statistics(args.whole_model)
    if args.demo_extras:
        demo_extras(statistics)
    with tempfile.TemporaryDirectory(prefix="qd-report-") as tmp:
        html_path = args.html or Path(tmp) / "report.html"
        save_html(statistics, html_path)
        result = run_chromium(html_path, screenshot=args.png, window=(args.width, args.height))
    messages = console_messages(result.stderr)
    for message in messages:
        print(f"console: {message}", file=sys.stderr)
    if result.returncode != 0 or not args.png.is_file() or args.png.stat().st_size == 0:
        print(result.stderr[-4000:], file=sys.stderr)
        print(f"chromium failed (exit {result.returncode})", file=sys.stderr)
        return 1
    worst = max((r.rmse_over_scale for r in statistics.layers if math.isfinite(r.rmse_over_scale)), default=math.nan)
    print(f"{args.png}: {args.png.stat().st_size} bytes, {len(statistics.layers)} layers, worst rmse/scale {worst:.3g}")
    return 1 if messages else 0


if __name__ == "__main__":
    sys.exit(main())
