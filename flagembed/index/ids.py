"""String document ids ↔ integer slots, shared by every index (validation lives here once)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flagembed.index.storage import IndexFormatError, read_json


class IdTable:
    """Maps document ids to slots (row positions) and tracks which slots are alive."""

    def __init__(self, labels: Iterable[str] = (), alive: Iterable[bool] | None = None) -> None:
        self.labels: list[str] = list(labels)
        self.alive = np.ones(len(self.labels), dtype=bool) if alive is None else np.asarray(list(alive), dtype=bool)
        self.slot_of: dict[str, int] = {lab: i for i, lab in enumerate(self.labels) if self.alive[i]}

    def __len__(self) -> int:
        return len(self.slot_of)

    @property
    def num_slots(self) -> int:
        return len(self.labels)

    @property
    def num_dead(self) -> int:
        return self.num_slots - len(self.slot_of)

    def check_new(self, ids: Any, count: int) -> list[str]:
        """Validate ids for ``count`` new rows.

        Raises:
            TypeError: ids is not a sequence of strings (names the bad index).
            ValueError: wrong length, or an id repeats or already exists (names it).
        """
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence | np.ndarray):
            raise TypeError(f"ids must be a list of strings, got {type(ids).__name__}")
        out = list(ids)
        if len(out) != count:
            raise ValueError(f"got {len(out)} ids for {count} rows")
        seen: set[str] = set()
        for i, doc_id in enumerate(out):
            if not isinstance(doc_id, (str, np.str_)):
                raise TypeError(f"ids[{i}] must be a string, got {type(doc_id).__name__}: {doc_id!r:.80}")
            if doc_id in self.slot_of or doc_id in seen:
                raise ValueError(f"ids[{i}] = {doc_id!r} is already in the index (ids must be unique)")
            seen.add(doc_id)
        return [str(x) for x in out]

    def append(self, ids: list[str]) -> np.ndarray:
        """Register validated ids; returns their new slots."""
        start = len(self.labels)
        self.labels.extend(ids)
        self.alive = np.concatenate([self.alive, np.ones(len(ids), dtype=bool)])
        for j, doc_id in enumerate(ids):
            self.slot_of[doc_id] = start + j
        return np.arange(start, start + len(ids), dtype=np.int64)

    def kill(self, ids: Iterable[str]) -> np.ndarray:
        """Mark ids removed; unknown ids are ignored. Returns the slots that were alive."""
        if isinstance(ids, str):
            raise TypeError("remove() takes a list of ids, got a single string")
        slots = [self.slot_of.pop(str(i)) for i in ids if str(i) in self.slot_of]
        arr = np.asarray(sorted(set(slots)), dtype=np.int64)
        self.alive[arr] = False
        return arr

    def compact(self) -> np.ndarray:
        """Drop dead slots; returns the kept old slots (in order) so callers can compact their rows."""
        keep = np.flatnonzero(self.alive)
        self.labels = [self.labels[i] for i in keep]
        self.alive = np.ones(len(self.labels), dtype=bool)
        self.slot_of = {lab: i for i, lab in enumerate(self.labels)}
        return keep

    def slots(self, ids: Sequence[str]) -> np.ndarray:
        """Slots of known ids.

        Raises:
            KeyError: an id is not in the index.
        """
        try:
            return np.fromiter((self.slot_of[str(i)] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError as exc:
            raise KeyError(f"id {exc.args[0]!r} is not in the index") from None

    def alive_ids(self) -> list[str]:
        """Ids in slot order."""
        return [lab for lab, ok in zip(self.labels, self.alive) if ok]

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {"labels": self.labels, "alive": self.alive.astype(int).tolist()}

    @classmethod
    def from_state(cls, state: Any) -> IdTable:
        """Inverse of :meth:`state`.

        Raises:
            ValueError: not ``{"labels": [str...], "alive": [0|1...]}`` of equal lengths, or a live id repeats.
        """
        labels = state.get("labels") if isinstance(state, dict) else None
        alive = state.get("alive") if isinstance(state, dict) else None
        if not isinstance(labels, list) or not isinstance(alive, list) or len(labels) != len(alive):
            raise ValueError("expected equally long 'labels' and 'alive' lists")
        seen: set[str] = set()
        for i, (label, ok) in enumerate(zip(labels, alive)):
            if not isinstance(label, str):
                raise ValueError(f"labels[{i}] = {label!r:.80} is not a string id")
            if ok not in (0, 1) or isinstance(ok, float):
                raise ValueError(f"alive[{i}] = {ok!r:.80} is not 0 or 1")
            if ok and label in seen:
                raise ValueError(f"id {label!r:.80} appears twice (ids must be unique)")
            if ok:
                seen.add(label)
        return cls(labels, [bool(x) for x in alive])


def load_ids(path: Path) -> IdTable:
    """An :class:`IdTable` from an index's ``ids.json``.

    Raises:
        IndexFormatError: the file is missing, not JSON, or not a valid id table (names the file).
    """
    state = read_json(path)
    try:
        return IdTable.from_state(state)
    except ValueError as exc:
        raise IndexFormatError(f"{path.parent} is corrupted: {path.name}: {exc}") from exc
