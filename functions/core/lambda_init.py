"""Lambda's init phase: importing a function's module builds its whole app once.

While FastAPI, pydantic and the routes create their many long-lived objects, Python's
cyclic collector runs again and again over the growing heap, finding nothing to free
(measured here: 10-15 ms of a 300 ms import). The entry modules build their app inside
`init_phase()`: the collector is paused, then resumed with everything built so far frozen
(`gc.freeze`), so later collections during requests skip those objects too. Only the
entry modules use it; nothing else in the process changes.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def init_phase() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.enable()
