"""Opening the fleet store's database: several controllers starting at once on one fresh SQLite file."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from edgeml.fleet.store import Store


def test_controllers_opening_one_fresh_sqlite_store_together_all_get_it(tmp_path):
    # Switching a new database to WAL takes a lock SQLite may refuse at once, busy handler or not: before the fix,
    # 4 of 40 rounds of four concurrent opens failed with "database is locked".
    failures = []
    for round_ in range(30):
        url = f"sqlite:///{tmp_path / f'fleet-{round_}.db'}"
        start = threading.Barrier(4)

        def open_store(url=url, start=start):
            try:
                start.wait()
                with Store.open(url) as store:
                    store.devices()
            except Exception as exc:  # noqa: BLE001 - every failure is reported by the assertion below
                failures.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with Store.open(url) as store, store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.execute(sa.text("SELECT count(*) FROM schema_version")).scalar() >= 1
    assert failures == []
