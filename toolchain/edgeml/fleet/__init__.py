"""The fleet: what the host makes for the devices of a fleet and (later) the controller that watches them.

Today: :func:`~edgeml.fleet.credentials.write_credentials`, the broker's ACL and
password file from a list of devices (``edgeml fleet credentials``). It needs
only the standard library and the runtime's protocol, so importing this
package stays light; the controller will come with an extra of its own.
"""

from .credentials import write_credentials

__all__ = ["write_credentials"]
