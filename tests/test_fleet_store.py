"""The fleet store, each test on SQLite and on a real PostgreSQL 15 the session starts.

Messages are real: windows counted by the runtime's own ``DriftMonitor``,
wrapped by the protocol's builders, encoded to JSON and read back with
:func:`edgeml_runtime.protocol.decode`, as the controller will
(``fleet_helpers``). The registry's tests are in ``test_fleet_registry.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fleet_helpers
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import BIN, run_env
from fleet_helpers import BUNDLE, DRIFT, OTHER, REFERENCE, RULE, T0, birth, count, death, window, write_v1_rows
from sqlalchemy import event

from edgeml.cli import main
from edgeml.errors import FleetError
from edgeml.fleet.database import store_url
from edgeml.fleet.migrations import HEAD, current_version
from edgeml.fleet.schema import METADATA
from edgeml.fleet.store import Store
from edgeml_runtime.errors import ProtocolError
from edgeml_runtime.protocol import add_counts, decode, describe_window, judge_window

#: The fixtures: each test on SQLite and on PostgreSQL.
url, store = fleet_helpers.url, fleet_helpers.store


# -- migrations --------------------------------------------------------------------------------------

def test_a_fresh_store_has_exactly_the_schema_the_code_reads(store):
    with store.engine.connect() as conn:
        assert current_version(conn) == HEAD == 5
        inspector = sa.inspect(conn)
        found = {name: [c["name"] for c in inspector.get_columns(name)] for name in inspector.get_table_names()}
        indexes = {i["name"] for i in inspector.get_indexes("windows")}
    assert found == {name: [c.name for c in table.columns] for name, table in METADATA.tables.items()}
    assert "windows_horizon" in indexes
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as conn:
            pragmas = [conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in
                       ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")]
        assert pragmas == ["wal", 2, 1, 10_000]  # synchronous 2 = FULL


def test_a_version_1_store_is_upgraded_with_its_rows(url):
    with Store.open(url, version=1) as old:
        write_v1_rows(old)
        with old.engine.connect() as conn:
            assert current_version(conn) == 1 and not sa.inspect(conn).has_table("rejected")
    with Store.open(url) as new:
        with new.engine.connect() as conn:
            assert current_version(conn) == HEAD
            assert "windows_horizon" in {i["name"] for i in sa.inspect(conn).get_indexes("windows")}
            versions = conn.execute(sa.text("SELECT version, name FROM schema_version ORDER BY version")).all()
        assert [v for v, _ in versions] == list(range(1, HEAD + 1))
        assert [(w.device, w.seq, w.performance) for w in new.windows("plant-a", BUNDLE)] == [("pi-07", 0, {})]
        assert new.devices()[0].online and not new.record_window(*window("pi-07", 3, 0))
        batch = new.record_messages([window("pi-07", 3, 1), ("edgeml/plant-a/pi-07/drift", {"seq": 1})])
        assert batch.outcomes == ("stored", "rejected") and len(new.rejected()) == 1


def test_a_store_newer_than_the_code_is_refused_naming_both_versions(url):
    Store.open(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO schema_version (version, name, applied) VALUES (:v, 'future', 0)"),
                     {"v": HEAD + 1})
    engine.dispose()
    with pytest.raises(FleetError, match=rf"schema version {HEAD + 1}, newer than this edgeml reads \(version "
                                         rf"{HEAD}\).*Upgrade edgeml"):
        Store.open(url)


# -- windows -------------------------------------------------------------------------------------------

def test_a_window_is_stored_once_whoever_stores_it_again(url):
    first, again = window("pi-07", 5, 0), window("pi-07", 5, 0)
    with Store.open(url) as a, Store.open(url) as b:
        assert a.record_window(*first) is True
        assert b.record_window(*again) is False and a.record_window(*first) is False
        resent = {**first[1], "historical": True}  # a repeat after a lost PUBACK: identical but historical
        assert b.record_messages([(first[0], resent), first]).outcomes == ("duplicate", "duplicate")
        other_fleet = window("pi-07", 5, 0, fleet="plant-b")  # the same device id in another fleet is another
        assert b.record_window(*other_fleet) is True
        assert count(a, "windows") == 2


def test_two_controllers_storing_the_same_windows_at_once_store_each_once(url):
    messages = [window(f"d{d}", 1, seq) for d in range(4) for seq in range(50)]
    stores = [Store.open(url), Store.open(url)]
    barrier, results = threading.Barrier(2), [[], []]

    def ingest(i):
        barrier.wait()
        for start in range(0, len(messages), 20):
            results[i].append(stores[i].record_messages(messages[start:start + 20]))

    threads = [threading.Thread(target=ingest, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    stored = sum(b.count("stored") for r in results for b in r)
    duplicate = sum(b.count("duplicate") for r in results for b in r)
    assert (stored, duplicate) == (200, 200) and count(stores[0], "windows") == 200
    for s in stores:
        s.close()


def test_a_batch_stores_the_good_messages_and_keeps_the_bad_with_the_reason(store):
    good, nan = window("pi-07", 2, 0), window("pi-07", 2, 1)
    nan_payload = re.sub(r'"psi": [-+.e0-9]+', '"psi": NaN', json.dumps(nan[1]), count=1).encode()
    assert b'"psi": NaN' in nan_payload  # Python's json reads NaN
    no_bundle = {**window("pi-07", 2, 2)[1], "model": {"name": "demo"}}
    batch = store.record_messages([
        good, decode(DRIFT, nan_payload), ("edgeml/plant-a/pi-07/drift", no_bundle), birth("pi-07", 2), good,
        ("edgeml/plant-a/pi-07/predictions", {"row": 1}), ("edgeml/plant-a/pi-08/drift", good[1]),
        ("edgeml/plant-a", {}), window("pi-07", 2, 3)])
    assert batch.outcomes == ("stored", "rejected", "rejected", "stored", "duplicate", "ignored", "rejected",
                              "rejected", "stored")
    reasons = [r for r in batch.reasons if r]
    assert "the database refused a value: Out of range float values are not JSON compliant" in reasons[0]
    assert "model.bundle_sha256 is None, not a bundle identity" in reasons[1]
    assert "says device 'pi-07', but was published under 'pi-08'" in reasons[2]
    assert "has 2 levels" in reasons[3]
    kept = store.rejected()
    assert [r.reason for r in kept] == reasons and kept[0].topic == "edgeml/plant-a/pi-07/drift"
    assert json.loads(kept[0].payload.replace("NaN", "null"))["seq"] == 1
    assert [w.seq for w in store.windows("plant-a", BUNDLE)] == [0, 3] and store.devices()[0].online
    with pytest.raises(ProtocolError, match="Out of range float"):
        store.record_window(*decode(DRIFT, nan_payload))


def _refuse_device(store: Store, device: str) -> None:
    """A trigger that makes the database itself refuse windows of ``device`` (as a constraint would)."""
    with store.engine.begin() as conn:
        if store.engine.dialect.name == "sqlite":
            conn.exec_driver_sql(f"CREATE TRIGGER refuse BEFORE INSERT ON windows WHEN NEW.device = '{device}' "
                                 "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END")
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.device = '" + device + "' THEN "
                "RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = 'check_violation'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql")
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON windows FOR EACH ROW EXECUTE FUNCTION "
                                 "refuse()")


def test_a_value_the_database_refuses_rejects_its_message_alone(store):
    _refuse_device(store, "bad")
    batch = store.record_messages([window("pi-07", 1, 0), window("bad", 1, 0), birth("bad", 1),
                                   window("pi-07", 1, 1)])
    assert batch.outcomes == ("stored", "rejected", "stored", "stored")
    assert "the database refused a value" in batch.reasons[1] and "refused by a test trigger" in batch.reasons[1]
    assert [r.topic for r in store.rejected()] == ["edgeml/plant-a/bad/drift"]
    assert [w.seq for w in store.windows("plant-a", BUNDLE)] == [0, 1] and len(store.devices()) == 1


def test_a_failing_database_fails_the_whole_batch_so_none_is_acknowledged(store):
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE windows RENAME TO windows_gone")
    with pytest.raises(FleetError, match="the fleet store .* failed: .*nothing of this transaction was stored"):
        store.record_messages([birth("pi-07", 1), window("pi-07", 1, 0)])
    assert store.devices() == []  # the birth before the failing window was rolled back too


# -- the SQLite fast path and its fallback -----------------------------------------------------------------

@contextmanager
def windows_inserts(store: Store):
    """How each statement that writes windows was run: ``plain`` (the SQLite fast path), ``on conflict``,
    ``unnest`` (PostgreSQL), and ``rolled back`` for a savepoint rolled back, in order (from the driver's cursor)."""
    seen = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO windows"):
            seen.append("unnest" if "unnest" in statement else "on conflict" if "ON CONFLICT" in statement
                        else "plain")
        elif statement.startswith("ROLLBACK TO SAVEPOINT"):
            seen.append("rolled back")

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", record)


def _stored(store: Store) -> list[tuple]:
    """The keys of the windows stored, sorted."""
    return sorted((w.device, w.session, w.seq) for w in store.windows("plant-a", None))


def _paths(store: Store, sqlite: list[str], batches: int = 1) -> list[str]:
    """What :func:`windows_inserts` should see: ``sqlite`` on SQLite, one unnest a batch on PostgreSQL."""
    return sqlite if store.engine.dialect.name == "sqlite" else ["unnest"] * batches


def test_a_batch_of_new_windows_is_stored_by_one_plain_insert_on_sqlite(store):
    with windows_inserts(store) as seen:
        batch = store.record_messages([window("pi-07", 1, seq) for seq in range(5)])
    assert batch.outcomes == ("stored",) * 5 and batch.reasons == (None,) * 5
    assert seen == _paths(store, ["plain"])
    assert _stored(store) == [("pi-07", 1, seq) for seq in range(5)]


def test_a_key_twice_in_a_batch_is_stored_once_and_the_second_is_a_duplicate_without_a_fallback(store):
    resent = {**window("pi-07", 1, 1)[1], "historical": True}  # the same key: the first of the batch is kept
    with windows_inserts(store) as seen:
        batch = store.record_messages([window("pi-07", 1, 0), window("pi-07", 1, 1), window("pi-07", 1, 0),
                                       (DRIFT, resent), window("pi-07", 1, 2)])
    assert batch.outcomes == ("stored", "stored", "duplicate", "duplicate", "stored")
    assert seen == _paths(store, ["plain"])
    assert _stored(store) == [("pi-07", 1, 0), ("pi-07", 1, 1), ("pi-07", 1, 2)]
    assert [w.historical for w in store.windows("plant-a", None)] == [False, False, False]


def test_a_key_stored_before_rolls_the_plain_insert_back_and_takes_on_conflict(store):
    assert store.record_messages([window("pi-07", 1, 1)]).outcomes == ("stored",)
    with windows_inserts(store) as seen:
        batch = store.record_messages([window("pi-07", 1, 0), window("pi-07", 1, 1), window("pi-07", 1, 2)])
    assert batch.outcomes == ("stored", "duplicate", "stored")
    assert seen == _paths(store, ["plain", "rolled back", "on conflict"])
    assert _stored(store) == [("pi-07", 1, 0), ("pi-07", 1, 1), ("pi-07", 1, 2)]  # nothing stored twice
    with windows_inserts(store) as seen:
        assert store.record_window(*window("pi-07", 1, 2)) is False  # one message: the same fallback
        assert store.record_window(*window("pi-07", 1, 3)) is True
    assert seen == _paths(store, ["plain", "rolled back", "on conflict", "plain"], 2)


def test_a_batch_mixing_births_deaths_windows_and_rejects_has_exact_outcomes_on_both_paths(store):
    assert store.record_messages([birth("pi-07", 2), window("pi-07", 1, 0)]).outcomes == ("stored", "stored")
    mixed = [window("pi-07", 1, 1), birth("pi-08", 1), birth("pi-07", 1), death("pi-07", 1),
             ("edgeml/plant-a/pi-07/drift", {"seq": 1}), window("pi-07", 1, 1),
             ("edgeml/plant-a/pi-07/predictions", {"row": 1}), death("pi-08", 1), window("pi-08", 1, 0)]
    with windows_inserts(store) as seen:
        fast = store.record_messages([*mixed, window("pi-07", 1, 2)])  # every window new: the plain insert
        slow = store.record_messages([*mixed, window("pi-07", 1, 0), window("pi-07", 1, 3)])  # seen before
    assert fast.outcomes == ("stored", "stored", "stale", "stored", "rejected", "duplicate", "ignored", "stored",
                             "stored", "stored")
    assert slow.outcomes == ("duplicate", "stored", "stale", "stored", "rejected", "duplicate", "ignored",
                             "stored", "duplicate", "duplicate", "stored")
    assert seen == _paths(store, ["plain", "plain", "rolled back", "on conflict"], 2)
    assert fast.reasons[4] == slow.reasons[4] == ("edgeml/plant-a/pi-07/drift: session None and seq 1 must be "
                                                  "whole numbers")
    assert [r for r in fast.reasons + slow.reasons if r] == [fast.reasons[4]] * 2
    assert _stored(store) == [("pi-07", 1, 0), ("pi-07", 1, 1), ("pi-07", 1, 2), ("pi-07", 1, 3), ("pi-08", 1, 0)]
    assert [(d.device, d.online, d.birth_seq, d.death_seq) for d in store.devices()] == [
        ("pi-07", True, 2, 1), ("pi-08", False, 1, 1)]
    assert [r.topic for r in store.rejected()] == ["edgeml/plant-a/pi-07/drift"] * 2


def test_a_refused_value_beside_a_key_stored_before_rejects_that_message_alone(store):
    _refuse_device(store, "bad")
    assert store.record_window(*window("pi-07", 1, 0))
    # The plain insert meets the key stored before first, then the refused value first: the same outcomes.
    batch = store.record_messages([window("pi-07", 1, 0), window("bad", 1, 0), window("pi-07", 1, 1)])
    assert batch.outcomes == ("duplicate", "rejected", "stored")
    batch2 = store.record_messages([window("bad", 1, 0), window("pi-07", 1, 0), window("pi-07", 1, 2)])
    assert batch2.outcomes == ("rejected", "duplicate", "stored")
    for reason in (batch.reasons[1], batch2.reasons[0]):
        assert "the database refused a value" in reason and "refused by a test trigger" in reason
    assert _stored(store) == [("pi-07", 1, 0), ("pi-07", 1, 1), ("pi-07", 1, 2)]
    assert [r.topic for r in store.rejected()] == ["edgeml/plant-a/bad/drift"] * 2


# -- devices -------------------------------------------------------------------------------------------

def test_births_and_deaths_follow_bdseq(store):
    assert store.record_birth(*birth("pi-07", 3))
    d = store.devices("plant-a")[0]
    assert (d.online, d.birth_seq, d.bundle_sha256, d.model_name, d.runtime_version) == (True, 3, BUNDLE, "demo",
                                                                                           "0.1.0")
    assert d.window == describe_window(500, 300.0, RULE) and d.known is False
    assert store.record_death(*death("pi-07", 3)) and not store.devices()[0].online  # its own will: offline
    assert store.record_birth(*birth("pi-07", 4, bundle=OTHER)) and store.devices()[0].online
    assert store.record_death(*death("pi-07", 3, "shutdown")) and store.devices()[0].online  # stale: ignored
    assert store.record_birth(*birth("pi-07", 2)) is False  # an older birth: stale, nothing changes
    assert store.record_death(*death("pi-07", 1)) is False  # older than the last death
    d = store.devices()[0]
    assert (d.online, d.birth_seq, d.death_seq, d.death_reason, d.bundle_sha256) == (True, 4, 3, "shutdown", OTHER)
    # Retained messages arrive in any order: a death first, then the birth of the same connection.
    assert store.record_death(*death("pi-08", 5)) and not store.devices()[1].online
    assert store.record_birth(*birth("pi-08", 5)) and not store.devices()[1].online
    assert store.record_birth(*birth("pi-08", 6)) and store.devices()[1].online
    assert [d.device for d in store.devices()] == ["pi-07", "pi-08"] and store.devices("plant-b") == []


# -- leases and decisions --------------------------------------------------------------------------------

def test_of_two_controllers_racing_for_the_lease_exactly_one_wins(url):
    stores, rounds = [Store.open(url), Store.open(url)], 25
    barrier, won = threading.Barrier(2), [[], []]

    def race(i):
        for r in range(rounds):
            barrier.wait()
            won[i].append(stores[i].acquire_lease(f"judge-{r}", f"controller-{i}", 30))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert [a + b for a, b in zip(won[0], won[1], strict=True)] == [1] * rounds
    assert stores[1].lease_holder("judge-0") == f"controller-{0 if won[0][0] else 1}"
    for s in stores:
        s.close()


def test_a_lease_expires_is_renewed_and_released(url):
    with Store.open(url) as a, Store.open(url) as b:
        assert a.acquire_lease("judge", "A", 10, now=T0)
        assert not b.acquire_lease("judge", "B", 10, now=T0 + 5)
        assert a.acquire_lease("judge", "A", 10, now=T0 + 5)  # renewed: now until T0 + 15
        assert not b.acquire_lease("judge", "B", 10, now=T0 + 12)
        assert b.lease_holder("judge", now=T0 + 12) == "A" and b.lease_holder("judge", now=T0 + 15) is None
        assert b.acquire_lease("judge", "B", 10, now=T0 + 15)  # expired: B takes it
        assert not a.acquire_lease("judge", "A", 10, now=T0 + 16)
        assert not a.release_lease("judge", "A") and b.release_lease("judge", "B")
        assert a.acquire_lease("judge", "A", 10, now=T0 + 17)  # released: no need to wait


def test_a_decision_is_stored_only_by_the_lease_holder(store):
    store.acquire_lease("judge", "A", 10, now=T0)
    evidence = {"windows": [1, 2], "policy": {"k": 2}}
    first = store.record_decision("plant-a", "drift", evidence, bundle=BUNDLE, when=T0 + 1, lease=("judge", "A"))
    assert isinstance(first, int)
    assert store.record_decision("plant-a", "drift", evidence, when=T0 + 1, lease=("judge", "B")) is None
    assert store.record_decision("plant-a", "drift", evidence, when=T0 + 11, lease=("judge", "A")) is None  # expired
    second = store.record_decision("plant-a", "device-anomaly", {"device": "pi-07"}, when=T0 + 2)
    assert [(d.id, d.kind, d.evidence, d.published) for d in store.decisions("plant-a")] == [
        (first, "drift", evidence, False), (second, "device-anomaly", {"device": "pi-07"}, False)]
    store.mark_published([first])
    assert [d.id for d in store.decisions(published=False)] == [second]
    assert [d.id for d in store.decisions(bundle=BUNDLE)] == [first]
    assert [d.id for d in store.decisions(kind="drift", last=1)] == [first] and store.decisions("plant-b") == []


# -- horizons --------------------------------------------------------------------------------------------

def test_horizons_keep_the_last_windows_or_those_since_a_time(store):
    ends = {("a", 0): T0, ("b", 0): T0 + 10, ("a", 1): T0 + 20, ("b", 1): T0 + 30, ("a", 2): T0 + 40}
    messages = [window(dev, 1, seq, ended=end) for (dev, seq), end in ends.items()]
    messages.append(window("a", 1, 3, ended=T0 + 50, bundle=OTHER))
    store.record_messages(reversed(messages))  # stored out of order: horizons go by when windows ended
    key = [(w.device, w.seq) for w in store.windows("plant-a", BUNDLE)]
    assert key == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)]
    assert [(w.device, w.seq) for w in store.windows("plant-a", BUNDLE, last=2)] == [("b", 1), ("a", 2)]
    assert [w.seq for w in store.windows("plant-a", BUNDLE, last=2, device="a")] == [1, 2]
    assert [w.seq for w in store.windows("plant-a", BUNDLE, since=T0 + 20)] == [1, 1, 2]
    since = datetime.fromtimestamp(T0 + 30, UTC)
    assert [w.seq for w in store.windows("plant-a", BUNDLE, since=since, device="b")] == [1]
    assert store.windows("plant-a", BUNDLE, since=timedelta(minutes=5)) == []  # they ended in the past
    assert [w.bundle_sha256 for w in store.windows("plant-a", None, last=1)] == [OTHER]
    assert store.windows("plant-b", BUNDLE) == []
    # What a window holds adds up exactly: the summed counts judge like one window of all the rows.
    horizon = store.windows("plant-a", BUNDLE)
    summed = add_counts(w.counts for w in horizon)
    assert summed["rows"] == 5 * 40 and summed["columns"]["x0"]["counts"] == [5 * 13, 5 * 14, 5 * 13]
    assert judge_window(REFERENCE, summed, RULE)["verdict"]["status"] == "ok"
    w = horizon[0]
    assert w.statistics["columns"]["x0"].keys() >= {"psi", "js", "status"} and "counts" not in w.statistics
    assert w.verdict["status"] == "ok" and w.ended == T0 and w.end == "2026-12-01T12:00:00.000Z"


# -- where the store is -------------------------------------------------------------------------------------

def test_the_store_url_comes_from_the_flag_the_environment_the_file_or_the_default(tmp_path):
    config = tmp_path / "fleet.toml"
    config.write_text('[store]\nurl = "sqlite:///from-file.db"\n')
    env = {"EDGEML_FLEET_STORE": "sqlite:///from-env.db", "EDGEML_STORE": "sqlite:///not-ours.db"}
    assert store_url("sqlite:///flag.db", config, env) == "sqlite:///flag.db"
    assert store_url(None, config, env) == "sqlite:///from-env.db"
    assert store_url(None, config, {"EDGEML_STORE": "sqlite:///not-ours.db"}) == "sqlite:///from-file.db"
    assert store_url(None, None, {}) == "sqlite:///fleet.db"
    config.write_text('[store]\nurl = "sqlite:///x.db"\npath = "x"\n')
    with pytest.raises(FleetError, match=r"\[store\] may set only url, not \['path'\]"):
        store_url(None, config, {})
    config.write_text('[store]\nurl = "postgresql://fleet:s3cret@db/fleet"\n')
    os.chmod(config, 0o644)
    with pytest.raises(FleetError, match="holds the store's password and can be read by every user"):
        store_url(None, config, {})


def test_a_bad_or_unreachable_store_is_a_clear_error_with_the_password_masked(tmp_path):
    with pytest.raises(FleetError, match="'nonsense' is not a database URL; use sqlite:///fleet.db"):
        Store.open("nonsense")
    with pytest.raises(FleetError, match="the folder .*/missing does not exist; create it"):
        Store.open(f"sqlite:///{tmp_path}/missing/fleet.db")
    from broker import free_port

    unreachable = f"postgresql://fleet:s3cret@127.0.0.1:{free_port()}/fleet"
    with pytest.raises(FleetError, match=r"cannot open the fleet store postgresql\+psycopg://fleet:\*\*\*@127.0.0.1"
                                         r".*Connection refused; check that the server runs") as caught:
        Store.open(unreachable)
    assert "s3cret" not in str(caught.value)
    shown = CliRunner().invoke(main, ["registry", "list", "--store", unreachable])
    assert shown.exit_code == 2 and "s3cret" not in shown.output and "Traceback" not in shown.output


def test_importing_the_fleet_package_does_not_import_sqlalchemy():
    code = "import sys, edgeml.fleet, edgeml.cli; print('sqlalchemy' in sys.modules)"
    done = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True, env=run_env())
    assert done.stdout.strip() == "False", done.stderr


def test_the_package_declares_the_fleet_extra():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["optional-dependencies"]["fleet"] == ["sqlalchemy>=2.0", "psycopg[binary]>=3.1",
                                                                   "orjson>=3.9", "paho-mqtt>=2.1,<3",
                                                                   "cryptography>=42"]


def test_what_orjson_cannot_write_is_written_by_the_standard_library_and_comes_back_exactly(store):
    topic, message = window("pi-07", 1, 0)
    message["columns"]["x0"]["psi"] = None  # orjson writes NaN as null too: a null goes through json, which refuses NaN
    message["verdict"]["big"] = 2**70  # beyond orjson's 64 bits
    message["verdict"]["note"] = "caf\u00e9 \u2713"
    assert store.record_messages([(topic, message)]).outcomes == ("stored",)
    (w,) = store.windows("plant-a", BUNDLE)
    assert w.statistics["columns"]["x0"]["psi"] is None and w.verdict == message["verdict"]
    assert list(w.counts["columns"]) == ["x0", "x1", "x2"] and w.counts["columns"]["x0"]["counts"] == [13, 14, 13]
    nul = {**message, "seq": 1, "verdict": {**message["verdict"], "note": "a\x00b"}}
    batch = store.record_messages([(topic, nul)])
    assert batch.outcomes == ("rejected",) and "NUL character" in batch.reasons[0]
