"""Waits of a cache that closes before its first list: they end (False), they never hang."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

import nbdb
from nbdb.models import LogicalSwitch
from nbdb.testing.servers import start_server

pytestmark = pytest.mark.timeout(120)


def _bounded(call: Callable[[], object], seconds: float = 10.0) -> list[object]:
    """Run ``call`` on a daemon thread; what it returned, or [] if it still runs after ``seconds`` (a hang)."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    return out


@pytest.mark.parametrize("kind", ["redis", "etcd"])
def test_wait_synced_of_a_cache_closed_before_its_first_list_is_false(kind: str) -> None:
    # A controller that starts while its server is down, and is shut down: wait_synced() without a
    # timeout (as a controller's start-up calls it, on another thread) waited for ever after close().
    with start_server(kind) as server:
        db = nbdb.connect(server.url)
    try:  # the server is gone: the first list never loads
        cache = db.cache(LogicalSwitch, on_error=lambda exc: None)
        waiting = threading.Thread(target=cache.wait_synced, daemon=True)
        waiting.start()
        queue = cache.queue()
        controller = nbdb.run_controller(cache, lambda key, obj: None, LogicalSwitch)
        assert not cache.wait_synced(0)
        cache.close()
        waiting.join(10)
        assert not waiting.is_alive(), "a wait that started before close() ends with it"
        assert _bounded(lambda: cache.wait_synced(None)) == [False]
        assert _bounded(lambda: queue.wait_synced(None)) == [False]
        assert _bounded(lambda: controller.wait_idle(None)) == [False]
        assert controller.close(10)
    finally:
        db.close()
