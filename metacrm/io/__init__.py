"""Data in and out of a CRM: the demo, CSV import and export (see :mod:`metacrm.io.csv_io`)."""

from __future__ import annotations

from .csv_io import ImportRefused, ImportResult, RowIssue, export_csv, import_csv

__all__ = ["ImportRefused", "ImportResult", "RowIssue", "export_csv", "import_csv"]
