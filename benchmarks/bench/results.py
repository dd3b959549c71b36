"""The file of finished rows that a benchmark resumes from: rewritten atomically after every row, read on rerun.

Two layouts, the ones the scripts have always written (files from earlier runs resume as they are):

* with settings: ``{"settings": {...}, "rows": [...]}``. The settings are what every row of the file must
  share (model, calibration size, ...); a file written under other settings is refused, so rows of two
  studies never mix in one table.
* without: a bare JSON list of rows.

A row is finished when a row of the file has the same values in the store's ``key`` fields; a rerun skips
it. The file is replaced with :func:`lassoprune.io.atomic_write_json` (temporary file, then rename), so a
crash leaves either the previous file or the new one, never half of one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lassoprune.io import atomic_write_json, atomic_write_text

Row = dict[str, Any]


class ResultsStore:
    """The finished rows of one study, kept in the JSON file ``path``.

    Example::

        store = ResultsStore(out / "results.json", key=("variant", "target_macs", "seed"), settings=settings)
        for variant, target, seed in grid:
            if (variant, target, seed) not in store:
                store.add(run(variant, target, seed))
        store.write_table(header, table(store.rows))
    """

    def __init__(self, path: str | Path, key: Sequence[str], settings: dict[str, Any] | None = None) -> None:
        """Read the rows finished so far (none when ``path`` does not exist yet) and create its folder.

        Args:
            path: the JSON file.
            key: the row fields that name a row (e.g. method, target, seed).
            settings: what every row of the file shares (the ``{"settings", "rows"}`` layout); None: the file
                is a bare list of rows.

        Raises:
            SystemExit: ``path`` holds rows of other settings (the message names them and asks for
                another ``--runs``).
        """
        self.path = Path(path)
        self.key = tuple(key)
        self.settings = settings
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[Row] = self._read()
        self._done = {self.key_of(row) for row in self.rows}

    def _read(self) -> list[Row]:
        if not self.path.exists():
            return []
        data = json.loads(self.path.read_text())
        if self.settings is None:
            return data
        if data["settings"] != self.settings:
            raise SystemExit(f"{self.path} holds rows of other settings {data['settings']}; use another --runs")
        self.settings = data["settings"]  # equal; the file's own copy keeps its key order on rewrite
        return data["rows"]

    def key_of(self, row: Row) -> tuple[Any, ...]:
        """The values of ``row`` in the key fields, in the key's order."""
        return tuple(row[field] for field in self.key)

    def __contains__(self, key: tuple[Any, ...]) -> bool:
        """Whether a row with these key values has finished."""
        return tuple(key) in self._done

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, row: Row) -> None:
        """Append a finished row and rewrite the file atomically."""
        self.rows.append(row)
        self._done.add(self.key_of(row))
        data: Any = self.rows if self.settings is None else {"settings": self.settings, "rows": self.rows}
        atomic_write_json(self.path, data)

    def write_table(self, header: str, table: str, name: str = "table.md") -> Path:
        """Write ``header``, a blank line and ``table`` to ``name`` beside the results file (atomically)."""
        path = self.path.parent / name
        atomic_write_text(path, f"{header}\n\n{table}\n")
        return path
