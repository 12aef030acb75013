"""The [policy] table: defaults, durations, unknown keys and every bad value named with what is allowed."""

from __future__ import annotations

import pytest

from edgeml.errors import FleetError
from edgeml.fleet.policy import Policy
from edgeml.fleet.status import load_policy
from edgeml_runtime.protocol import VerdictRule


def test_defaults_and_the_verdict_rule_they_make():
    p = Policy()
    assert (p.judge_every, p.slice, p.slices, p.drifted_slices, p.recover_slices, p.cooldown) == \
        (10.0, 60.0, 10, 3, 1, 600.0)
    assert p.rule() == VerdictRule() and p.horizon == 600.0
    assert Policy.from_table(p.to_dict(), "x") == p


def test_one_drifted_slice_recovers_at_none_unless_told():
    # The default hysteresis (recover when at most 1 slice drifted) needs drifted_slices >= 2.
    assert Policy.from_table({"drifted_slices": 1}, "fleet.toml").recover_slices == 0
    assert Policy.from_table({"drifted_slices": 4}, "fleet.toml").recover_slices == 1
    with pytest.raises(FleetError, match=r"recover_slices = 1: must be a whole number from 0 to drifted_slices "
                                         r"- 1 \(0\); e.g. recover_slices = 0"):
        Policy.from_table({"drifted_slices": 1, "recover_slices": 1}, "fleet.toml")


@pytest.mark.parametrize(("text", "seconds"), [(30, 30.0), (2.5, 2.5), ("30s", 30.0), ("10m", 600.0),
                                               ("1h", 3600.0), ("1d", 86400.0), ("90", 90.0), (" 1.5m ", 90.0)])
def test_durations_are_seconds_or_text(text, seconds):
    assert Policy.from_table({"cooldown": text}, "fleet.toml").cooldown == seconds


def test_slices_are_aligned_complete_and_oldest_first():
    p = Policy(slice=60, slices=3, drifted_slices=2)
    assert p.bounds(1000.0) == [(780.0, 840.0), (840.0, 900.0), (900.0, 960.0)]
    assert p.bounds(960.0)[-1] == (900.0, 960.0)


@pytest.mark.parametrize(("table", "message"), [
    ({"slcie": 60}, r"fleet.toml: \[policy\] has no key 'slcie'; the keys are judge_every, slice, slices"),
    ({"slice": "soon"}, r"slice = 'soon': not a duration; give seconds \(30\) or text such as \"30s\""),
    ({"slice": 0}, r"slice = 0: must be a duration of at least 0.001 seconds"),
    ({"cooldown": -1}, r"cooldown = -1: must be a duration of at least 0 seconds"),
    ({"judge_every": True}, r"judge_every = True: must be a duration"),
    ({"slices": 0}, r"slices = 0: must be a whole number from 1 to 10,000; e.g. slices = 10"),
    ({"slices": 2.5}, r"slices = 2.5: must be a whole number"),
    ({"drifted_slices": 11}, r"drifted_slices = 11: must be a whole number from 1 to slices \(10\)"),
    ({"recover_slices": 3}, r"recover_slices = 3: must be a whole number from 0 to drifted_slices - 1 \(2\)"),
    ({"min_devices": 0}, r"min_devices = 0: must be a whole number from 1"),
    ({"device_share": 1.5}, r"device_share = 1.5: must be a share of the devices, above 0 and at most 1"),
    ({"anomaly_alpha": 1}, r"anomaly_alpha = 1: must be a probability above 0 and below 1"),
    ({"alpha": 0}, r"alpha = 0: must be a probability above 0 and below 1"),
    ({"psi_moderate": 0.3}, r"psi_moderate = 0.3: must satisfy 0 < psi_moderate <= psi_significant"),
    ({"min_rows": -1}, r"min_rows"),
])
def test_each_bad_value_is_named_with_what_is_allowed(table, message):
    with pytest.raises(FleetError, match=message) as raised:
        Policy.from_table(table, "fleet.toml")
    assert str(raised.value).startswith("fleet.toml: [policy] ")


def test_the_policy_comes_from_fleet_toml(tmp_path):
    config = tmp_path / "fleet.toml"
    config.write_text('[store]\nurl = "sqlite:///x.db"\n\n[policy]\nslice = "5m"\nmin_devices = 2\n')
    assert (load_policy(config).slice, load_policy(config).min_devices) == (300.0, 2)
    assert load_policy(None) == Policy()
    config.write_text("[policy]\nslice = [1]\n")
    with pytest.raises(FleetError, match=r"slice = \[1\]: must be a duration"):
        load_policy(config)
    config.write_text("policy = 3\n")
    with pytest.raises(FleetError, match=r"\[policy\] must be a table of keys, not int"):
        load_policy(config)
