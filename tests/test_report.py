"""The build report (report.html, report.json) of real builds: in headless Chromium, against the manifest.

The classification report is the session's demo bundle's; the regression one
is built here once on the shared CCPP table (skipped without it). Each page is
opened from its file in Debian's Chromium (tests/test_dashboard.py's helpers):
no console error, no request but the file, every plot there, and the numbers
on the page are the manifest's. ``edgeml report`` draws the same bytes again
from the bundle alone; a device package leaves the report out. Screenshots go
to ``test-artifacts/``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys

import pytest
from conftest import AI4I_DROP, build_bundle
from test_dashboard import ARTIFACTS, browser_page, complaints, here_env

from edgeml.report.page import render
from edgeml.report.svg import num


@pytest.fixture(scope="module")
def ccpp_bundle(datasets, tmp_path_factory):
    """A regression bundle of the CCPP power plant table (4 numeric inputs, label PE)."""
    if not (datasets / "ccpp.csv").exists():
        pytest.skip("ccpp.csv is not among the shared data sets")
    out = tmp_path_factory.mktemp("bundles") / "ccpp-1"
    build_bundle(out, data=str(datasets / "ccpp.csv"), label="PE", estimators=("lgbm",))
    return out


def _manifest(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _open(bundle, shot: str):
    """The page's facts as Chromium shows them: plot ids, metric cells, artifact rows, requests, complaints."""
    requests: list[str] = []
    with browser_page() as (page, said):
        page.on("request", lambda r: requests.append(r.url))
        page.goto((bundle / "report.html").as_uri())
        facts = page.evaluate("""() => ({
            plots: [...document.querySelectorAll('svg[data-plot]')].map(s => s.id),
            metrics: Object.fromEntries([...document.querySelectorAll('td[data-metric]')]
                .map(td => [td.dataset.split + ':' + td.dataset.metric, td.textContent])),
            artifacts: [...document.querySelectorAll('tr[data-artifact]')].map(tr => ({
                path: tr.dataset.artifact, bytes: Number(tr.querySelector('[data-bytes]').dataset.bytes),
                sha: tr.querySelector('[data-sha]').textContent})),
            threshold: (document.querySelector('[data-threshold]') || {dataset: {}}).dataset.threshold,
            marks: document.querySelectorAll('.chosen').length,
            budgets: document.querySelectorAll('.budget').length,
            width: document.documentElement.scrollWidth})""")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    assert complaints(said) == []
    assert requests == [(bundle / "report.html").as_uri()], "the page fetched something besides itself"
    return facts


def _same_numbers(facts: dict, manifest: dict, baseline_split: str = "baseline") -> None:
    for k, v in manifest["metrics"]["test"].items():
        assert facts["metrics"][f"test:{k}"] == num(v), k
    for k, v in manifest["metrics"]["valid"].items():
        assert facts["metrics"][f"valid:{k}"] == num(v), k
    assert [a["path"] for a in facts["artifacts"]] == [a["path"] for a in manifest["artifacts"]]
    for shown, a in zip(facts["artifacts"], manifest["artifacts"], strict=True):
        assert (shown["bytes"], shown["sha"]) == (a["bytes"], a["sha256"][:12])
    assert facts["width"] <= 1400, "the page is wider than the window"


def _reference_plots(manifest: dict) -> set[str]:
    return {f"plot-reference-{i}" for i, c in enumerate(manifest["reference"]["columns"].values()) if c["monitored"]}


def test_the_classification_report_shows_the_manifests_numbers(demo_bundle):
    m = _manifest(demo_bundle)
    facts = _open(demo_bundle, "report-classification.png")
    assert {"plot-confusion", "plot-roc", "plot-pr", "plot-importance", "plot-frontier",
            "plot-frontier-loss"} | _reference_plots(m) == set(facts["plots"])
    _same_numbers(facts, m)
    report = json.loads((demo_bundle / "report.json").read_text())
    majority = report["metrics"]["baseline"]
    assert facts["metrics"]["baseline:accuracy"] == num(majority["accuracy"])
    assert 0 < majority["accuracy"] < 1 and majority["f1"] == 0  # the majority class is the negative one
    assert float(facts["threshold"]) == m["decision"]["threshold"]
    assert report["curves"]["threshold"] == m["decision"]["threshold"]
    assert sum(map(sum, report["confusion"])) == m["provenance"]["data"]["split"]["test"]
    assert facts["marks"] >= 3  # the threshold on both curves, the chosen model on the frontier
    assert report["frontier"]["chosen"] in [t["iteration"] for t in report["frontier"]["trials"]]


def test_the_regression_report_shows_the_manifests_numbers(ccpp_bundle):
    m = _manifest(ccpp_bundle)
    facts = _open(ccpp_bundle, "report-regression.png")
    assert {"plot-predicted", "plot-residuals", "plot-importance", "plot-frontier",
            "plot-frontier-loss"} | _reference_plots(m) == set(facts["plots"])
    _same_numbers(facts, m)
    report = json.loads((ccpp_bundle / "report.json").read_text())
    assert report["metrics"]["baseline"]["r2"] <= 0 < m["metrics"]["test"]["r2"]  # the median explains nothing
    assert facts["metrics"]["baseline:mae"] == num(report["metrics"]["baseline"]["mae"])
    top = report["importance"]["inputs"][:2]  # ambient temperature and exhaust vacuum drive a plant's output
    assert {i["name"] for i in top} == {"AT", "EV"} and min(i["drop"] for i in top) > 0.05
    assert facts["metrics"]["baseline:rmse"] == num(report["metrics"]["baseline"]["rmse"])
    assert report["metrics"]["baseline"]["rmse"] > m["metrics"]["test"]["rmse"]
    assert facts["budgets"] >= 1  # the target's latency budget drawn on the frontier


def test_a_report_of_three_classes_draws_each_class_against_the_rest(datasets, tmp_path):
    """ai4i2020's product Type (L, M, H): a curve per class, each with the point the decision puts it at, which
    is the confusion matrix's row: its true positive rate is the diagonal over the row's sum."""
    out = tmp_path / "types-1"
    build_bundle(out, data=str(datasets / "ai4i2020.csv"), label="Type", drop=AI4I_DROP[:2], estimators=("lgbm",),
                 max_iter=2)
    m = _manifest(out)
    facts = _open(out, "report-three-classes.png")
    assert {"plot-confusion", "plot-roc", "plot-pr"} <= set(facts["plots"])
    _same_numbers(facts, m)
    report = json.loads((out / "report.json").read_text())
    per_class, confusion = report["per_class"], report["confusion"]
    assert [c["class"] for c in per_class] == m["classes"] == ["H", "L", "M"]
    for i, c in enumerate(per_class):
        row = confusion[i]
        assert c["positives"] == sum(row) and c["at_decision"]["tpr"] == pytest.approx(row[i] / sum(row), abs=1e-6)
        assert c["roc"][0] == [1.0, 1.0] and c["roc"][-1] == [0.0, 0.0]
    html = (out / "report.html").read_text()
    assert html.count('class="key"') == 3 and html.count('class="series s') == 6  # ROC and PR of each class


def test_the_importance_is_one_bar_per_input_named_as_the_table_names_it(demo_bundle):
    """A datetime input becomes several model features (hour, weekday...): shuffled together, one bar."""
    m = _manifest(demo_bundle)
    report = json.loads((demo_bundle / "report.json").read_text())
    names = [i["name"] for i in report["importance"]["inputs"]]
    assert sorted(names) == sorted(c["name"] for c in m["inputs"])
    assert any(len(c["features"]) > 1 for c in m["inputs"] if c["kind"] == "datetime")


def test_the_report_files_are_listed_and_hashed_in_the_manifest(demo_bundle):
    listed = _manifest(demo_bundle)["report"]
    for what, name in (("html", "report.html"), ("data", "report.json")):
        data = (demo_bundle / name).read_bytes()
        assert listed[what] == {"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _edgeml(*args):
    return subprocess.run([sys.executable, "-m", "edgeml.cli", *map(str, args)], capture_output=True, text=True,
                          env=here_env(), timeout=120)


def test_edgeml_report_draws_the_same_page_from_the_archive_alone(demo_bundle, tmp_path):
    out = tmp_path / "x.html"
    r = _edgeml("report", demo_bundle.parent / f"{demo_bundle.name}.tar.gz", "-o", out)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == (demo_bundle / "report.html").read_bytes()
    helped = _edgeml("report", "--help").stdout
    assert "Example:" in helped and "edgeml report dist/sensors-1.tar.gz" in helped


def test_edgeml_report_open_hands_the_page_to_the_browser_the_user_named(demo_bundle, tmp_path):
    """``--open`` goes through Python's webbrowser, which takes the BROWSER variable: here a script recording the
    address it is given; with no browser at all the command says to open the file by hand."""
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {tmp_path / "opened.txt"}\n')
    browser.chmod(0o755)
    out = tmp_path / "page.html"
    env = {**here_env(), "BROWSER": str(browser)}
    r = subprocess.run([sys.executable, "-m", "edgeml.cli", "report", str(demo_bundle), "-o", str(out), "--open"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "opened.txt").read_text().strip() == out.resolve().as_uri()
    env = {k: v for k, v in here_env().items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(BROWSER="", PATH=str(tmp_path / "no-browsers"))  # nothing webbrowser knows is on this PATH
    r = subprocess.run([sys.executable, "-m", "edgeml.cli", "report", str(demo_bundle), "-o", str(out), "--open"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"no web browser to open it with here (the BROWSER variable names one); open {out}" in r.stderr


def test_edgeml_report_refuses_what_is_not_a_bundle_or_has_no_report(demo_bundle, tmp_path):
    r = _edgeml("report", tmp_path, "-o", tmp_path / "x.html")
    assert r.returncode == 2 and "is not a bundle" in r.stderr and "Traceback" not in r.stderr
    old = shutil.copytree(demo_bundle, tmp_path / "old-1")
    manifest = _manifest(old)
    del manifest["report"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    for name in ("report.html", "report.json"):
        (old / name).unlink()
    r = _edgeml("report", old, "-o", tmp_path / "y.html")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "built before edgeml wrote reports" in r.stderr and "rebuild it with `edgeml build`" in r.stderr
    assert not (tmp_path / "y.html").exists()


def test_a_device_copy_leaves_the_report_out_and_still_verifies(demo_bundle, tmp_path):
    from edgeml.package import _copy_bundle
    from edgeml.verify.bundle_check import check_bundle

    _copy_bundle(demo_bundle, tmp_path / "bundle")
    names = {p.name for p in (tmp_path / "bundle").iterdir()}
    assert "report.html" not in names and "report.json" not in names and "model.onnx" in names
    checked = check_bundle(tmp_path / "bundle")
    assert checked.passed and {c.subject for c in checked.checks if c.status == "skip"} >= {"report.html"}


def test_every_name_from_the_data_is_escaped(demo_bundle):
    report = json.loads((demo_bundle / "report.json").read_text())
    evil = '<script>alert("x")</script> & \'q\''
    report["reference"][1]["name"] = evil
    report["importance"]["inputs"][0]["name"] = evil
    report["bundle"]["label"] = evil
    report["not_shipped"].append({"format": "<b>", "precision": "&", "reason": '"quoted"'})
    page = render(report)
    assert "<script>" not in page and '<li data-not-shipped="&lt;b&gt; &amp;"><b>&lt;b&gt; &amp;</b>' in page
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;q&#x27;") >= 3
    assert not re.search(r"\bhttps?://(?!www\.w3\.org/2000/svg)", page), "the page names an address to fetch"


def test_a_budget_far_beyond_every_trial_is_named_under_the_plot_not_drawn(demo_bundle):
    report = json.loads((demo_bundle / "report.json").read_text())
    trials = [t for t in report["frontier"]["trials"] if t["model_bytes"] and t["latency_ms"]]
    largest, slowest = max(t["model_bytes"] for t in trials), max(t["latency_ms"] for t in trials)
    assert largest < 1024 * 1024
    report["frontier"]["budgets"] = {"max_model_bytes": 30 * 1024 * 1024, "latency_budget_ms": 1000 * slowest}
    page = render(report)
    assert "beyond the plotted range: max 30 MiB." in page
    assert page.count('class="budget"') == 1  # the latency budget: its axis always reaches it
    report["frontier"]["budgets"] = {"max_model_bytes": 2 * largest, "latency_budget_ms": 2 * slowest}
    page = render(report)
    assert "beyond the plotted range" not in page and page.count('class="budget"') == 3  # size on both, latency


def test_the_build_summary_ends_with_the_reports_path(demo_bundle):
    import click

    from edgeml.build import BuildResult
    from edgeml.progress import summary
    from edgeml_runtime.bundle import read_manifest

    result = BuildResult(demo_bundle, demo_bundle.parent / f"{demo_bundle.name}.tar.gz", read_manifest(demo_bundle),
                         1.0, None)
    last = click.unstyle(summary(result)).splitlines()[-1]
    assert last.split()[:2] == ["report", str(demo_bundle / "report.html")]
