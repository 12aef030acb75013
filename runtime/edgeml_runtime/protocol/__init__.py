"""The contract between devices and the fleet controller: topics, envelopes, identity, schemas, the verdict.

Everything a consumer of device messages needs, and nothing more: the device
package builds its messages with it, and ``edgeml.fleet`` will read them with
it. The window verdict is recomputed by :func:`judge_window` from counts.
"""

from .envelopes import BIRTH_KEYS, ENVELOPE_KEYS, FORMAT_VERSION, decode, describe_model
from .identity import bundle_sha256, canonical_json
from .schemas import examples, schema
from .topics import KINDS, DeviceTopics, Topic, parse_topic, subscription
from .verdict import add_counts, judge_window, status

__all__ = [
    "BIRTH_KEYS", "ENVELOPE_KEYS", "FORMAT_VERSION", "KINDS", "DeviceTopics", "Topic", "add_counts",
    "bundle_sha256", "canonical_json", "decode", "describe_model", "examples", "judge_window", "parse_topic",
    "schema", "status", "subscription",
]
