"""Every test here runs on a REAL FreeSWITCH: the binary ``FREESWITCH_BIN`` names (``just test``
sets it from ``just freeswitch``). Without one a test is skipped, except under ``CI=true``, where
it fails: CI must never pass on the emulator alone (issue 13)."""

import asyncio
import os
import sys
import threading

import pytest


def switch_binary() -> str | None:
    """``FREESWITCH_BIN`` if it names an executable, else None."""
    path = os.environ.get("FREESWITCH_BIN")
    return path if path and os.access(path, os.X_OK) else None


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.freeswitch)


def pytest_runtest_setup(item):  # type: ignore[no-untyped-def]
    if item.get_closest_marker("freeswitch") is None or switch_binary():
        return
    why = f"needs FREESWITCH_BIN naming a FreeSWITCH with mod_audio_fork (got {os.environ.get('FREESWITCH_BIN')!r}); run `just freeswitch`"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {why}", pytrace=False)
    pytest.skip(why)


def _awaiting(coro: object, depth: int = 30) -> list[str]:
    """Where a suspended coroutine waits: its frame, the frame of what it awaits, and so on
    (a task's own stack shows only its outermost frame)."""
    out = []
    while coro is not None and depth > 0:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            out.append(repr(coro)[:200])
            break
        out.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        depth -= 1
    return out


@pytest.fixture(autouse=True)
async def dump_tasks_before_the_timeout(request):  # type: ignore[no-untyped-def]
    """Ten seconds before pytest-timeout fails a test, print every asyncio task's stack (pytest-
    timeout prints the threads', and a test stuck on an event loop shows only ``select`` there).
    A CI run once hung in one of these tests after the caller's hang-up, with nothing to say where."""
    marker = request.node.get_closest_marker("timeout")
    timeout = float(marker.args[0]) if marker and marker.args else float(request.config.getini("timeout") or 0)
    if timeout <= 20:
        yield
        return
    loop = asyncio.get_running_loop()

    def dump() -> None:
        print(f"\n--- asyncio tasks {timeout - 10:.0f} s into {request.node.nodeid} ---", file=sys.stderr)
        for task in asyncio.all_tasks(loop):
            print(f"{task.get_name()}:", file=sys.stderr)
            for where in _awaiting(task.get_coro()):
                print(f"    {where}", file=sys.stderr)

    timer = threading.Timer(timeout - 10, lambda: loop.call_soon_threadsafe(dump))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
