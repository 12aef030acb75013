"""Champion against challenger: real builds of the demo data, scored through edgeml_runtime on the recent rows.

The old world is the built-in demo data; in the changed world failures come
with high spindle speed instead, so a champion of the old world ranks them
backwards and a challenger trained on the changed rows wins. A challenger
whose older rows' labels were shuffled learnt nothing and loses.
"""

from __future__ import annotations

import re
import sqlite3

import numpy as np
import pandas as pd
import pytest
from conftest import build_bundle
from fleet_helpers import url  # noqa: F401 - the fixture: SQLite and PostgreSQL stores

from edgeml.data.demo import demo_frame
from edgeml.errors import DataError, FleetError
from edgeml.fleet import versions
from edgeml.fleet.challenger import Promotion, over_budget, retrain_by_build
from edgeml.fleet.scoring import recent_split, score_bundle
from edgeml.fleet.store import Store
from edgeml.verify.metrics import regression_metrics
from edgeml.verify.samples import json_value
from edgeml_runtime import Model

ROWS = 1500
LINEAGE = {"trigger": {"name": "build", "reason": "drift", "retrain": 7}, "decision": {"id": 3, "evidence": []}}


def changed_world(seed: int) -> pd.DataFrame:
    """Demo readings whose failures now follow high spindle speed (the old world's fail at low speed)."""
    frame = demo_frame(rows=ROWS, seed=seed)
    rng = np.random.default_rng(seed)
    risk = 1 / (1 + np.exp(-(frame["rpm"].to_numpy() - 1650) / 40))
    return frame.assign(failure=(rng.random(ROWS) < risk).astype(np.int64))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    (root / "fast.toml").write_text('name = "fast"\nextends = "x86-64"\ndescription = "ONNX only, for tests"\n'
                                    'formats = ["onnx"]\nprecisions = ["fp32"]\n')
    (root / "tiny.toml").write_text('name = "tiny"\nextends = "x86-64"\ndescription = "3.5 kB models"\n'
                                    'formats = ["onnx"]\nprecisions = ["fp32"]\n[budgets]\n'
                                    'max_model_bytes = 3500\n')
    demo_frame(rows=ROWS, seed=0).to_csv(root / "old.csv", index=False)
    changed_world(seed=2).to_csv(root / "changed.csv", index=False)
    # The same old world read afresh from SQLite, its rows out of time order in the table, the older rows'
    # labels shuffled: a challenger trained on them learns nothing.
    fresh = demo_frame(rows=ROWS, seed=1)
    recent = fresh["timestamp"].rank(method="first") > ROWS - 300
    older = fresh.index[~recent]
    fresh.loc[older, "failure"] = np.random.default_rng(5).permutation(fresh.loc[older, "failure"].to_numpy())
    shuffled = fresh.sample(frac=1.0, random_state=3)
    with sqlite3.connect(root / "fresh.db") as con:
        shuffled.to_sql("readings", con, index=False)
    con.close()
    return {"root": root, "fast": str(root / "fast.toml"), "tiny": str(root / "tiny.toml"),
            "recent_times": sorted(fresh.loc[recent, "timestamp"]), "file_recent": shuffled.index[-300:]}


@pytest.fixture(scope="module")
def champions(world):
    """A champion of the old world for the fast target, and a small one for the tiny target."""
    out = world["root"] / "bundles"
    old = str(world["root"] / "old.csv")
    return {"fast": build_bundle(out / "old-1", data=old, label="failure", target=world["fast"],
                                 estimators=("lgbm",)).bundle_dir,
            "tiny": build_bundle(out / "small-1", data=old, label="failure", target=world["tiny"],
                                 estimators=("lrl1",)).bundle_dir}


@pytest.fixture(scope="module")
def regressor(world):
    """A regressor of the old world's torque."""
    return build_bundle(world["root"] / "bundles" / "torque-1", data=str(world["root"] / "old.csv"), label="torque_nm",
                        target=world["fast"], estimators=("lgbm",), drop=("failure",)).bundle_dir


def crowned(store_url: str, bundle, fleet: str = "plant-a") -> versions.ModelVersion:
    with Store.open(store_url) as store:
        made = versions.register(store, bundle, fleet=fleet, lineage={"trigger": "manual"})
        return versions.promote(store, made.version)


def retrain(store_url, tmp_path, world, data, promotion=None, fleet="plant-a", meanwhile=None, **build):
    table = {"data": data if "://" in data else str(world["root"] / data), "label": "failure",
             "target": world["fast"], "estimators": ["lgbm"], "max_trials": 3, "validation": "holdout", **build}
    said = []

    def progress(text: str) -> None:
        said.append(text)
        if meanwhile is not None:
            meanwhile(text)

    result = retrain_by_build(store_url, fleet=fleet, cohort="", build=table, promotion=promotion or Promotion(),
                              lineage=LINEAGE, source=str(tmp_path / "fleet.toml"), workdir=str(tmp_path / "work"),
                              progress=progress)
    assert said and said[-1].startswith(f"challenger version {result['challenger']['version']} ")
    return result


def test_a_challenger_of_the_changed_world_is_promoted_and_the_champion_alias_moves(url, tmp_path, world):  # noqa: F811
    first = retrain(url, tmp_path, world, "old.csv")
    assert first["status"] == "promoted" and first["champion"] is None
    assert first["reason"].startswith("there was no champion; the challenger scores roc_auc ")
    assert first["challenger"]["score"] > 0.8  # the old world is learnable

    second = retrain(url, tmp_path, world, "changed.csv", Promotion(margin=0.05))
    assert second["status"] == "promoted", second["reason"]
    mine, theirs = second["challenger"]["score"], second["champion"]["score"]
    assert mine > theirs + 0.05 and theirs < 0.5  # the old champion ranks the new failures backwards
    assert second["champion"]["version"] == first["challenger"]["version"]
    assert second["rows"] == {"recent": 300, "older": 1200, "by": "file order", "first": 1201, "last": 1500}
    with Store.open(url) as store:
        now = versions.champion(store, "plant-a")
        kept = versions.versions(store, "plant-a")
    assert now.version == second["challenger"]["version"] and now.bundle_sha256 == second["challenger"]["bundle_sha256"]
    assert [(v.version, v.status, v.action) for v in kept] == [
        (first["challenger"]["version"], "retired", "trained"), (now.version, "champion", "trained")]
    assert now.version > first["challenger"]["version"] and now.bundle_version == "2"
    lineage = now.lineage
    assert lineage["trigger"] == LINEAGE["trigger"] and lineage["decision"] == LINEAGE["decision"]
    assert lineage["parent"] == {"version": first["challenger"]["version"],
                                 "bundle_sha256": first["challenger"]["bundle_sha256"]}
    assert now.parent == first["challenger"]["bundle_sha256"]
    assert lineage["data"]["sha256"] == second["data"]["sha256"] and lineage["data"]["rows"] == ROWS
    assert lineage["data"]["recent"] == second["rows"]
    assert lineage["scores"]["challenger"]["score"] == mine and lineage["scores"]["champion"]["score"] == theirs
    assert (lineage["metric"], lineage["margin"]) == ("roc_auc", 0.05)


def test_a_challenger_that_learnt_nothing_is_rejected_with_both_scores_on_the_rows_by_time(tmp_path, world,
                                                                                             champions):
    store_url = f"sqlite:///{tmp_path}/fleet.db"
    champion = crowned(store_url, champions["fast"])
    source = f"sqlite:///{world['root'] / 'fresh.db'}?table=readings"
    result = retrain(store_url, tmp_path, world, source, time_column="timestamp")
    assert result["status"] == "rejected"
    assert result["champion"]["score"] > 0.8 > result["challenger"]["score"] + 0.1
    assert result["reason"].startswith("not better by more than the margin 0 (by -")
    assert f"against the champion's (version {champion.version})" in result["reason"]
    times = world["recent_times"]  # the table's last rows are not its latest: the time column decides
    assert result["rows"] == {"recent": 300, "older": 1200, "by": "timestamp", "first": times[0], "last": times[-1]}
    with Store.open(store_url) as store:
        assert versions.champion(store, "plant-a").version == champion.version
        lost = versions.get(store, result["challenger"]["version"])
    assert lost.status == "rejected" and lost.action == "trained"
    assert lost.lineage["rejected"]["scores"]["champion"]["score"] == result["champion"]["score"]
    assert lost.lineage["rejected"]["rows"]["first"] == times[0]


def test_recent_rows_follow_the_time_column_not_the_file_order(world):
    frame = pd.read_sql_query("SELECT * FROM readings", sqlite3.connect(world["root"] / "fresh.db"))
    by_time = recent_split(frame, "failure", 0.2, "timestamp")
    assert sorted(by_time.recent["timestamp"]) == world["recent_times"]
    assert by_time.older["timestamp"].max() < by_time.recent["timestamp"].min()
    by_file = recent_split(frame, "failure", 0.2, None)
    assert by_file.recent.index.tolist() == list(range(ROWS - 300, ROWS))
    assert (by_file.first, by_file.last) == (ROWS - 299, ROWS)
    unlabelled = frame.assign(failure=frame["failure"].where(frame.index % 2 == 0))  # half the labels gone
    half = recent_split(unlabelled, "failure", 0.2, None)
    assert (len(half.recent), len(half.older), half.unlabelled) == (150, 600, 750)
    with pytest.raises(DataError, match=r"time_column 'machine_type': 1500 value\(s\) are not times, e\.g\."):
        recent_split(frame, "failure", 0.2, "machine_type")


def test_a_margin_no_gain_can_reach_rejects(tmp_path, world, champions):
    store_url = f"sqlite:///{tmp_path}/fleet.db"
    crowned(store_url, champions["fast"])
    result = retrain(store_url, tmp_path, world, "changed.csv", Promotion(margin=1.0))
    assert result["status"] == "rejected" and result["challenger"]["score"] > result["champion"]["score"]
    assert result["reason"].startswith("not better by more than the margin 1 (by 0.")


def test_a_champion_promoted_during_the_build_keeps_the_challenger_from_replacing_it(tmp_path, world, champions):
    store_url = f"sqlite:///{tmp_path}/fleet.db"
    first = crowned(store_url, champions["fast"])
    others = []

    def promote_another(text: str) -> None:  # an operator's `edgeml registry promote` while the build runs
        if text.startswith("build bundle:"):
            others.append(crowned(store_url, champions["tiny"]))

    result = retrain(store_url, tmp_path, world, "changed.csv", meanwhile=promote_another)
    assert result["status"] == "rejected" and result["challenger"]["score"] > result["champion"]["score"]
    assert result["reason"] == (f"the champion changed during the retrain (version {first.version} to "
                                f"{others[0].version}): the challenger was compared with the one before; retrain "
                                "again to compare it with the new one")
    with Store.open(store_url) as store:
        assert versions.champion(store, "plant-a").version == others[0].version


def test_a_challenger_over_the_fleet_targets_budget_is_rejected_naming_it(tmp_path, world, champions):
    store_url = f"sqlite:///{tmp_path}/fleet.db"
    crowned(store_url, champions["tiny"])
    result = retrain(store_url, tmp_path, world, "changed.csv")  # built for the fast target: a bigger model
    assert result["status"] == "rejected" and result["challenger"]["score"] > result["champion"]["score"]
    assert result["reason"].startswith("over the fleet target's budgets: max_model_bytes: ")
    assert "bytes with its preprocessing, is over target 'tiny''s 3,500" in result["reason"]
    assert re.search(r"max_model_bytes: model.onnx, [\d,]+ bytes", result["reason"])
    assert result["budgets"]["within"] is False and result["budgets"]["broken"][0].startswith("max_model_bytes")
    small = Model.load(champions["tiny"]).manifest
    assert over_budget(small, small) == []


def test_a_row_a_bundle_cannot_score_counts_against_it(world, champions):
    model = Model.load(champions["fast"])
    rows = pd.read_csv(world["root"] / "old.csv").iloc[-200:]
    clean = score_bundle(model, rows, "failure", "accuracy")
    broken = rows.assign(rpm=rows["rpm"].astype(object))
    right = broken.index[broken["failure"] == 0][:20]  # rows the model calls right (no failure, mostly)
    broken.loc[right, "rpm"] = "fast"
    hurt = score_bundle(model, broken, "failure", "accuracy")
    assert (clean.failed, hurt.failed, hurt.rows) == (0, 20, 200)
    assert hurt.value < clean.value and "rpm" in hurt.reasons[0]
    gone = score_bundle(model, rows.drop(columns="torque_nm"), "failure", "accuracy")
    assert (gone.failed, gone.value) == (200, 0.0) and "torque_nm" in gone.reasons[0]


def test_a_regressor_is_given_the_farthest_recent_label_for_a_row_it_cannot_score(world, regressor):
    model = Model.load(regressor)
    rows = pd.read_csv(world["root"] / "old.csv").iloc[-100:]
    y = rows["torque_nm"].to_numpy()
    clean = model.predict({n: [json_value(v) for v in rows[n]] for n in model.manifest.schema.names}).labels
    broken = rows.assign(rpm=rows["rpm"].astype(object))
    broken.loc[broken.index[:10], "rpm"] = "fast"
    hurt = score_bundle(model, broken, "torque_nm", "rmse")
    farthest = np.where(y - y.min() > y.max() - y, y.min(), y.max())
    expected = regression_metrics(y, np.concatenate([farthest[:10], clean[10:]]))["rmse"]
    assert (hurt.failed, hurt.value) == (10, expected)
    assert hurt.value > score_bundle(model, rows, "torque_nm", "rmse").value


def test_a_bad_retrain_key_is_refused_naming_it(tmp_path, world):
    store_url = f"sqlite:///{tmp_path}/fleet.db"
    with pytest.raises(FleetError, match=r"unknown key 'max_trails' in \[retrain\]; did you mean 'max_trials'"):
        retrain(store_url, tmp_path, world, "old.csv", max_trails=3)
    with pytest.raises(FleetError, match=r"\[retrain\] out is set by the build trigger"):
        retrain(store_url, tmp_path, world, "old.csv", out="elsewhere")
    with pytest.raises(FleetError, match=r"max_iter = 0 is not allowed; give at least 1 trial \(set max_iter in "
                                         r"\[retrain\] of .*fleet.toml\)$"):
        retrain(store_url, tmp_path, world, "old.csv", max_trials=0)
    with Store.open(store_url) as store:
        assert versions.versions(store) == []


@pytest.mark.parametrize("table, match", [
    ({"recent_share": 1.0}, r"fleet.toml: \[promotion\] recent_share = 1.0: give the share"),
    ({"margin": -0.1}, r"\[promotion\] margin = -0.1"),
    ({"metric": "mape"}, r"\[promotion\] metric = 'mape' is not a metric champion and challenger are compared on"),
    ({"marginn": 0.1}, r"\[promotion\] marginn is not a key of \[promotion\]; did you mean 'margin'"),
])
def test_promotion_table_is_checked(table, match):
    with pytest.raises(FleetError, match=match):
        Promotion.from_table(table, "fleet.toml")
