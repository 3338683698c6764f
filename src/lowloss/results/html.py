"""A table as a page a person reads in a browser: sortable, searchable, self-contained (no network).

Snakemake's HTML report shows an HTML result inside the page but only offers a CSV for download, so
the report's tables are written once more as HTML. The page is DataTables (through itables) with its
code inlined, so it works from a data URI, offline, and from an e-mailed report alike; a browser
without JavaScript shows the same rows as a plain table.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from lowloss.storage.atomic import write_text_atomic

DECIMALS = 2
PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.2em; color: #222; }
h1 { font-size: 1.15em; margin: 0 0 0.3em; }
p.note { font-size: 0.9em; color: #444; max-width: 60em; margin: 0 0 1em; }
table.dataTable th, table.dataTable td { padding: 3px 10px; }
.dt-container { font-size: 0.95em; }
"""
LAYOUT = {"topStart": "search", "topEnd": "pageLength", "bottomStart": "info", "bottomEnd": "paging"}
"""Search first; itables hides the controls of a table that fits one page unless the layout is its own."""


def table_page(table: pd.DataFrame, title: str, note: str = "") -> str:
    """The whole HTML page: title, a note on what the numbers are, and the interactive table.

    Floats are shown with two decimals (sorting uses the values themselves); every row is kept
    (itables would otherwise sample tables above 64 KB).
    """
    from itables import javascript, options
    from itables.javascript import to_html_datatable

    with pd.option_context("display.float_format", f"{{:.{DECIMALS}f}}".format):
        body = to_html_datatable(
            table,
            connected=False,
            maxBytes=0,
            lengthMenu=[25, 50, 100, -1],
            pageLength=-1 if len(table) <= 100 else 50,
            layout=LAYOUT,
            classes="display compact cell-border",
            showIndex=table.index.name is not None,
        )
    library = javascript.generate_init_offline_itables_html(options.dt_bundle)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{PAGE_STYLE}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
        + (f'<p class="note">{html.escape(note)}</p>\n' if note else "")
        + f"{library}\n{body}\n</body>\n</html>\n"
    )


def write_table_page(path: Path, table: pd.DataFrame, title: str, note: str = "") -> Path:
    """Write `table_page` atomically; returns `path`."""
    write_text_atomic(path, table_page(table, title, note))
    return path
