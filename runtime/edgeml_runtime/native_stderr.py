"""Keep a native library's start-up chatter off the terminal, and nothing else.

LiteRT's C++ core writes ``INFO: Created TensorFlow Lite XNNPACK delegate for
CPU.`` to the process's standard error (file descriptor 2) the first time an
interpreter allocates its tensors: past ``sys.stderr`` and :mod:`logging`,
and no environment variable of LiteRT's turns it off. A user running
``edgeml build`` or ``edgeml-runtime score`` should see progress and results,
not that. :func:`without_lines` points descriptor 2 at a temporary file while
the native call runs, then writes back everything it caught except the lines
it was told to drop: what another thread writes meanwhile comes a few
milliseconds late, and is never lost.

Example:

>>> import os
>>> with without_lines("chatter"):
...     _ = os.write(2, b"native chatter\\n")
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["without_lines"]

#: What LiteRT says when it applies its default CPU delegate.
LITERT_CHATTER = ("Created TensorFlow Lite XNNPACK delegate",)


@contextlib.contextmanager
def without_lines(*fragments: str) -> Iterator[None]:
    """While the block runs, file descriptor 2 goes to a temporary file; afterwards its lines come back, but
    those holding one of ``fragments``. Without a descriptor 2 to save (a closed one), the block just runs."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as caught:
        _flush()
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            _flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().splitlines(keepends=True)
                    if not any(f.encode() in line for f in fragments)]
            if kept:
                os.write(2, b"".join(kept))


def _flush() -> None:
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()
