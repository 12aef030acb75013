"""MLflow tracking of the registry: every new version an MLflow run and a model version, ``champion`` an MLflow alias.

The fleet store stays the registry of record (:mod:`.versions`); MLflow is a
second view of it for teams that already look there. A :class:`Tracking`
names the tracking store (a ``sqlite:///`` database, a ``file:`` folder, or
a tracking server's ``http(s)://`` URL) and is passed as ``tracking=`` to
:func:`.versions.register`, :func:`~.versions.add_version`,
:func:`~.versions.promote`, :func:`~.versions.reject` and
:func:`~.versions.rollback`:

* a new version becomes a run in the experiment (``edgeml`` by default) named
  ``v<version>``, with the params ``fleet``, ``cohort``, ``bundle_sha256``,
  ``bundle`` (name and version), ``action``, ``trigger`` and
  ``registry_version``; the scores of its lineage as metrics (every number
  under ``lineage["scores"]``, and every number whose key ends in ``score``,
  named by its path: ``scores.challenger``); the tags ``edgeml.parent`` (the
  parent bundle's identity), ``edgeml.status``; and the bundle's ``.tar.gz``
  as the artifact ``bundle/<name>.tar.gz``;
* and a model version of the registered model of its fleet and cohort
  (:meth:`Tracking.model_name`: ``edgeml-plant-a``, ``edgeml-plant-a-line-2``),
  whose source is the run's ``bundle`` artifact folder;
* a promotion (and a rollback, which promotes a new version) points the
  registered model's alias ``champion`` at it; a rejection tags it
  ``edgeml.status=rejected``.

The run and model version are kept in the version's lineage (``mlflow``), so
a version is logged once, and a version made before tracking was turned on
is logged when it is next promoted or rejected.

The tracking URI comes from the caller (``--tracking-uri``) or
``$MLFLOW_TRACKING_URI``; :meth:`Tracking.configured` is None when neither
is set, and then nothing needs MLflow. It needs the ``tracking`` extra
(``mlflow-skinny`` and ``alembic``, the SQLite store's migrations; the full
``mlflow`` package brings a server and UI and pins an older pyarrow):

>>> Tracking.configured(None, environ={}) is None
True
>>> Tracking.configured("sqlite:////tmp/mlflow.db").artifact_root()
'file:///tmp/mlartifacts'
>>> Tracking.model_name("plant-a", ""), Tracking.model_name("plant-a", "line 2")
('edgeml-plant-a', 'edgeml-plant-a-line_2')
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from edgeml.errors import FleetError

#: The MLflow alias that follows the registry's ``champion``.
ALIAS = "champion"
INSTALL = "pip install 'edgeml[tracking]'"


@dataclass(frozen=True)
class Tracking:
    """An MLflow tracking store: ``uri``, the model registry's (``registry_uri``, the same by default), the
    experiment runs go to, and where their artifacts are kept (``artifact_location``; beside a SQLite
    database by default, else MLflow's default)."""

    uri: str
    registry_uri: str | None = None
    experiment: str = "edgeml"
    artifact_location: str | None = None

    @classmethod
    def configured(cls, uri: str | None = None, *, environ: Mapping[str, str] = os.environ,
                   **settings) -> Tracking | None:
        """A Tracking for ``uri``, else for ``$MLFLOW_TRACKING_URI``; None when neither is set."""
        uri = uri or environ.get("MLFLOW_TRACKING_URI")
        return cls(uri, **settings) if uri else None

    @staticmethod
    def model_name(fleet: str, cohort: str = "") -> str:
        """The registered model of ``fleet`` and ``cohort``: ``edgeml-<fleet>[-<cohort>]``, other characters than
        letters, digits, ``.``, ``_`` and ``-`` made ``_``."""
        return re.sub(r"[^\w.-]", "_", "-".join(["edgeml", fleet, *([cohort] if cohort else [])]))

    def artifact_root(self) -> str | None:
        if self.artifact_location:
            return self.artifact_location
        if self.uri.startswith("sqlite:///"):
            database = Path(self.uri[len("sqlite:///"):])
            return (database.parent / "mlartifacts").as_uri() if database.is_absolute() else None
        return None

    @cached_property
    def client(self):
        try:
            from mlflow.tracking import MlflowClient
        except ModuleNotFoundError as exc:
            raise FleetError(f"MLflow tracking to {self.uri} needs the Python module {exc.name}; install the "
                             f"tracking extra: {INSTALL} (or unset MLFLOW_TRACKING_URI)") from None
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.registry_uri or self.uri)

    def log_version(self, version, archive: str | os.PathLike) -> dict:
        """Log ``version`` (a :class:`.versions.ModelVersion`) as a run with ``archive`` (its bundle's ``.tar.gz``)
        and as a model version; the ids to keep in its lineage."""
        with self._failing("log version", version.version):
            client = self.client
            run = client.create_run(self._experiment_id(), run_name=f"v{version.version}", tags=_tags(version))
            run_id = run.info.run_id
            for key, value in _params(version).items():
                client.log_param(run_id, key, value)
            for key, value in scores(version.lineage).items():
                client.log_metric(run_id, key, value)
            client.log_artifact(run_id, os.fspath(archive), artifact_path="bundle")
            client.set_terminated(run_id)
            name = self._registered_model(version.fleet, version.cohort)
            made = client.create_model_version(name, source=f"{run.info.artifact_uri}/bundle", run_id=run_id,
                                               tags={"edgeml.version": str(version.version),
                                                     "edgeml.bundle_sha256": version.bundle_sha256})
        return {"uri": self.uri, "experiment_id": run.info.experiment_id, "run_id": run_id, "model": name,
                "model_version": str(made.version)}

    def champion(self, version) -> None:
        """Point the alias ``champion`` of the version's registered model at its model version."""
        logged = version.lineage["mlflow"]
        with self._failing("move the alias champion to version", version.version):
            self.client.set_registered_model_alias(logged["model"], ALIAS, logged["model_version"])
            self.client.set_model_version_tag(logged["model"], logged["model_version"], "edgeml.status",
                                              version.status)

    def status(self, version) -> None:
        """Tag the version's model version with its status (``rejected``)."""
        logged = version.lineage["mlflow"]
        with self._failing("tag version", version.version):
            self.client.set_model_version_tag(logged["model"], logged["model_version"], "edgeml.status",
                                              version.status)

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(self.experiment, artifact_location=self.artifact_root())

    def _registered_model(self, fleet: str, cohort: str) -> str:
        from mlflow.exceptions import MlflowException

        name = self.model_name(fleet, cohort)
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, tags={"edgeml.fleet": fleet, "edgeml.cohort": cohort})
        return name

    def _failing(self, what: str, number: int):
        return _Failing(f"MLflow at {self.uri}: could not {what} {number}")


class _Failing:
    """An MLflow error as a FleetError naming the tracking store and what was being done."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, FleetError):
            return False
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException | OSError):
            raise FleetError(f"{self.what}: {exc}; check the tracking URI, or unset MLFLOW_TRACKING_URI") from exc
        return False


def scores(lineage: Mapping) -> dict[str, float]:
    """The numbers of a lineage that are scores: all under ``scores``, and those whose key ends in ``score``.

    >>> scores({"scores": {"challenger": 0.91, "champion": {"f1": 0.88}}, "judged": {"margin_score": 0.01},
    ...         "rows": 400, "data": {"sha256": "ab"}})
    {'scores.challenger': 0.91, 'scores.champion.f1': 0.88, 'judged.margin_score': 0.01}
    """
    out: dict[str, float] = {}

    def walk(value, path: tuple[str, ...], wanted: bool) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(inner, (*path, str(key)), wanted or path + (str(key),) == ("scores",))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if wanted or path[-1].endswith("score"):
                out[".".join(path)] = float(value)

    walk(lineage, (), False)
    return out


def _params(version) -> dict[str, str]:
    trigger = version.lineage.get("trigger")
    return {"fleet": version.fleet, "cohort": version.cohort, "bundle_sha256": version.bundle_sha256,
            "bundle": f"{version.name} {version.bundle_version}", "action": version.action,
            "trigger": str(trigger.get("kind", trigger) if isinstance(trigger, Mapping) else trigger or ""),
            "registry_version": str(version.version)}


def _tags(version) -> dict[str, str]:
    return {"edgeml.parent": version.parent or "", "edgeml.status": version.status,
            "edgeml.version": str(version.version)}


__all__ = ["ALIAS", "Tracking", "scores"]
