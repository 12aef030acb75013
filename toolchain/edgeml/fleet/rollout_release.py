"""What a rollout hands out and judges by: the release records, the rollback release, the rows devices scored.

:func:`rollback_record` makes a failed rollout's rollback once: a new, higher
release of the bundle of the rollout's ``previous_release``
(:func:`.releases.make_release`, signed with the keys the rollout was started
with), kept in the plan's ``rollback_release`` so a second call (an
announcement that raised part way) hands out the same one.
:func:`window_rows` is :func:`.rollout.advance`'s default ``rows_of``.
"""

from __future__ import annotations

import sqlalchemy as sa

from . import schema as t


def rollback_record(store, r, now: float):
    """The rollback release (made once, kept in the plan) and None, or None and why there is none."""
    from . import releases

    if r.plan.get("rollback_release") is not None:
        return releases.get(store, r.fleet, r.plan["rollback_release"]), None
    if r.previous_release is None:
        return None, f"release {r.release} is the fleet's first: there is no earlier release to roll back to"
    if not (r.plan.get("keys") and r.plan.get("releases")):
        return None, ("the rollout was started without --keys and --releases, needed to sign a rollback; make one "
                      f"by hand with edgeml release of the bundle of release {r.previous_release}")
    before = releases.get(store, r.fleet, r.previous_release)
    made = releases.make_release(store, fleet=r.fleet, identity=identity_of(before), keys=r.plan["keys"],
                                 releases_dir=r.plan["releases"], now=now)
    with store._write() as conn:
        conn.execute(sa.update(t.rollouts).where(t.rollouts.c.id == r.id).values(
            plan={**r.plan, "rollback_release": version_of(made)}))
    return made, None


def identity_of(record) -> str:
    return record.document["signed"]["bundle"]["identity"]


def version_of(record) -> int:
    return record.version


def bundle_of(store, r) -> str:
    from . import releases

    return identity_of(releases.get(store, r.fleet, r.release))


def window_rows(store):
    """``rows_of`` over the store's drift windows: the bad rows and rows of windows ``devices`` ended since."""
    w = t.windows

    def rows_of(fleet: str, devices: list[str], since: float, bundle: str | None) -> tuple[int, int]:
        q = sa.select(sa.func.coalesce(sa.func.sum(w.c.bad_rows), 0), sa.func.coalesce(sa.func.sum(w.c.rows), 0)
                      ).where(w.c.fleet == fleet, w.c.device.in_(devices), w.c.ended >= since)
        if bundle is not None:
            q = q.where(w.c.bundle_sha256 == bundle)
        with store._read() as conn:
            bad, rows = conn.execute(q).one()
        return int(bad), int(rows)

    return rows_of
