"""How a batch's rows reach each database: the windows insert (SQLite's optimistic one, PostgreSQL's ``unnest``),
the devices upsert of a birth or death, and an update step's event (:func:`update_event`).
:meth:`.store.Store.record_messages` uses them in its transaction."""

from __future__ import annotations

import hashlib
import operator

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from . import schema as t
from .rollout_verdict import FINAL
from .rows import Prepared

KEY = ("fleet", "device", "session", "seq")
key_of = operator.itemgetter(*KEY)
COLUMNS = tuple(c.name for c in t.windows_text.c)
JSON_COLUMNS = tuple(c.name for c in t.windows.c if isinstance(c.type, sa.JSON))


def pg_windows() -> str:
    """PostgreSQL: a batch of windows as one array per column (``unnest``): 16 parameters whatever its size.

    insertmanyvalues sends one row of parameters per window in one query of
    thousands of placeholders, which psycopg parsed again every batch (40 %
    of the time). Each JSON column travels as one JSON array of the batch's
    documents (joined as text, nothing escaped: a text array would quote every
    ``"`` of them, slower than before), taken apart by ``json_array_elements``
    in order (``WITH ORDINALITY``), which keeps each document's text as sent.
    """
    kinds = {c.name: c.type.compile(dialect=postgresql.dialect()) for c in t.windows.c if c.name in COLUMNS}
    plain = [c for c in COLUMNS if c not in JSON_COLUMNS]
    names = ", ".join(f'"{c}"' for c in COLUMNS)
    arrays = ", ".join(f"%({c})s::{kinds[c]}[]" for c in plain)
    values = ", ".join(f'b."{c}"' if c in plain else f"{c}.value" for c in COLUMNS)
    documents = " ".join(f"JOIN json_array_elements(%({c})s::json) WITH ORDINALITY AS {c}(value, n) USING (n)"
                         for c in JSON_COLUMNS)
    return (f"INSERT INTO windows ({names}) SELECT {values} FROM unnest({arrays}) WITH ORDINALITY "
            f"AS b({', '.join(f'{chr(34)}{c}{chr(34)}' for c in plain)}, n) {documents} "
            "ON CONFLICT (fleet, device, session, seq) DO NOTHING RETURNING fleet, device, session, seq")


def pg_parameters(rows: list[dict]) -> dict:
    """The parameters of :data:`PG_WINDOWS` for ``rows``: a list per plain column, a JSON array text per JSON one."""
    return {c: "[" + ",".join([r[c] for r in rows]) + "]" if c in JSON_COLUMNS else [r[c] for r in rows]
            for c in COLUMNS}


PG_WINDOWS = pg_windows()

#: SQLite, the common case of a batch whose every window is new: a plain INSERT, no ON CONFLICT, no RETURNING.
SQLITE_WINDOWS = (f"INSERT INTO windows ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in COLUMNS)}) "
                   f"VALUES ({', '.join(f':{c}' for c in COLUMNS)})")


def sqlite_all_new(conn: sa.Connection, rows: list[dict]) -> bool:
    """SQLite: store ``rows`` if every one is new (True), or store none of them (False: take ON CONFLICT).

    Optimistic: most batches hold no window stored before, and a plain
    INSERT of them all, one DBAPI ``executemany`` (SQLAlchemy only wraps its
    errors), costs a third less than ``INSERT ... ON CONFLICT DO NOTHING
    RETURNING`` through insertmanyvalues (bench/results/store.md). It runs in
    a savepoint: if it breaks a constraint (a window's key stored before: a
    window resent), the savepoint is rolled back, nothing of it stays, and
    the caller takes the ON CONFLICT path, which says which windows are
    duplicates or, for any other constraint (a trigger, say), raises what it
    raised before this path existed, so the batch's outcomes are exactly its.
    Any other error (a value the driver refuses, a failing database) is
    raised at once, as ON CONFLICT would raise it for the same rows, and the
    caller's transaction or savepoint, rolled back, cancels this one. The
    caller has already kept only the first of a key the batch holds twice.
    """
    conn.exec_driver_sql("SAVEPOINT windows_all_new")  # not begin_nested(): its bookkeeping took 120 µs a batch
    try:
        conn.exec_driver_sql(SQLITE_WINDOWS, rows)
        stored = True
    except sa.exc.IntegrityError:
        conn.exec_driver_sql("ROLLBACK TO SAVEPOINT windows_all_new")
        stored = False
    conn.exec_driver_sql("RELEASE SAVEPOINT windows_all_new")
    return stored


def device_upsert(insert, m: Prepared):
    """The upsert of a birth or death into ``devices``, kept only if not older than the device's last of its kind,
    RETURNING the device's ``online`` (no row: stale); ``insert`` is the dialect's (SQLite's or PostgreSQL's)."""
    d = t.devices
    ins = insert(d).values(m.row)
    new = ins.excluded
    if m.kind == "birth":
        changed = {k: new[k] for k in m.row if k not in ("fleet", "device", "online")}
        online = sa.or_(d.c.death_seq.is_(None), new.birth_seq > d.c.death_seq)
        newer = sa.or_(d.c.birth_seq.is_(None), new.birth_seq >= d.c.birth_seq)
    else:
        changed = {k: new[k] for k in m.row if k not in ("fleet", "device", "online")}
        online = sa.and_(d.c.birth_seq.is_not(None), d.c.birth_seq > new.death_seq)
        newer = sa.or_(d.c.death_seq.is_(None), new.death_seq >= d.c.death_seq)
    changed["online"] = sa.case((online, sa.true()), else_=sa.false())
    return ins.on_conflict_do_update(index_elements=[d.c.fleet, d.c.device], set_=changed,
                                     where=newer).returning(d.c.online)



#: What makes two update events one: a step reported again (a resent message) is kept once.
UPDATE_KEY = ("fleet", "device", "release", "rollout", "step", "time")


def update_event(conn: sa.Connection, row: dict) -> tuple[bool, bool]:
    """Keep an update step (an ``update_events`` row, :func:`.rows.update_row`) unless the same step of the same
    release was kept before (a resent message), and make it the device's last step in the rollout it names, if it
    is a device of that rollout, of its fleet and release (a final step is not replaced by a later report of an
    earlier one); (whether it was new, whether the rollout's device row changed).

    On PostgreSQL a lock of the device's updates (to the end of the transaction) makes the check and the insert
    one step: two controllers handed the same resent message keep it once. SQLite's write transactions hold the
    file already."""
    ue, r, rd = t.update_events, t.rollouts, t.rollout_devices
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(f"edgeml-update\0{row['fleet']}\0{row['device']}".encode()).digest()
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                     {"key": int.from_bytes(digest[:8], "big", signed=True)})
    same = [ue.c[k].is_(None) if row[k] is None else ue.c[k] == row[k] for k in UPDATE_KEY]
    if conn.execute(sa.select(ue.c.id).where(*same).limit(1)).first() is not None:
        return False, False
    conn.execute(sa.insert(ue).values(row))
    if row["rollout"] is None:
        return True, False
    current = conn.execute(sa.select(rd.c.step).join(r, r.c.id == rd.c.rollout).where(
        rd.c.rollout == row["rollout"], rd.c.device == row["device"], r.c.fleet == row["fleet"],
        r.c.release == row["release"])).first()
    if current is None or (current.step in FINAL and row["step"] not in FINAL):
        return True, False
    conn.execute(sa.update(rd).where(rd.c.rollout == row["rollout"], rd.c.device == row["device"])
                 .values(step=row["step"], reason=row["reason"], updated=row["received"]))
    return True, True
