"""``edgeml-runtime bench``: one-row latency, throughput, cold start and the implied speed factor, on the device
itself, as a table and as JSON; a bad bundle is a clean error."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import BIN, run_env

from edgeml_runtime.bundle import read_manifest


def _bench(*args, timeout=120):
    return subprocess.run([str(BIN / "edgeml-runtime"), "bench", *map(str, args)], capture_output=True, text=True,
                          env=run_env(), timeout=timeout)


@pytest.fixture(scope="module")
def measured(demo_bundle):
    done = _bench(demo_bundle, "--seconds", "0.5", "--batch-rows", "200", "--cold-starts", "2", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def test_the_json_holds_every_measure_with_its_count(measured, demo_bundle):
    result, stderr = measured
    manifest = read_manifest(demo_bundle)
    assert result["bundle"] == {"name": manifest.name, "version": manifest.version, "identity": manifest.identity,
                                "target": manifest.target.name}
    one = result["one_row_ms"]
    assert 0 < one["median"] <= one["p99"] and one["calls"] >= 50
    assert result["batch"]["rows"] == 200 and result["batch"]["rows_per_second"] > 0 and result["batch"]["batches"] >= 3
    # a batch row costs less than a one-row call: the per-call overhead is shared
    assert result["batch"]["rows_per_second"] > 1e3 / one["median"]
    assert result["cold_start_s"]["runs"] == 2 and 0 < result["cold_start_s"]["median"] < 60
    assert result["peak_rss_mb"]["this_process"] > 10 and result["peak_rss_mb"]["cold_start"] > 10
    assert "timing one-row latency of" in stderr and "XNNPACK" not in stderr


def test_the_speed_factor_is_the_profiles_scaled_by_measured_over_predicted(measured, demo_bundle):
    result, _ = measured
    manifest = read_manifest(demo_bundle)
    sf = result["speed_factor"]
    assert sf["assumed"] == manifest.target.budgets.speed_factor == 6.0  # the rpi4 profile the demo is built for
    assert sf["predicted_ms"] == manifest.search.best_predicted_latency_ms > 0
    assert sf["measured_ms"] == result["one_row_ms"]["median"]
    assert sf["implied"] == pytest.approx(6.0 * sf["measured_ms"] / sf["predicted_ms"])


def test_the_table_names_each_measure_and_the_profile_line(demo_bundle):
    done = _bench(demo_bundle, "--seconds", "0.2", "--batch-rows", "50", "--cold-starts", "1")
    assert done.returncode == 0, done.stderr
    for text in ("one row      median", "batch ", "cold start", "peak RSS", "speed factor", 'extends = "rpi4"',
                 "speed_factor = "):
        assert text in done.stdout, done.stdout


def test_a_bad_bundle_and_bad_counts_are_clean_errors(tmp_path, demo_bundle):
    done = _bench(tmp_path / "nowhere")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert str(tmp_path / "nowhere") in done.stderr
    done = _bench(demo_bundle, "--seconds", "0")
    assert done.returncode == 2 and "--seconds must be above 0" in done.stderr and "Traceback" not in done.stderr
