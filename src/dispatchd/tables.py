"""Plain-text tables for the command line: columns padded, the last one cut to the terminal."""

from __future__ import annotations

import shutil

MIN_LAST_COLUMN = 24  # characters of a last column kept however narrow the terminal


def print_table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None,
                truncate_last: bool = True) -> None:
    """Columns padded to their widest cell; the last one cut to what the terminal has left."""
    numeric = numeric or set()
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers) - 1)]
    room = shutil.get_terminal_size((120, 24)).columns - sum(widths) - 2 * len(widths)
    for row in [headers, *rows]:
        cells = [cell.rjust(width) if i in numeric and row is not headers else cell.ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths, strict=False))]
        last = cut(row[-1], max(room, MIN_LAST_COLUMN)) if truncate_last else row[-1]
        print("  ".join([*cells, last]).rstrip())


def one_line(text: str) -> str:
    return " ".join(text.split())


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
