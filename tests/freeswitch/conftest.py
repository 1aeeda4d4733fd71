"""Every test here runs on a REAL FreeSWITCH: the binary ``FREESWITCH_BIN`` names (``just test``
sets it from ``just freeswitch``). Without one a test is skipped, except under ``CI=true``, where
it fails: CI must never pass on the emulator alone (issue 13)."""

import os

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
