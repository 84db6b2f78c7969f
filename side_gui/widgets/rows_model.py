"""Shared by the list and table models: a flat list of row dicts, replaced wholesale."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex

_ROOT = QModelIndex()


class RowsMixin:
    rows: list[dict]

    def set_rows(self, rows: list[dict]) -> None:
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def rowCount(self, parent=_ROOT) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.rows)
