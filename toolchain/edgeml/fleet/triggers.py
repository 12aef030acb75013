"""The registry of retrain triggers: what runs when a fleet should be retrained, keyed by the name fleet.toml gives.

A trigger is a :class:`Trigger`: a name, its options declared as data
(:class:`Option`: the keys it reads from ``[trigger]``, their types, which are
required) and ``run(job, progress) -> dict``. :mod:`.retrain` runs it in a
child process (so a timeout can kill it) with a :class:`Job` (the retrain, the
evidence, the options, the ``[retrain]`` and ``[promotion]`` tables) and
records what it returns: ``{"status": "done" | "promoted" | "rejected" |
"failed", "error": str | None, ...}``. Each trigger registers at the bottom of
its own definition; :func:`register_trigger` refuses to replace one.

* ``build``: a challenger built in the child by
  :func:`edgeml.fleet.challenger.retrain_by_build` from ``[retrain]``, compared
  with the champion under ``[promotion]``, promoted or rejected;
* ``command``: the user's program (``command = ["/usr/local/bin/retrain"]``),
  the evidence as JSON on stdin; exit 0 is done (a last stdout line of JSON
  with ``bundle`` is reported as the bundle it made), else failed with the
  exit code and the tail of stderr;
* ``webhook``: a POST of the evidence to ``url``, signed as Standard Webhooks
  specify with the ``whsec_`` secret in ``secret_file``; 2xx is done.

>>> sorted(TRIGGERS)
['build', 'command', 'webhook']
>>> check_options("command", {"command": "retrain.sh"}, "fleet.toml")
Traceback (most recent call last):
...
edgeml.errors.FleetError: fleet.toml: [trigger] command = 'retrain.sh': must be a list of texts (the program and its \
arguments), e.g. command = ["/usr/local/bin/retrain", "--fast"]
>>> check_options("webhook", {"uri": "http://h"}, "fleet.toml")
Traceback (most recent call last):
...
edgeml.errors.FleetError: fleet.toml: [trigger] uri is not an option of the webhook trigger; its options are url, \
secret_file, headers
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgeml.errors import EdgeMLError, FleetError

#: Characters of a program's stdout and stderr (or a webhook's response) kept in the record.
TAIL = 2000
#: Decision kinds that may fire a trigger (``on`` of ``[trigger]``).
DECISION_KINDS = ("drift", "performance")


@dataclass(frozen=True)
class Option:
    """One key a trigger reads from ``[trigger]``: its type, whether required, and an example for the fix."""

    name: str
    kind: type
    required: bool = False
    example: str = ""
    check: Callable[[object], str | None] | None = None  #: a problem with the value, or None


@dataclass(frozen=True)
class Job:
    """What a trigger's ``run`` gets, in the child process: plain values only (it is pickled to get there)."""

    retrain: dict  #: the row: id, fleet, cohort, trigger, reason, attempt, decision_id, requested
    evidence: dict  #: the document sent to commands and webhooks (:func:`.retrain.evidence_document`)
    options: dict = field(default_factory=dict)  #: the trigger's keys of [trigger]
    store: str = ""  #: the store's URL (unmasked: the child opens its own Store)
    build: dict = field(default_factory=dict)  #: [retrain]
    promotion: dict = field(default_factory=dict)  #: [promotion]
    source: str = "fleet.toml"
    workdir: str = ""


@dataclass(frozen=True)
class Trigger:
    """A way to retrain: ``run(job, progress) -> dict`` (its ``status`` and ``error``), its options as data."""

    name: str
    run: Callable[[Job, Callable[[str], None]], dict]
    options: tuple[Option, ...] = ()
    help: str = ""


TRIGGERS: dict[str, Trigger] = {}


def register_trigger(trigger: Trigger) -> Trigger:
    """Add ``trigger``; a name already registered raises ``ValueError`` (never overwritten)."""
    if not callable(trigger.run):
        raise TypeError(f"trigger {trigger.name!r}: run must be callable as run(job, progress)")
    if trigger.name in TRIGGERS:
        raise ValueError(f"trigger {trigger.name!r} is already registered")
    TRIGGERS[trigger.name] = trigger
    return trigger


def trigger(name: str, source: str = "fleet.toml") -> Trigger:
    """The registered trigger ``name``; FleetError listing the registered ones."""
    if name not in TRIGGERS:
        raise FleetError(f"{source}: [trigger] name = {name!r} is not a registered trigger; use one of "
                         f"{', '.join(TRIGGERS)}")
    return TRIGGERS[name]


def check_options(name: str, options: Mapping, source: str) -> dict:
    """``options`` (the trigger's keys of ``[trigger]``) checked against its declared :class:`Option` s."""
    chosen = trigger(name, source)
    known = {o.name: o for o in chosen.options}
    for key in options:
        if key not in known:
            listed = ", ".join(known) or "none"
            raise FleetError(f"{source}: [trigger] {key} is not an option of the {name} trigger; its options are "
                             f"{listed}")
    for o in chosen.options:
        if o.name not in options:
            if o.required:
                raise FleetError(f"{source}: [trigger] {o.name} is missing: the {name} trigger needs it; e.g. "
                                 f"{o.example}")
            continue
        value = options[o.name]
        problem = None if isinstance(value, o.kind) and not isinstance(value, bool) else "wrong type"
        problem = problem or (o.check(value) if o.check else None)
        if problem:
            raise FleetError(f"{source}: [trigger] {o.name} = {value!r}: must be {_WHAT[o.kind]}"
                             f"{'' if problem == 'wrong type' else ' ' + problem}, e.g. {o.example}")
    return dict(options)


_WHAT = {list: "a list of texts (the program and its arguments)", str: "a text", dict: "a table of texts"}


def _tail(text: str) -> str:
    return text[-TAIL:]


def run_in_child(run, job: Job, send) -> None:
    """The trigger in the child process :mod:`.retrain` spawns (here, for this module imports light): in a
    process group of its own, so that a timeout kills what it started too; its progress and outcome sent."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    _pdeathsig()
    try:
        outcome = run(job, lambda text: send.send(("progress", str(text))))
    except EdgeMLError as exc:
        outcome = {"status": "failed", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a trigger's bug is recorded, not a crashed controller
        outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc()[-2000:]}
    send.send(("result", outcome))
    send.close()


# -- build: a challenger against the champion --------------------------------------------------------------------

def run_build(job: Job, progress: Callable[[str], None]) -> dict:
    """A challenger built from [retrain] and compared with the champion: :func:`.challenger.retrain_by_build`."""
    try:
        from . import challenger
    except ImportError as exc:
        return {"status": "failed", "error": f"the build trigger needs edgeml.fleet.challenger ({exc})"}
    r = job.retrain
    lineage = {"trigger": {"name": "build", "reason": r["reason"], "retrain": r["id"], "attempt": r["attempt"]},
               "decision": {"id": r.get("decision_id"), "evidence": job.evidence.get("decisions", [])}}
    promotion = challenger.Promotion.from_table(job.promotion, job.source)
    result = challenger.retrain_by_build(job.store, fleet=r["fleet"], cohort=r["cohort"], build=job.build,
                                         promotion=promotion, lineage=lineage, source=job.source,
                                         workdir=job.workdir, progress=progress)
    return {**result, "error": None}


register_trigger(Trigger("build", run_build, (), "build a challenger from [retrain]; promote it if it beats the "
                                                 "champion under [promotion]"))


# -- command: the user's program ----------------------------------------------------------------------------------

def run_command(job: Job, progress: Callable[[str], None]) -> dict:
    """Run ``command`` with the evidence as JSON on stdin, in ``workdir``; done on exit 0."""
    argv = [str(a) for a in job.options["command"]]
    progress(f"running {' '.join(argv)}")
    env = {**os.environ, "EDGEML_RETRAIN_ID": str(job.retrain["id"]), "EDGEML_RETRAIN_FLEET": job.retrain["fleet"]}
    try:
        done = subprocess.run(argv, input=json.dumps(job.evidence).encode(), capture_output=True,
                              cwd=job.workdir or None, env=env, preexec_fn=_die_with_parent)
    except OSError as exc:
        return {"status": "failed", "error": f"cannot run {argv[0]}: {exc.strerror or exc}; check [trigger] "
                                              "command", "command": argv}
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    result = {"command": argv, "exit_code": done.returncode, "stdout": _tail(out), "stderr": _tail(err)}
    if done.returncode != 0:
        why = f"killed by signal {-done.returncode}" if done.returncode < 0 else f"exited with {done.returncode}"
        last = err.strip().splitlines()[-1] if err.strip() else "(nothing on stderr)"
        return {**result, "status": "failed", "error": f"{argv[0]} {why}: {last[:300]}"}
    lines = out.strip().splitlines()
    try:
        said = json.loads(lines[-1]) if lines else None
    except ValueError:
        said = None
    if isinstance(said, dict) and isinstance(said.get("bundle"), str):
        result["bundle"] = said["bundle"]  # a bundle the program made: the lead may compare it as a challenger
    return {**result, "status": "done", "error": None}


def _die_with_parent() -> None:
    """In the program's process: be killed when the trigger's child process dies (Linux), so a timeout's kill
    or a killed controller leaves no retrain running unwatched."""
    _pdeathsig()


def _pdeathsig() -> None:
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the process group kill at the timeout still applies


def _argv_problem(value) -> str | None:
    if not value or not all(isinstance(a, str) and a for a in value):
        return "(not empty, each a non-empty text)"
    return None


register_trigger(Trigger("command", run_command, (
    Option("command", list, True, 'command = ["/usr/local/bin/retrain", "--fast"]', _argv_problem),
), "run the user's program with the evidence as JSON on stdin"))


# -- webhook: a signed POST ---------------------------------------------------------------------------------------

def webhook_secret(path: str | os.PathLike) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret kept in the file at ``path``; FleetError naming the file."""
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise FleetError(f"[trigger] secret_file = {str(path)!r}: cannot read it ({exc.strerror}); give the path "
                         "of a file holding whsec_<base64>") from None
    try:
        if not text.startswith("whsec_"):
            raise ValueError
        return base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except ValueError:
        raise FleetError(f"[trigger] secret_file = {str(path)!r}: does not hold a secret of the form "
                         "whsec_<base64> (Standard Webhooks)") from None


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,`` and the base64 HMAC-SHA256 of ``id.timestamp.body``.

    The Standard Webhooks libraries' own test vector (secret ``whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw``):

    >>> key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    >>> sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
    """
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def run_webhook(job: Job, progress: Callable[[str], None]) -> dict:
    """POST the evidence to ``url``, signed; done on a 2xx answer."""
    import urllib.error
    import urllib.request

    url = job.options["url"]
    key = webhook_secret(job.options["secret_file"])
    body = json.dumps(job.evidence, separators=(",", ":")).encode()
    # One id per retrain request, the same for its retries: the receiver de-duplicates by it, as the spec says.
    message_id = f"msg_edgeml_{job.retrain['fleet']}_{job.evidence['retrain']['request']}"
    timestamp = int(time.time())
    headers = {**job.options.get("headers", {}), "content-type": "application/json", "webhook-id": message_id,
               "webhook-timestamp": str(timestamp), "webhook-signature": sign(key, message_id, timestamp, body)}
    progress(f"POST {url}")
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            status, text = answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"status": "failed", "error": f"POST {url} failed: {reason}", "url": url, "webhook_id": message_id}
    result = {"url": url, "webhook_id": message_id, "http_status": status, "body": _tail(text)}
    if not 200 <= status < 300:
        return {**result, "status": "failed", "error": f"POST {url} answered {status}: {text.strip()[:300]}"}
    return {**result, "status": "done", "error": None}


def _url_problem(value) -> str | None:
    return None if value.startswith(("http://", "https://")) else "(an http:// or https:// URL)"


def _file_problem(value) -> str | None:
    return None if Path(value).is_file() else "(an existing file holding whsec_<base64>, never the secret itself)"


def _headers_problem(value) -> str | None:
    return None if all(isinstance(v, str) for v in value.values()) else "(each value a text)"


register_trigger(Trigger("webhook", run_webhook, (
    Option("url", str, True, 'url = "https://ci.plant.local/hooks/retrain"', _url_problem),
    Option("secret_file", str, True, 'secret_file = "/etc/edgeml/webhook.secret"', _file_problem),
    Option("headers", dict, False, 'headers = {authorization = "Bearer ..."}', _headers_problem),
), "POST the evidence, signed as Standard Webhooks specify"))


__all__ = ["DECISION_KINDS", "TRIGGERS", "Job", "Option", "Trigger", "check_options", "register_trigger",
           "run_in_child", "sign", "trigger", "webhook_secret"]
