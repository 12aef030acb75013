"""``edgeml-runtime serve``: online inference over HTTP, counted into drift windows as ``run`` counts a stream.

The parts, each in its module: :mod:`.http` (the HTTP/1.1 server on
asyncio, its limits, TLS and graceful shutdown), :mod:`.app` (the routes:
Open Inference Protocol v2, ``/predict``, ``/metrics``), :mod:`.oip`
(tensors to records and predictions to tensors), :mod:`.metrics` (the
Prometheus text), :mod:`.service` (the served bundle, its drift windows and
telemetry, the swap hook), :mod:`.options` (the ``[serve]`` keys, imported by
the settings, which is why nothing is imported here) and :mod:`.server`
(all of it on one event loop).
"""
