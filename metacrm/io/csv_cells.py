"""What a CSV cell may start with, and what a CSV file may end with (pure Python, no metacrm).

Formulas. A spreadsheet opening a CSV runs a cell starting with ``=``, ``+``, ``-`` or ``@``
as a formula (``=HYPERLINK(...)``, ``=cmd|'/c calc'!A1``), and a leading tab or carriage return
can hide such a start. Every CSV metacrm writes (``metacrm export``, ``--format csv`` of every
command, the import report) passes its cells through :func:`neutralise`, as the OWASP "CSV
injection" guidance says: such a cell gets a single quote in front (``'=1+2``), which a
spreadsheet shows as text. Numbers are left alone where the column holds numbers (an integer,
decimal, percent or money field of an export; a number in a report): ``-12.50`` stays
``-12.50``.

The rule reads back exactly: the import (:func:`restore`, in ``read_csv``) removes one
quote from a cell made of quotes followed by one of those characters, and only from such a
cell. Export adds one to every such cell, including one that already starts with quotes: a
text ``'=x`` is written ``''=x`` and read back ``'=x``; ``'hello`` is written and read as it
is. A hand-written cell ``'=x`` (a spreadsheet's way of typing text) is read as ``=x``.

Line breaks. :func:`writer` quotes a cell holding a carriage return, which ``csv.writer``
does not do when rows end with a bare line feed.

Unterminated quotes. A quoted cell whose closing quote is missing runs, for Python's csv
module, to the end of the file: every following row would become part of one cell.
:func:`unterminated_quote` finds where such a cell opens, so that ``read_csv`` refuses the
file naming that line.
"""

from __future__ import annotations

import re
from bisect import bisect_right

TRIGGERS = "=+-@\t\r"
NUMERIC_TYPES = frozenset({"integer", "decimal", "percent", "money", "currency", "duration"})

_NEEDS_QUOTE = re.compile(r"'*[=+\-@\t\r]")  # a cell a spreadsheet could run, or one that looks neutralised
_NEUTRALISED = re.compile(r"'+[=+\-@\t\r]")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_STARTS = frozenset(TRIGGERS + "'")


def neutralise(text: str, *, numeric: bool = False) -> str:
    """``text`` as a CSV cell no spreadsheet runs as a formula: a quote in front of a cell
    starting with ``= + - @``, tab or carriage return (or with quotes and then one of those);
    a number in a ``numeric`` column stays as it is."""
    if not text or text[0] not in _STARTS:
        return text
    if numeric and _NUMBER.fullmatch(text):
        return text
    return "'" + text if _NEEDS_QUOTE.match(text) else text


def restore(text: str) -> str:
    """A cell as it was before :func:`neutralise`."""
    if text[:1] == "'" and _NEUTRALISED.match(text):
        return text[1:]
    return text


class _LineFeed:
    """A file the csv writer writes ``\r\n``-terminated rows to, written ``\n``-terminated."""

    def __init__(self, out):
        self.out = out

    def write(self, line: str):
        return self.out.write(line[:-2] + "\n" if line.endswith("\r\n") else line)


def writer(out):
    """A csv writer of ``\n``-terminated rows that quotes every cell holding a line break,
    a lone carriage return included (``csv.writer(lineterminator="\n")`` leaves ``a\rb``
    unquoted, and a reader then splits the row there)."""
    import csv

    return csv.writer(_LineFeed(out), lineterminator="\r\n")


def is_number(value) -> bool:
    """Whether a value is a number (not a bool): its cell keeps a leading minus."""
    from decimal import Decimal

    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def unterminated_quote(lines: list[str], delimiter: str) -> int | None:
    """The index in ``lines`` (the physical lines of one CSV record, to the end of the file) of
    the line where a quoted cell opens and never closes; None when every quote closes.

    Follows the csv module's reading: a quote opens a quoted cell only at the start of a
    cell; inside it ``""`` is a quote; after the closing quote the cell goes on unquoted to
    the next delimiter or line end (where quotes are plain characters)."""
    text = "".join(lines)
    quoted = re.compile(r'"[^"]*+(?:""[^"]*+)*+"')
    plain = re.compile(r"[^" + re.escape(delimiter) + r"\r\n]*+")
    pos, end = 0, len(text)
    while pos < end:
        if text[pos] == '"':
            match = quoted.match(text, pos)
            if match is None:
                starts, total = [], 0
                for line in lines:
                    starts.append(total)
                    total += len(line)
                return bisect_right(starts, pos) - 1
            pos = match.end()
        pos = plain.match(text, pos).end()
        if pos < end:
            pos += 2 if text.startswith("\r\n", pos) else 1  # the delimiter or the line end
    return None
