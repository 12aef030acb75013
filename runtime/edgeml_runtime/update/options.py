"""The ``update_*`` settings of ``run`` and ``serve``: where the update agent keeps its state, whom it trusts.

Updates are on when ``update_root_key`` is given (the root public key the
device was provisioned with, a PEM file); then the agent hears the
controller's release announcements over the device's MQTT connection and
fetches bundles from ``update_server`` (the controller's HTTP server), with
the bearer token in ``update_token_file`` when the server is not on this
machine. ``update_dir`` holds the trust state and the bundle slots
(default: ``$XDG_STATE_HOME/edgeml/<fleet>/<device>.update``, beside the
outbox). ``update_no_clock`` says the board has no real-time clock:
then a release's expiry is judged against the newest signed time the device
has seen, never against a clock that starts in 1970 at every boot.
``update_max_rollbacks`` caps the automatic rollbacks: past it, releases
are refused until one is installed by hand (``edgeml-runtime update``).

>>> UpdateOptions(root_key="/etc/edgeml/root.pub").max_rollbacks
3
>>> UpdateOptions(root_key="/etc/edgeml/root.pub", server="ftp://controller")
Traceback (most recent call last):
...
edgeml_runtime.errors.SettingsError: server = 'ftp://controller': must be an http:// or https:// URL; give the \
controller's HTTP server, e.g. http://controller:8080
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SettingsError, check_count


@dataclass(frozen=True)
class UpdateOptions:
    """The update agent's settings; see the module docstring."""

    root_key: str
    folder: str | None = None
    server: str | None = None
    token_file: str | None = None
    no_clock: bool = False
    max_rollbacks: int = 3

    def __post_init__(self):
        if not self.root_key:
            raise SettingsError(key="root_key", value=self.root_key, allowed="is needed for updates",
                                fix="give the root public key the device was provisioned with (root.pub)")
        if self.server is not None and not self.server.startswith(("http://", "https://")):
            raise SettingsError(key="server", value=self.server, allowed="must be an http:// or https:// URL",
                                fix="give the controller's HTTP server, e.g. http://controller:8080")
        check_count("max_rollbacks", self.max_rollbacks, 0, "rollbacks")

    def folder_for(self, fleet: str, device: str) -> Path:
        """``update_dir``, or the default beside the outbox."""
        if self.folder:
            return Path(self.folder)
        state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "edgeml"
        return state / fleet / f"{device}.update"

    def token(self) -> str | None:
        """The bearer token read from ``token_file`` (None without one)."""
        if not self.token_file:
            return None
        try:
            return Path(self.token_file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise SettingsError(key="token_file", value=self.token_file, allowed=f"cannot be read ({exc.strerror})",
                                fix="give a file holding the controller's token") from None
