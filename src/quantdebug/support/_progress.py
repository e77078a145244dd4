"""Progress bars with samples per second on a terminal, silence elsewhere."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(label: str, enabled: bool | None = None) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; draws a bar only on a terminal unless ``enabled`` says otherwise."""
    show = sys.stderr.isatty() if enabled is None else enabled
    if not show:
        yield lambda n: None
        return
    from tqdm import tqdm  # start-up time: only when a bar is drawn

    with tqdm(desc=label, unit="sample", file=sys.stderr, leave=False, dynamic_ncols=True) as bar:
        yield bar.update
