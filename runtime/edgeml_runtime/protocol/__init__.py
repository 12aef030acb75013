"""The contract between devices and the fleet controller: topics, envelopes, identity, schemas, the verdict.

Everything a consumer of device messages needs, and nothing more: the device
package builds its messages with it, and ``edgeml.fleet`` reads them with
it. The window verdict is recomputed by :func:`judge_window` from counts, with
the :class:`VerdictRule` a device states in its birth message; a window's
performance counts add up with :func:`add_performance`.
"""

from . import updates
from .envelopes import (
    BIRTH_KEYS,
    ENVELOPE_KEYS,
    FORMAT_VERSION,
    MODEL_KEYS,
    READ_VERSIONS,
    WINDOW_KEYS,
    decode,
    describe_model,
    describe_window,
    window_key,
)
from .identity import bundle_sha256, canonical_json
from .performance import PERFORMANCE_KINDS, add_performance, check_performance
from .schemas import examples, schema
from .status import DECISION_KINDS, status_payload, status_topic
from .topics import KINDS, DeviceTopics, Topic, parse_topic, subscription
from .verdict import VerdictRule, add_counts, judge_window

__all__ = [
    "BIRTH_KEYS", "DECISION_KINDS", "ENVELOPE_KEYS", "FORMAT_VERSION", "KINDS", "MODEL_KEYS", "PERFORMANCE_KINDS",
    "READ_VERSIONS", "WINDOW_KEYS", "DeviceTopics", "Topic", "VerdictRule", "add_counts", "add_performance",
    "bundle_sha256", "check_performance", "canonical_json", "decode",
    "describe_model", "describe_window", "examples", "judge_window", "parse_topic", "schema", "status_payload",
    "status_topic", "subscription", "updates", "window_key",
]
