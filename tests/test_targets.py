"""Target profiles: the shipped TOML files, inheritance, and every way a profile can be wrong."""

from __future__ import annotations

import json
import shutil
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from edgeml.errors import TargetError
from edgeml.models.learners import LEARNERS, Learner, register_learner, unregister_learner
from edgeml.targets.profiles import (
    ARCHES,
    FORMATS,
    PRECISIONS,
    Budgets,
    list_targets,
    load_target,
    render_profile,
    targets_dir,
)

REPO_TARGETS = Path(__file__).resolve().parents[1] / "targets"
SHIPPED = sorted(p.stem for p in REPO_TARGETS.glob("*.toml") if not p.name.startswith("_"))

# A complete stand-alone profile; tests replace or add one line of it.
VALID = """\
name = "{name}"
description = "a test board"
arch = "aarch64"
platform_tag = "manylinux2014_aarch64"
cpu = "test CPU"
cores = 2
ram_mb = 1024
"""


@pytest.fixture(autouse=True)
def _builtin_dir(monkeypatch):
    """Every test sees the repo's own targets/ unless it points elsewhere."""
    monkeypatch.delenv("EDGEML_TARGETS_DIR", raising=False)


@pytest.fixture
def tdir(tmp_path, monkeypatch) -> Path:
    """A private copy of the shipped profiles, used as the built-in folder."""
    copy = tmp_path / "targets"
    shutil.copytree(REPO_TARGETS, copy)
    monkeypatch.setenv("EDGEML_TARGETS_DIR", str(copy))
    return copy


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


# --- the shipped profiles -----------------------------------------------------------------


def test_ships_at_least_rpi4_and_x86_64():
    assert {"rpi4", "x86-64"} <= set(SHIPPED)
    assert (REPO_TARGETS / "_defaults.toml").is_file()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads_and_is_valid(name):
    p = load_target(name)
    assert p.name == name and p.description
    assert p.source == f"targets/{name}.toml"  # the same in every checkout: the manifest records it
    assert p.arch in ARCHES and p.cores >= 1 and p.ram_mb > 0
    assert p.formats and set(p.formats) <= set(FORMATS)
    assert p.precisions and set(p.precisions) <= set(PRECISIONS)
    assert p.estimators and set(p.estimators) <= set(LEARNERS)
    # A latency budget needs a speed factor to judge it by; accelerators and MCUs, whose latency the cost model
    # (fitted on CPUs running onnxruntime) cannot predict, have neither.
    if p.budgets.latency_budget_ms is not None:
        assert p.budgets.speed_factor is not None and p.budgets.speed_factor > 0
    assert p.budgets.allowed_metric_drop >= 0
    if p.tflite_ops:
        assert "tflite" in p.formats


@pytest.mark.parametrize("name", SHIPPED)
def test_to_dict_is_json_ready_and_round_trips(name):
    p = load_target(name)
    d = json.loads(json.dumps(p.to_dict()))
    assert d["name"] == name and isinstance(d["formats"], list) and "budgets" in d
    assert d["source"] == f"targets/{name}.toml" and str(REPO_TARGETS) not in json.dumps(d)


@pytest.mark.parametrize("name", SHIPPED)
def test_render_is_toml_that_loads_back_as_the_same_profile(name, tmp_path):
    p = load_target(name)
    text = render_profile(p)
    assert tomllib.loads(text)["name"] == name
    copy = load_target(write(tmp_path, name, text))
    assert copy == replace(p, source=str(tmp_path / f"{name}.toml"))


def test_rpi4_is_the_4gb_pi4():
    p = load_target("rpi4")
    assert (p.arch, p.platform_tag, p.cores, p.ram_mb) == ("aarch64", "manylinux_2_28_aarch64", 4, 4096)
    assert "Cortex-A72" in p.cpu
    assert all(size in p.description for size in ("1", "2", "8"))
    assert p.budgets.allowed_metric_drop == 0.01  # from _defaults.toml


def test_x86_64_gateway():
    p = load_target("x86-64")
    assert (p.arch, p.platform_tag, p.cores, p.ram_mb) == ("x86_64", "manylinux_2_28_x86_64", 4, 8192)


def test_ships_every_profile_the_issue_names():
    assert {"rpi4", "rpi-zero-2w", "jetson-nano", "x86-64", "x86-64-avx512-vnni"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_states_its_budgets(name):
    b = load_target(name).budgets
    assert b.max_model_bytes
    if not load_target(name).tflite_ops:  # accelerators and MCUs: see test_integer_only_targets_...
        assert b.max_model_ram_mb and b.latency_budget_ms and b.speed_factor
    else:
        assert b.latency_budget_ms is None and b.speed_factor is None
        return
    # The comment just above speed_factor says where the number comes from.
    comment = (REPO_TARGETS / f"{name}.toml").read_text().split("\nspeed_factor =")[0].rsplit("\n\n", 1)[-1]
    assert "comes from" in comment and ("estimate" in comment or "measure" in comment.lower()), comment


def test_rpi_zero_2w_runs_a_minimal_build():
    p = load_target("rpi-zero-2w")
    assert (p.arch, p.cores, p.ram_mb) == ("aarch64", 4, 512) and "Cortex-A53" in p.cpu
    assert p.ort_minimal and "ort" in p.formats and p.ort_optimization != "none"
    assert p.budgets.speed_factor > load_target("rpi4").budgets.speed_factor


def test_jetson_nano_has_gpu_providers_fp16_and_cpu_fallback():
    p = load_target("jetson-nano")
    assert p.providers == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert p.precisions == ("fp16", "fp32") and "mlp" in p.estimators


def test_int8_server_prefers_int8():
    p = load_target("x86-64-avx512-vnni")
    assert p.arch == "x86_64" and p.precisions[0] == "int8" and "mlp" in p.estimators


def test_known_estimators_are_every_registered_learner(tdir):
    write(tdir, "deep", VALID.format(name="deep") + 'estimators = ["xgb_limitdepth", "lgbm"]\n')
    assert load_target("deep").estimators == ("xgb_limitdepth", "lgbm")


def test_a_learner_registered_later_is_allowed_at_once(tdir, extra_learner):
    write(tdir, "later", VALID.format(name="later") + f'estimators = ["{extra_learner}", "lgbm"]\n')
    assert load_target("later").estimators == (extra_learner, "lgbm")


def test_an_unregistered_learner_is_refused_again(tdir, extra_learner):
    unregister_learner(extra_learner)
    try:
        write(tdir, "gone", VALID.format(name="gone") + f'estimators = ["{extra_learner}"]\n')
        with pytest.raises(TargetError, match=r"estimators = \['lr_extra'\] is not allowed.*drawn from lgbm, "):
            load_target("gone")
        with pytest.raises(ValueError, match="no learner 'lr_extra' is registered"):
            unregister_learner(extra_learner)
    finally:
        register_learner(Learner("lr_extra", "edgeml.models.estimators:StandardizedLRL2Classifier",
                                 ("classification",), "linear", "a learner registered by a test"))


def test_ort_minimal_needs_the_ort_format(tdir):
    write(tdir, "tiny", VALID.format(name="tiny") + "ort_minimal = true\n")
    with pytest.raises(TargetError, match=r"tiny.toml: ort_minimal = true, but formats = \['onnx'\] lacks 'ort'"):
        load_target("tiny")


def test_list_targets_skips_underscore_files():
    assert [p.name for p in list_targets()] == SHIPPED
    with pytest.raises(TargetError, match="unknown target '_defaults'"):
        load_target("_defaults")


def test_targets_dir_defaults_to_repo_and_follows_env(tdir, monkeypatch):
    assert targets_dir() == tdir
    monkeypatch.delenv("EDGEML_TARGETS_DIR")
    assert targets_dir() == REPO_TARGETS


def test_targets_dir_falls_back_to_the_installed_copy(monkeypatch, tmp_path):
    import sys

    import edgeml.targets.files as targets

    monkeypatch.setattr(targets, "__file__", str(tmp_path / "site-packages" / "edgeml" / "targets" / "files.py"))
    assert targets_dir() == Path(sys.prefix) / "share" / "edgeml" / "targets"


def test_targets_dir_env_must_be_a_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEML_TARGETS_DIR", str(tmp_path / "nope"))
    with pytest.raises(TargetError, match="EDGEML_TARGETS_DIR=.*nope is not a directory"):
        load_target("rpi4")


# --- inheritance --------------------------------------------------------------------------


def test_extends_chain_and_defaults_resolve(tdir):
    (tdir / "_defaults.toml").write_text(
        (tdir / "_defaults.toml").read_text().replace("allowed_metric_drop = 0.01", "allowed_metric_drop = 0.02")
    )
    write(tdir, "pi-a", 'name = "pi-a"\nextends = "rpi4"\ndescription = "A"\nram_mb = 2048\n'
          "[budgets]\nlatency_budget_ms = 3\n")
    write(tdir, "pi-b", 'name = "pi-b"\nextends = "pi-a"\nestimators = ["lgbm", "rf"]\n')
    rpi4, b = load_target("rpi4"), load_target("pi-b")
    assert rpi4.budgets.allowed_metric_drop == 0.02
    assert b.name == "pi-b" and b.description == ""  # name and description are never inherited
    assert b.ram_mb == 2048  # from pi-a
    assert (b.arch, b.cpu, b.formats) == (rpi4.arch, rpi4.cpu, rpi4.formats)  # from rpi4
    assert b.estimators == ("lgbm", "rf")  # a list replaces, it does not append
    assert b.budgets.latency_budget_ms == 3.0 and isinstance(b.budgets.latency_budget_ms, float)
    assert b.budgets.speed_factor == rpi4.budgets.speed_factor  # [budgets] merges key by key
    assert b.budgets.allowed_metric_drop == 0.02  # from _defaults.toml, through two levels
    assert b.source == "targets/pi-b.toml"  # a built-in (in the targets folder): relative to it
    assert load_target(tdir / "pi-b.toml").source == "targets/pi-b.toml"  # however it is named


def test_defaults_fill_a_standalone_profile(tdir):
    p = load_target(write(tdir, "board", VALID.format(name="board")))
    assert p.formats == ("onnx",) and p.precisions == ("fp32",)
    assert p.estimators == ("lgbm", "xgboost", "rf", "extra_tree", "lrl1", "lrl2", "enet")  # the MLP is opt-in
    assert (p.providers, p.ort_minimal, p.ort_optimization) == (("CPUExecutionProvider",), False, "none")
    assert p.budgets == Budgets(allowed_metric_drop=0.01, max_accuracy_drop=0.01, max_rmse_increase=0.02)


def test_custom_profile_from_a_path_may_extend_a_builtin(tmp_path):
    path = write(tmp_path, "my-board", 'name = "my-board"\nextends = "rpi4"\nram_mb = 8192\n'
                 "[budgets]\nspeed_factor = 4.5\n")
    for arg in (str(path), path):
        p = load_target(arg)
        assert (p.name, p.ram_mb, p.arch, p.budgets.speed_factor) == ("my-board", 8192, "aarch64", 4.5)
        assert p.source == str(path)


def test_extends_may_name_a_sibling_file(tmp_path):
    write(tmp_path, "base-board", VALID.format(name="base-board"))
    p = load_target(write(tmp_path, "child", 'name = "child"\nextends = "./base-board.toml"\ncores = 8\n'))
    assert (p.cores, p.cpu) == (8, "test CPU")


def test_extends_missing_sibling_file_names_both(tmp_path):
    path = write(tmp_path, "child", 'name = "child"\nextends = "./gone.toml"\n')
    with pytest.raises(TargetError, match=f"{path}: extends = './gone.toml', but .*gone.toml does not exist"):
        load_target(path)


def test_cycle_in_extends_is_rejected(tdir):
    write(tdir, "loop-a", 'name = "loop-a"\nextends = "loop-b"\n')
    write(tdir, "loop-b", 'name = "loop-b"\nextends = "loop-a"\n')
    with pytest.raises(TargetError, match=r"cycle \(loop-a -> loop-b -> loop-a\)"):
        load_target("loop-a")
    write(tdir, "selfish", 'name = "selfish"\nextends = "selfish"\n')
    with pytest.raises(TargetError, match="selfish.toml: extends = 'selfish' makes a cycle"):
        load_target("selfish")


def test_extends_unknown_names_the_file(tdir):
    write(tdir, "orphan", 'name = "orphan"\nextends = "rpi-4"\n')
    with pytest.raises(TargetError, match=r"orphan.toml: extends = 'rpi-4': unknown target 'rpi-4'; did you mean rpi4"):
        load_target("orphan")


def test_missing_required_keys_are_named(tdir):
    write(tdir, "bare", 'name = "bare"\narch = "x86_64"\n')
    with pytest.raises(TargetError, match="bare.toml: missing platform_tags, cpu, cores, ram_mb"):
        load_target("bare")


def test_defaults_may_not_set_name_or_extends(tdir):
    (tdir / "_defaults.toml").write_text('extends = "rpi4"\n')
    with pytest.raises(TargetError, match="_defaults.toml: 'extends' cannot be set in shared defaults"):
        load_target("rpi4")


# --- what a bad profile is told ---------------------------------------------------------------


def test_unknown_key_names_file_key_and_nearest_key(tdir):
    path = write(tdir, "typo", VALID.format(name="typo") + "ram = 2048\n")
    with pytest.raises(TargetError) as err:
        load_target("typo")
    msg = str(err.value)
    assert str(path) in msg and "unknown key 'ram'" in msg and "did you mean 'ram_mb'?" in msg


def test_unknown_budget_key_suggests_the_budget_key(tdir):
    write(tdir, "typo", VALID.format(name="typo") + "[budgets]\nlatency_ms = 5\n")
    with pytest.raises(TargetError,
                       match=r"unknown key 'budgets.latency_ms'; did you mean 'budgets.latency_budget_ms'"):
        load_target("typo")


def test_budget_key_at_top_level_is_pointed_to_the_table(tdir):
    write(tdir, "misplaced", VALID.format(name="misplaced") + "speed_factor = 3.0\n")
    with pytest.raises(TargetError, match="unknown key 'speed_factor'; it belongs in the \\[budgets\\] table"):
        load_target("misplaced")


@pytest.mark.parametrize(
    "line, key, shown, allowed",
    [
        ("cores = 0", "cores", "0", "an integer >= 1"),
        ("cores = 2.5", "cores", "2.5", "an integer >= 1"),
        ("cores = true", "cores", "True", "an integer >= 1"),
        ('cores = "4"', "cores", "'4'", "an integer >= 1"),
        ("ram_mb = -512", "ram_mb", "-512", "an integer >= 1"),
        ('arch = "arm64"', "arch", "'arm64'", "one of aarch64, armv7l, x86_64, xtensa, armv7em"),
        ('platform_tag = "Linux ARM"', "platform_tag", "'Linux ARM'", "wheel platform tag"),
        ("cpu = 72", "cpu", "72", "a string"),
        ("description = []", "description", "[]", "a string"),
        ("formats = []", "formats", "[]", "a non-empty list"),
        ('formats = "onnx"', "formats", "'onnx'", "a non-empty list"),
        ('formats = ["onnx", "onnx"]', "formats", "['onnx', 'onnx']", "without repeats"),
        ('formats = ["tf-lite"]', "formats", "['tf-lite']", "did you mean 'tflite'?"),
        ('precisions = ["fp64"]', "precisions", "['fp64']", "fp32, fp16, int8"),
        ('estimators = ["lightgbm"]', "estimators", "['lightgbm']", "did you mean 'lgbm'?"),
        ('extends = ""', "extends", "''", "the name of another profile"),
        ("[budgets]\nmax_model_bytes = 0", "budgets.max_model_bytes", "0", "an integer >= 1"),
        ("[budgets]\nmax_model_ram_mb = 1.5", "budgets.max_model_ram_mb", "1.5", "an integer >= 1"),
        ("[budgets]\nlatency_budget_ms = 0", "budgets.latency_budget_ms", "0", "a finite number > 0"),
        ("[budgets]\nspeed_factor = -2.0", "budgets.speed_factor", "-2.0", "a finite number > 0"),
        ("[budgets]\nspeed_factor = nan", "budgets.speed_factor", "nan", "a finite number > 0"),
        ("[budgets]\nspeed_factor = inf", "budgets.speed_factor", "inf", "a finite number > 0"),
        ('[budgets]\nspeed_factor = "fast"', "budgets.speed_factor", "'fast'", "a finite number > 0"),
        ("[budgets]\nallowed_metric_drop = -0.01", "budgets.allowed_metric_drop", "-0.01", "a finite number >= 0"),
        ("[budgets]\nmax_accuracy_drop = -1", "budgets.max_accuracy_drop", "-1", "a finite number >= 0"),
        ("[budgets]\nmax_rmse_increase = true", "budgets.max_rmse_increase", "True", "a finite number >= 0"),
        ('providers = ["CUDAExecutionProvider"]', "providers", "['CUDAExecutionProvider']",
         "including CPUExecutionProvider"),
        ('providers = ["CudaExecutionProvider", "CPUExecutionProvider"]', "providers",
         "['CudaExecutionProvider', 'CPUExecutionProvider']", "did you mean 'CUDAExecutionProvider'?"),
        ('ort_minimal = "yes"', "ort_minimal", "'yes'", "true or false"),
        ('ort_optimization = "max"', "ort_optimization", "'max'", "one of none, basic, extended, all"),
    ],
)
def test_bad_value_names_file_key_value_and_what_is_allowed(tdir, line, key, shown, allowed):
    body = VALID.format(name="bad")
    first = line.split("\n")[-1].split(" = ")[0]
    body = "\n".join(ln for ln in body.splitlines() if not ln.startswith(first + " ")) + "\n" + line + "\n"
    path = write(tdir, "bad", body)
    with pytest.raises(TargetError) as err:
        load_target("bad")
    msg = str(err.value)
    assert msg.startswith(f"{path}: {key} = {shown} is not allowed"), msg
    assert allowed in msg


def test_edge_values_are_accepted(tdir):
    text = (
        VALID.format(name="mcu")
        .replace('"aarch64"', '"armv7em"')
        .replace('"manylinux2014_aarch64"', '""')
        .replace('"test CPU"', '"Cortex-M4"')
    )
    write(tdir, "mcu", text + "[budgets]\nallowed_metric_drop = 0\nmax_model_bytes = 65_536\n")
    p = load_target("mcu")
    assert (p.arch, p.platform_tag) == ("armv7em", "")
    assert p.budgets.allowed_metric_drop == 0.0 and p.budgets.max_model_bytes == 65536


def test_budgets_must_be_a_table(tdir):
    write(tdir, "flat", VALID.format(name="flat") + "budgets = 5\n")
    with pytest.raises(TargetError,
                       match=r"flat.toml: budgets = 5 is not allowed; write the budgets as a \[budgets\] table"):
        load_target("flat")


def test_name_must_match_the_file(tdir):
    write(tdir, "board-1", VALID.format(name="board-2"))
    with pytest.raises(TargetError,
                       match=r"board-1.toml: name = 'board-2' does not match the file name; set name = 'board-1'"):
        load_target("board-1")
    write(tdir, "nameless", VALID.format(name="x").replace('name = "x"\n', ""))
    with pytest.raises(TargetError, match="nameless.toml: missing key 'name'"):
        load_target("nameless")


def test_invalid_toml_names_the_file(tdir):
    write(tdir, "broken", 'name = "broken"\ncores = \n')
    with pytest.raises(TargetError, match=r"broken.toml: not valid TOML \(.*\); fix the syntax"):
        load_target("broken")


def test_unknown_name_lists_available_and_close_matches():
    with pytest.raises(TargetError) as err:
        load_target("rpi")
    msg = str(err.value)
    assert "unknown target 'rpi'; did you mean rpi4?" in msg
    assert all(name in msg for name in SHIPPED) and ".toml file" in msg


def test_missing_profile_file_says_so(tmp_path):
    with pytest.raises(TargetError, match=r"no such target profile file.*built-in target: .*rpi4"):
        load_target(str(tmp_path / "ghost.toml"))


def test_a_users_profile_records_its_path_as_given(tmp_path, monkeypatch):
    write(tmp_path, "my-board", VALID.format(name="my-board"))
    monkeypatch.chdir(tmp_path)
    p = load_target("my-board.toml")
    assert p.source == "my-board.toml" and p.to_dict()["source"] == "my-board.toml"
    assert render_profile(p).startswith("# my-board, resolved from my-board.toml")
