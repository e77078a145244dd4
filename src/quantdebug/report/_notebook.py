"""The culprits frame: a pandas DataFrame that Jupyter renders with impact bars (pandas loads only here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from quantdebug.fix import COLUMNS
from quantdebug.report._tables import NOTEBOOK_ROWS, culprits_table, denylist_line


class CulpritFrame(pd.DataFrame):
    """``debugger.culprits()``: a pandas DataFrame ranked by impact that renders with impact bars in Jupyter.

    ``attrs``: ``suggested_denylist`` (node names), ``denylist_removes`` (share of the output noise),
    ``all_quantized_sqnr_db``, ``samples``, ``runs`` (switchable-graph runs) and ``seconds``.
    """

    @property
    def _constructor(self) -> type[CulpritFrame]:
        return CulpritFrame

    @classmethod
    def from_measurement(cls, measured: Mapping[str, Any]) -> CulpritFrame:
        frame = cls.from_records(list(measured["rows"]), columns=list(COLUMNS))
        frame.attrs.update({k: v for k, v in measured.items() if k not in ("rows", "denylist")})
        frame.attrs["suggested_denylist"] = list(measured["denylist"])
        return frame

    def _repr_html_(self) -> str:  # type: ignore[override]
        rows = self.to_dict("records")
        measured = {"denylist": self.attrs.get("suggested_denylist", []), **self.attrs}
        more = f"<p>… {len(rows) - NOTEBOOK_ROWS} more rows in the frame</p>" if len(rows) > NOTEBOOK_ROWS else ""
        return (
            "<div><h4>Likely culprits (by effect on the outputs)</h4>"
            f"{culprits_table(rows, NOTEBOOK_ROWS)}{more}{denylist_line(measured)}</div>"
        )
