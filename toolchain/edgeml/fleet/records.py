"""What the fleet store's queries return: the rows of :mod:`.schema`'s tables as frozen records.

:class:`Batch` is what storing a batch of messages did with each; :class:`Device`,
:class:`StoredWindow`, :class:`Decision` and :class:`Rejected` are rows of
``devices``, ``windows``, ``decisions`` and ``rejected``, their JSON columns
read (:func:`.schema.loads`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .schema import loads


@dataclass(frozen=True)
class Batch:
    """What :meth:`.store.Store.record_messages` did with each message, in order, and why each was rejected.

    ``outcomes[i]`` is ``stored`` (a new window; a birth or death kept),
    ``duplicate`` (a window stored before), ``stale`` (a birth or death older
    than the device's last of its kind), ``ignored`` (a prediction: the store
    keeps none) or ``rejected`` (kept in the ``rejected`` table; ``reasons[i]``
    says why). Every message of a committed batch may be acknowledged.
    """

    outcomes: tuple[str, ...]
    reasons: tuple[str | None, ...]

    def count(self, outcome: str) -> int:
        return self.outcomes.count(outcome)


@dataclass(frozen=True)
class Device:
    """A ``devices`` row; ``known``: whether the registry holds the bundle of its last birth."""

    fleet: str
    device: str
    online: bool
    birth_seq: int | None
    birth_time: str | None
    birth_received: float | None
    death_seq: int | None
    death_reason: str | None
    death_time: str | None
    death_received: float | None
    bundle_sha256: str | None
    model_name: str | None
    model_version: str | None
    runtime_version: str | None
    window: dict | None
    known: bool


@dataclass(frozen=True)
class StoredWindow:
    """A ``windows`` row; ``counts`` is shaped for :func:`edgeml_runtime.protocol.add_counts` and ``judge_window``
    (``rows``, ``bad_rows``, ``columns``, ``output``), ``known`` says whether the registry holds its bundle."""

    id: int
    fleet: str
    device: str
    session: int
    seq: int
    bundle_sha256: str
    received: float
    start: str
    end: str
    ended: float
    rows: int
    bad_rows: int
    outbox_dropped: int
    historical: bool
    counts: dict
    statistics: dict
    verdict: dict
    performance: dict
    outbox_backlog: int | None
    known: bool

    @classmethod
    def from_row(cls, row: Mapping) -> StoredWindow:
        values = dict(row)
        values["counts"] = {"rows": row["rows"], "bad_rows": row["bad_rows"], **row["counts"]}
        values["historical"], values["known"] = bool(row["historical"]), bool(row["known"])
        return cls(**values)

    @classmethod
    def from_text(cls, row: tuple) -> StoredWindow:
        """A window from a row of the ``windows`` columns in order (JSON columns as text), then ``known``."""
        (id_, fleet, device, session, seq, bundle, received, start, end, ended, rows, bad_rows, dropped,
         historical, counts, statistics, verdict, performance, backlog, known) = row
        window = object.__new__(cls)  # the frozen dataclass's __init__ sets 20 fields one by one: a third of it
        window.__dict__.update(
            id=id_, fleet=fleet, device=device, session=session, seq=seq, bundle_sha256=bundle, received=received,
            start=start, end=end, ended=ended, rows=rows, bad_rows=bad_rows, outbox_dropped=dropped,
            historical=bool(historical), counts={"rows": rows, "bad_rows": bad_rows, **loads(counts)},
            statistics=loads(statistics), verdict=loads(verdict), performance=loads(performance),
            outbox_backlog=backlog, known=bool(known))
        return window


@dataclass(frozen=True)
class Decision:
    """A ``decisions`` row."""

    id: int
    fleet: str
    bundle_sha256: str | None
    kind: str
    time: float
    evidence: dict
    published: bool


@dataclass(frozen=True)
class Rejected:
    """A ``rejected`` row: a message a batch could not store (its first 4 KiB, as ASCII JSON)."""

    id: int
    received: float
    topic: str
    reason: str
    payload: str
