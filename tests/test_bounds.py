"""Numbers a user gives that the libraries below would choke on: inference threads and random seeds.

``--threads 100000`` ran for ten minutes; a seed out of scikit-learn's range
ended in its traceback. Both are refused up front, naming the setting.
"""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from edgeml.cli import main
from edgeml.config import SEED_MAX, BuildConfig, resolve
from edgeml.errors import ConfigError
from edgeml_runtime.cli import main as runtime_main
from edgeml_runtime.errors import SettingsError, max_threads
from edgeml_runtime.model import Model


@pytest.mark.parametrize("threads", ["100000", "0", "-1", "two"])
def test_score_refuses_threads_out_of_bounds(demo_bundle, demo_rows, threads, capsys):
    with pytest.raises(SystemExit) as exited:
        runtime_main(["score", str(demo_bundle), "--input", str(demo_rows), "--threads", threads])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    assert f"argument --threads: {threads!r} is not a number of threads from 1 to {max_threads()}" in err


def test_the_library_refuses_them_too(demo_bundle):
    with pytest.raises(SettingsError, match=rf"^threads = 100000: must be a whole number from 1 to {max_threads()}"):
        Model.load(demo_bundle, threads=100_000)
    assert max_threads() == 4 * (os.cpu_count() or 1)
    assert Model.load(demo_bundle, threads=max_threads()).manifest.name == "demo"  # the bound itself is allowed


@pytest.mark.parametrize("seed", [-1, SEED_MAX + 1, 2**70])
def test_seeds_out_of_range_are_a_clean_error(tmp_path, seed):
    with pytest.raises(ConfigError, match=rf"^seed = {seed} is out of range; give a whole number from 0 to "
                                          rf"{SEED_MAX} \(set it with the --seed flag or seed in edgeml.toml"):
        BuildConfig(seed=seed)
    (tmp_path / "edgeml.toml").write_text(f"[build]\nseed = {seed}\n" if seed < 2**63 else "[build]\n")
    if seed < 2**63:  # TOML integers are 64-bit
        with pytest.raises(ConfigError, match=rf"^seed = {seed} is out of range"):
            resolve({}, cwd=tmp_path)
    assert BuildConfig(seed=SEED_MAX).seed == SEED_MAX


def test_build_seed_flag_gives_no_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["build", "--seed", "-3", "--max-trials", "1", "-o", str(tmp_path / "out")])
    assert done.exit_code == 2 and (done.exception is None or isinstance(done.exception, SystemExit))
    assert "seed = -3 is out of range; give a whole number from 0 to 4294967295" in done.output
    assert not (tmp_path / "out").exists()
