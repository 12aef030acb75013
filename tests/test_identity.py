"""Who a device is: fleet names and device ids follow one grammar everywhere, and the fleet is part of every key.

A device id is a topic level, a broker user name, an ACL line, part of the
MQTT client id and of file names: ids with control characters, look-alike
letters, path-like or reserved names are refused where they are set (naming
the setting), where topics are parsed, and by the JSON Schemas, which the
hypothesis test holds to the same grammar as the code.
"""

from __future__ import annotations

import re

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeml_runtime.errors import ProtocolError, SettingsError
from edgeml_runtime.protocol import DeviceTopics, decode, parse_topic, schema, window_key
from edgeml_runtime.protocol.topics import LEVEL_PATTERN, MAX_LEVEL, RESERVED, level_problem
from edgeml_runtime.settings import resolve_settings

ENV = {"EDGEML_FLEET": "plant-a", "EDGEML_BROKER": "mqtt://127.0.0.1:1883"}

BAD_IDS = [
    ("pi\x0007", "control character U\\+0000 at position 3"),
    ("pi-07\n", "control character U\\+000A at position 6"),
    ("pi\x1b[2J", "control character U\\+001B"),
    ("pi\x7f", "control character U\\+007F"),
    ("pi\u2028x", "control character U\\+2028"),
    ("p" * (MAX_LEVEL + 1), f"is {MAX_LEVEL + 1} characters long, over the limit of {MAX_LEVEL}"),
    ("_controller", "names starting with '_' or '\\$' are reserved"),
    ("$SYS", "names starting with '_' or '\\$' are reserved"),
    ("fleet", "is reserved for the fleet's own topics"),
    ("controller", "is reserved for the fleet's own topics"),
    ("pі-07", "contains 'і' \\(U\\+0456\\); only ASCII letters"),   # a Cyrillic і
    ("pi 07", "contains ' ' \\(U\\+0020\\)"),
    ("pi\u200b07", "contains '\\\\u200b' \\(U\\+200B\\)"),                  # zero-width space
    ("..", "starts with '.'; it must start with a letter or a digit"),
    ("-rf", "starts with '-'"),
]


@pytest.mark.parametrize("value,problem", BAD_IDS)
@pytest.mark.parametrize("key", ["device_id", "fleet"])
def test_bad_ids_are_refused_naming_the_setting(key, value, problem):
    flags = {"device_id": "pi-07", key: value}
    flag = key.replace("_", "-")
    with pytest.raises(SettingsError, match=rf"^{key} = .* \(from flag --{flag}\): .*{problem}.*; choose a .* of at "
                                            "most 64 ASCII letters"):
        resolve_settings(flags, environ=ENV)


@pytest.mark.parametrize("value,problem", BAD_IDS)
def test_a_topic_naming_a_bad_id_is_not_a_device_topic(value, problem):
    if "/" in value:
        pytest.skip("a level cannot hold '/'")
    with pytest.raises(ProtocolError, match=rf"the device level .* {problem}"):
        parse_topic(f"edgeml/plant-a/{value}/drift")


def test_good_ids_pass_everywhere():
    for value in ("pi-07", "PI_07", "a", "9", "line.3-west", "p" * MAX_LEVEL, "Fleet", "_"[1:] + "x_"):
        assert level_problem(value) is None, value
        assert DeviceTopics(value, value).drift == f"edgeml/{value}/{value}/drift"


def test_the_json_schemas_state_the_same_grammar():
    for kind in ("birth", "death", "drift", "prediction"):
        s = schema(kind)
        for key in ("device", "fleet"):
            level = s["properties"][key]
            level = s["$defs"][level["$ref"].rsplit("/", 1)[1]] if "$ref" in level else level
            assert level["pattern"] == LEVEL_PATTERN, (kind, key)
            assert level["not"] == {"enum": list(RESERVED)}, (kind, key)


_LEVEL = jsonschema.Draft202012Validator(schema("death")["properties"]["device"])
_ALPHABET = st.sampled_from("aZ09._-$/+# \x00\n\x7f\u00e9\u0456\u200b\u2028")


@settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(_ALPHABET, max_size=8), st.text(max_size=8), st.sampled_from(RESERVED),
                 st.integers(60, 70).map(lambda n: "a" * n)))
def test_code_and_schema_agree_on_every_id(value):
    """600 ids: the code accepts exactly what the JSON Schema accepts (and what LEVEL_PATTERN matches)."""
    by_code = level_problem(value) is None
    by_schema = _LEVEL.is_valid(value) and "\n" not in value  # Python's $ also matches before a final newline
    by_pattern = re.fullmatch(LEVEL_PATTERN.strip("^$"), value) is not None and value not in RESERVED
    assert by_code == by_schema == by_pattern, (value, level_problem(value))


# -- the fleet in every key ------------------------------------------------------------------------------------

def _drift(fleet: str, device: str, session: int = 4, seq: int = 0) -> bytes:
    return (f'{{"format_version": 4, "fleet": "{fleet}", "device": "{device}", "session": {session}, '
            f'"seq": {seq}}}').encode()


def test_two_fleets_devices_of_one_id_have_different_window_keys():
    a = window_key(*decode("edgeml/plant-a/pi-07/drift", _drift("plant-a", "pi-07")))
    b = window_key(*decode("edgeml/plant-b/pi-07/drift", _drift("plant-b", "pi-07")))
    assert a == ("plant-a", "pi-07", 4, 0) and b == ("plant-b", "pi-07", 4, 0) and a != b


def test_a_payload_naming_another_fleet_or_device_than_its_topic_is_refused():
    """The ACL vouches for the topic only: a device of plant-a claiming plant-b in its payload is refused."""
    with pytest.raises(ProtocolError, match="the payload says fleet 'plant-b' but was published as 'plant-a'"):
        decode("edgeml/plant-a/pi-07/drift", _drift("plant-b", "pi-07"))
    with pytest.raises(ProtocolError, match="the payload says device 'pi-08' but was published as 'pi-07'"):
        decode("edgeml/plant-a/pi-07/drift", _drift("plant-a", "pi-08"))
    with pytest.raises(ProtocolError, match="only drift windows are de-duplicated"):
        window_key(*decode("edgeml/plant-a/pi-07/birth", b'{"format_version": 4}'))
    with pytest.raises(ProtocolError, match="session '4' and seq 0 must be whole numbers"):
        window_key(*decode("edgeml/plant-a/pi-07/drift", b'{"format_version": 4, "session": "4", "seq": 0}'))


def test_no_two_devices_share_a_client_id():
    """With '-' as separator, plant + a-pi-07 and plant-a + pi-07 had one client id and took over each other."""
    a, b = DeviceTopics("plant", "a-pi-07"), DeviceTopics("plant-a", "pi-07")
    assert a.client_id == "edgeml:plant:a-pi-07" and b.client_id == "edgeml:plant-a:pi-07"
    assert a.client_id != b.client_id


def test_the_shortcut_for_valid_names_agrees_with_every_check():
    import random

    from edgeml_runtime.protocol.topics import explain_level

    rng = random.Random(7)
    alphabet = "aZ09._-/+#$ \x00\n\u00e9\u0430"
    names = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(20_000)]
    names += ["a" * n for n in (63, 64, 65)] + list(RESERVED) + ["Fleet", "pi-07", "pi-07\n"]
    for name in names:
        assert (level_problem(name) is None) == (explain_level(name) is None), name
        assert level_problem(name) == explain_level(name), name
