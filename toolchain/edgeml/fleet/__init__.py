"""The fleet: what the host makes for the devices of a fleet, and the controller that watches them.

:func:`~edgeml.fleet.credentials.write_credentials`, the broker's ACL and
password file from a list of devices (``edgeml fleet credentials``), needs
only the standard library and the runtime's protocol, so importing this
package stays light. The controller's store (:class:`~edgeml.fleet.store.Store`:
devices, windows, decisions, leases, the bundle registry) needs SQLAlchemy,
the ``fleet`` extra: it is imported from :mod:`edgeml.fleet.store` (or as
``edgeml.fleet.Store``, loaded on first use), never by importing this package.
"""

from .credentials import write_credentials

__all__ = ["Store", "write_credentials"]


def __getattr__(name: str):
    if name == "Store":  # the store needs the fleet extra (SQLAlchemy): loaded only when asked for
        from .store import Store

        return Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
