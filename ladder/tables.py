"""How a chapter page shows a table: one style for the DataFrames of every chapter.

Column names stay what the code and the result files use (`val_loss`, `max_abs_diff`); `styled` gives the
page its labels, with their units, and a layout that fits the book's text column: a cell or label may wrap
between words but never inside one (a browser would otherwise break "ARC-C" after its hyphen and a number
range after its dash). Numbers are rounded by the unit in their label, so a column reads the same in every
chapter.
"""
from __future__ import annotations

import html
import re

# decimals by the unit in a column's label; a label without one gets `styled`'s `precision`
UNIT_FORMATS = {"(%)": "{:.1f}", "(×)": "{:.2f}", "(ms)": "{:.1f}", "(tokens/s)": "{:,.0f}", "(nats)": "{:.3f}",
                "(s)": "{:.1f}"}
MISSING = "–"


def _label(column) -> str:
    return " ".join(map(str, column)) if isinstance(column, tuple) else str(column)


def words(text) -> str:
    """`text` as HTML that wraps only between words: each space-separated word kept on one line."""
    return " ".join(f'<span style="white-space: nowrap">{html.escape(w)}</span>' for w in str(text).split(" "))


def is_prose(value) -> bool:
    """Text to be read as words ("ladder hid 98% of the link wait"), not a number written as text ("1.40–1.56",
    "1.41x", "–"): it holds a run of two or more letters."""
    return isinstance(value, str) and re.search(r"[^\W\d_]{2,}", value) is not None


def _formatter(fmt: str | None):
    # text (a "–" already filled in, a CI written as "1.0–1.2") is shown as it is; NaN / None as MISSING
    def show(v):
        if v is None or (isinstance(v, float) and v != v):
            return words(MISSING)
        return words(v if isinstance(v, str) or fmt is None else fmt.format(v))
    return show


def styled(df, caption: str | None = None, precision: int = 2, labels: dict | None = None,
           formats: dict | None = None):
    """A pandas Styler for a chapter table.

    * `labels` renames columns for the page only (the DataFrame is not changed);
    * numbers: `formats[column]` (keyed by the column's own name) if given, else by the unit in the label
      (UNIT_FORMATS), else `precision` decimals; integers with thousands separators; booleans as yes / no;
      missing values as "–";
    * numbers align right, so that their digits line up; a column holding prose (`is_prose`) aligns left;
    * cells, column labels and row labels wrap only between words (`words`); a default (0, 1, ...) index
      is hidden."""
    import pandas as pd
    labels, formats = labels or {}, formats or {}
    shown = df.rename(columns=labels) if labels else df
    fmt = {}
    for c, label in zip(df.columns, shown.columns):
        dtype = df[c].dtype
        if c in formats:
            fmt[label] = _formatter(formats[c])
        elif pd.api.types.is_bool_dtype(dtype):
            fmt[label] = lambda v: words("yes" if v else "no")
        elif pd.api.types.is_integer_dtype(dtype):
            fmt[label] = _formatter("{:,}")
        elif pd.api.types.is_float_dtype(dtype) or dtype == object:
            fmt[label] = _formatter(next((f for unit, f in UNIT_FORMATS.items() if unit in _label(label)),
                                         f"{{:.{precision}f}}"))
        else:  # text
            fmt[label] = _formatter(None)
    st = shown.style.format(fmt).format_index(words, axis=1).set_table_styles([
        {"selector": "th, td", "props": [("padding", "3px 6px"), ("vertical-align", "top")]},
        {"selector": "td", "props": [("text-align", "right")]},
        {"selector": "caption", "props": [("caption-side", "top"), ("text-align", "left"), ("padding", "4px 0")]}])
    prose = [label for c, label in zip(df.columns, shown.columns) if any(is_prose(v) for v in df[c])]
    if prose:  # a rule per column: "td.colN" outranks the table's "td" rule, a cell's own id would not
        st = st.set_table_styles({label: [{"selector": "td", "props": [("text-align", "left")]}] for label in prose},
                                 overwrite=False)
    st = st.hide(axis="index") if isinstance(shown.index, pd.RangeIndex) else st.format_index(words, axis=0)
    return st.set_caption(caption) if caption else st
