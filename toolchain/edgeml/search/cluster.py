"""Where the search's trials run: in this process (``local``) or concurrently on a cluster engine FLAML drives.

A backend is looked up by name in :data:`BACKENDS` (register a new one with
:func:`register_backend`, which refuses to overwrite). Each says what its
engine needs installed (an edgeml extra), how it reaches the cluster, and
what FLAML's ``AutoML.fit`` is given to run trials there:

``local``
    FLAML's sequential search in this process (the default).
``spark``
    FLAML's own Spark path (``use_spark=True``, trials through joblibspark):
    the search state, the training rows among it, is put in a Spark
    broadcast variable, which the engine ships once to each executor (not
    once per trial, and not through a task's closure). The cluster is
    ``address`` (a master URL such as ``spark://host:7077``, ``yarn``,
    ``local[4]``), else the ``MASTER`` environment variable, else the
    ``spark.master`` of the active session or ``spark-defaults.conf``, else
    ``local[*]``. Spark Connect (``SPARK_REMOTE``, ``sc://``) is refused:
    FLAML's Spark path needs the classic driver.
``ray``
    FLAML's own Ray path (``use_ray``, trials through ``ray.tune``), the
    search state put in Ray's object store once (``tune.with_parameters``).
    The cluster is ``address`` (``ray://head:10001``, ``head:6379``), else
    ``RAY_ADDRESS``, else a new local Ray of ``concurrent_trials`` CPUs.
    Install ``ray[tune]`` directly (the ``ray`` extra of edgeml): FLAML's
    own ``ray`` extra pins ``ray[tune]<2.5``, whose 2.4.0 breaks ``import
    flaml`` on Python 3.11 (see ``docs/cluster.md``).

Under a cluster backend the judge runs in other processes, so its record of
each trial travels back in the trial's logged metrics: FLAML writes them, in
its own iteration order, to its training log (``log_type="all"``, the one
per-trial record FLAML keeps), which :func:`read_records` reads back on the
driver for :meth:`edgeml.search.judge.TrialJudge.replay`.

>>> ClusterSettings("spark", address="local[2]").concurrent_trials
2
>>> ClusterSettings("dask")
Traceback (most recent call last):
...
edgeml.errors.SearchError: search backend 'dask' is unknown; use one of local, spark, ray
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgeml.errors import SearchError

#: The warning pyspark gives on import beside pandas 3 (FLAML imports it), hidden in a session's Python workers.
PYSPARK_PANDAS_WARNING = "ignore:PySpark does not yet fully support pandas:FutureWarning"
#: The key of a trial's logged metrics under which a cluster trial's record travels back to the driver.
RECORD_KEY = "edgeml_trial"


@dataclass(frozen=True)
class Backend:
    """A place to run trials: ``connect(settings)`` reaches the engine (raising :class:`SearchError` with the fix
    when it cannot) and returns what ``AutoML.fit`` is given beyond edgeml's usual arguments."""

    name: str
    connect: Callable[[ClusterSettings], dict]
    extra: str | None = None  #: the edgeml extra that installs the engine's client
    describe: str = ""


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add ``backend``; a name that is already registered raises ``ValueError`` (never overwritten)."""
    if backend.name in BACKENDS:
        raise ValueError(f"search backend {backend.name!r} is already registered")
    BACKENDS[backend.name] = backend
    return backend


@dataclass(frozen=True)
class ClusterSettings:
    """Where trials run (:data:`BACKENDS`), the cluster's address (None: the engine's own environment) and how
    many trials run at once."""

    backend: str = "local"
    address: str | None = None
    concurrent_trials: int = 2

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise SearchError(f"search backend {self.backend!r} is unknown; use one of {', '.join(BACKENDS)}")
        if isinstance(self.concurrent_trials, bool) or not isinstance(self.concurrent_trials, int) \
                or self.concurrent_trials < 1:
            raise SearchError(f"concurrent_trials = {self.concurrent_trials!r} is not allowed; give at least 1")

    @property
    def is_local(self) -> bool:
        return self.backend == "local"


@contextmanager
def cluster_fit(settings: ClusterSettings) -> Iterator[tuple[dict, Path | None]]:
    """What ``AutoML.fit`` needs to run the trials where ``settings`` say, and the training log it will write
    (None for ``local``); the log's folder is removed afterwards."""
    if settings.is_local:
        yield {}, None
        return
    kwargs = BACKENDS[settings.backend].connect(settings)
    with tempfile.TemporaryDirectory(prefix="edgeml-trials-") as folder:
        log = Path(folder) / "trials.jsonl"
        saved = os.environ.get("FLAML_MAX_CONCURRENT")
        # FLAML runs min(executors, concurrent) trials at once and counts no executor in local mode; its documented
        # override makes it exactly the number asked for.
        os.environ["FLAML_MAX_CONCURRENT"] = str(settings.concurrent_trials)
        try:
            yield {**kwargs, "n_concurrent_trials": settings.concurrent_trials, "hpo_method": "cfo",
                   "log_file_name": str(log), "log_type": "all"}, log
        finally:
            if saved is None:
                os.environ.pop("FLAML_MAX_CONCURRENT", None)
            else:
                os.environ["FLAML_MAX_CONCURRENT"] = saved


def read_records(log: Path) -> list[tuple[dict, float]]:
    """Each trial's record (its logged :data:`RECORD_KEY`) and FLAML's wall-clock time for it, from FLAML's
    training log, in FLAML's iteration order."""
    from flaml.automl.training_log import training_log_reader

    if not log.is_file():
        return []
    with training_log_reader(str(log)) as reader:
        return [(r.logged_metric[RECORD_KEY], float(r.wall_clock_time)) for r in reader.records()
                if isinstance(r.logged_metric, dict) and RECORD_KEY in r.logged_metric]


def _missing(module: str, backend: str, extra: str) -> SearchError:
    return SearchError(f"the {backend} search backend needs {module}, which is not installed; install it with "
                       f"pip install 'edgeml[{extra}]' (or set backend = \"local\" in edgeml.toml's [search] table)")


def _connect_spark(settings: ClusterSettings) -> dict:
    """Start or join the Spark session (see the module docstring for the address), quiet, its Python workers on
    this interpreter in local mode; FLAML's Spark arguments."""
    address = settings.address or os.environ.get("MASTER")
    remote = f"SPARK_REMOTE={os.environ['SPARK_REMOTE']}" if os.environ.get("SPARK_REMOTE") else address
    if (remote or "").startswith(("sc://", "SPARK_REMOTE=")):
        raise SearchError(f"Spark Connect ({remote}) cannot run "
                          "the search: FLAML's Spark path needs a classic driver; give a master URL (spark://host:"
                          "7077, yarn, local[4]) as address in edgeml.toml's [search] table or --cluster-address, "
                          "and unset SPARK_REMOTE")
    for module in ("pyspark", "joblibspark"):
        try:
            __import__(module)
        except ImportError:
            raise _missing(module, "spark", "spark") from None
    return {"use_spark": True, "n_jobs": spark_session(address)}


def spark_session(address: str | None) -> int:
    """The active Spark session, else a new one on ``address``; the cores each trial may use (``spark.task.cpus``).

    A new session's driver logs errors only (``spark-log4j2.properties`` beside this module), shows no progress
    bars, and its Python workers hide pyspark's pandas-3 import warning; in local mode they run this Python.
    """
    from pyspark.sql import SparkSession

    logging.getLogger("py4j").setLevel(logging.ERROR)
    session = SparkSession.getActiveSession()
    if session is None:
        quiet = Path(__file__).with_name("spark-log4j2.properties")
        builder = (SparkSession.builder.appName("edgeml-search")
                   .config("spark.ui.showConsoleProgress", "false")
                   .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{quiet}")
                   .config("spark.executorEnv.PYTHONWARNINGS", PYSPARK_PANDAS_WARNING))
        if address:
            builder = builder.master(address)
        if (address or "local").startswith("local"):  # the workers are this machine's: run them on this Python
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        try:
            session = builder.getOrCreate()
        except Exception as exc:  # py4j and the JVM raise their own kinds
            raise SearchError(f"Spark could not start at {address or 'its default master'}: {exc}; check the "
                              "address (--cluster-address, [search] address or MASTER) and that java is on PATH "
                              "(JAVA_HOME)") from exc
        session.sparkContext.setLogLevel("ERROR")
    return int(session.sparkContext.getConf().get("spark.task.cpus", "1"))


def _connect_ray(settings: ClusterSettings) -> dict:
    """Join the Ray cluster at ``address`` (else ``RAY_ADDRESS``, else a new local Ray), quiet; FLAML's Ray
    arguments (``use_ray``: trials through ``ray.tune``, the search state put in Ray's object store)."""
    try:
        import ray
        import ray.tune  # noqa: F401  (ray[tune], not ray alone)
    except ImportError:
        raise _missing("ray[tune]", "ray", "ray") from None
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's experiment table and progress lines: not at verbose 0
    if not ray.is_initialized():
        address = settings.address or os.environ.get("RAY_ADDRESS")
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     num_cpus=None if address else settings.concurrent_trials)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SearchError(f"Ray could not start or join {address or 'a local cluster'}: {exc}; check the "
                              "address (--cluster-address, [search] address or RAY_ADDRESS)") from exc
    return {"use_ray": True, "n_jobs": 1}


register_backend(Backend("local", lambda settings: {}, describe="FLAML's sequential search in this process"))
register_backend(Backend("spark", _connect_spark, extra="spark",
                         describe="FLAML's use_spark: trials through joblibspark on a Spark cluster"))
register_backend(Backend("ray", _connect_ray, extra="ray",
                         describe="FLAML's use_ray: trials through Ray Tune on a Ray cluster"))

__all__ = ["BACKENDS", "RECORD_KEY", "Backend", "ClusterSettings", "cluster_fit", "read_records",
           "register_backend", "spark_session"]
