"""Profiles' ``platform_tags`` and ``python``: what ``edgeml package`` downloads wheels for."""

from __future__ import annotations

import dataclasses
import re

import pytest

from edgeml.errors import TargetError
from edgeml.package.wheels import pip_platforms
from edgeml.targets.profiles import list_targets, load_target
from edgeml_runtime.manifest import Target

BOARD = 'name = "{name}"\narch = "aarch64"\ncpu = "c"\ncores = 1\nram_mb = 512\n'


def _board(tmp_path, name: str, extra: str):
    path = tmp_path / f"{name}.toml"
    path.write_text(BOARD.format(name=name) + extra)
    return path


def test_an_earlier_profile_with_one_platform_tag_reads_as_a_one_item_list(tmp_path):
    old = load_target(_board(tmp_path, "old", 'platform_tag = "manylinux2014_aarch64"\n'))
    tag = "manylinux2014_aarch64"
    assert (old.platform_tags, old.platform_tag, old.python) == ((tag,), tag, "")
    mcu = load_target(_board(tmp_path, "mcu", 'platform_tag = ""\n'))
    assert (mcu.platform_tags, mcu.platform_tag) == ((), "")


def test_both_spellings_in_one_file_are_refused(tmp_path):
    path = _board(tmp_path, "both", 'platform_tag = "a_b"\nplatform_tags = ["a_b"]\n')
    with pytest.raises(TargetError, match=r"both.toml: both platform_tag and platform_tags are set; keep platform_"):
        load_target(path)


@pytest.mark.parametrize("line, shown", [
    ('platform_tags = ["Linux ARM"]', "['Linux ARM']"),
    ('platform_tags = ["a_b", "a_b"]', "['a_b', 'a_b']"),
    ('platform_tags = "manylinux2014_aarch64"', "'manylinux2014_aarch64'"),
    ('python = "3"', "'3'"),
    ('python = 3.11', "3.11"),
])
def test_bad_values_are_named_with_what_is_allowed(tmp_path, line, shown):
    key = line.split(" ")[0]
    with pytest.raises(TargetError, match=re.escape(f"bad.toml: {key} = {shown} is not allowed")):
        load_target(_board(tmp_path, "bad", 'platform_tags = ["a_b"]\n' * (key != "platform_tags") + line + "\n"))


def test_a_profile_that_extends_inherits_the_tags_and_may_change_the_python(tmp_path):
    mine = load_target(_board(tmp_path, "mine", 'extends = "rpi4"\npython = "3.12"\n'))
    assert mine.platform_tags == load_target("rpi4").platform_tags and mine.python == "3.12"


def test_every_linux_profile_names_its_python_and_starts_with_manylinux_2_28():
    for p in list_targets():
        if p.platform_tags:
            assert p.python and p.platform_tags[0] == f"manylinux_2_28_{p.arch}", p.name
        else:
            assert p.python == "", p.name


def test_a_manifest_records_the_first_tag_as_format_5_does():
    d = load_target("rpi4").to_dict()
    assert d["platform_tag"] == "manylinux_2_28_aarch64" and "platform_tags" not in d and "python" not in d
    assert [f.name for f in dataclasses.fields(Target)] == list(d)


def test_pip_platforms_spell_out_the_glibc_range_pip_on_the_device_accepts():
    tags = pip_platforms(load_target("rpi4").platform_tags)
    assert tags[0] == "manylinux_2_28_aarch64" and "manylinux_2_27_aarch64" in tags  # LiteRT 2.3's aarch64 wheel
    assert tags[-1] == "manylinux2014_aarch64" and len(tags) == len(set(tags)) == 13
    assert pip_platforms(("linux_armv7l", "manylinux_2_5_x86_64")) == ("linux_armv7l", "manylinux_2_5_x86_64")
