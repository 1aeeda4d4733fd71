"""Call recordings: the JSON sidecar beside each WAV, and the retention sweep.

FreeSWITCH writes the WAV itself (``record_session``, rendered by :mod:`fs_dialplan.render`), so
a recording survives the fork server going away mid-call. The fork server only learns the path
(the channel variable ``voicefork_recording``, read back with ``uuid_dump``), checks it is a
plain ``.wav`` path under ``recording.dir``, writes ``<name>.json`` beside it when the call
ends, and, with ``retention_days``, deletes recordings and sidecars older than that.

The sidecar holds the caller's numbers as JSON data only; nothing of it goes into a path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import time
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

from fs_dialplan.model import RecordingSettings

T = TypeVar("T")

__all__ = ["RecordingStore", "MAX_SWEEP_FILES", "MAX_SIDECAR_BYTES"]

_PATH = re.compile(r"/[A-Za-z0-9_./-]{1,1000}\.wav")
MAX_SWEEP_FILES = 100_000  # files looked at per sweep; the rest wait for the next one
MAX_SIDECAR_BYTES = 16 << 10
_SWEPT = (".wav", ".json")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RecordingStore:
    def __init__(self, settings: RecordingSettings) -> None:
        self.settings = settings
        self.local_root = os.path.abspath(settings.fork_server_dir)
        # Sidecars and sweeps touch the disk off the event loop, in one thread of their own made
        # at start (see start()): a lazily made default-executor thread stayed for good after the
        # first recorded call (the churn counts threads: 7 -> 8).
        self._io: concurrent.futures.ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._io = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicefork-recording")
        await asyncio.get_running_loop().run_in_executor(self._io, lambda: None)  # the thread exists from now

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the recording thread (the default executor before start())."""
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def close(self) -> None:
        if self._io is not None:
            self._io.shutdown(wait=False, cancel_futures=True)
            self._io = None

    def accept(self, switch_path: str | None) -> str | None:
        """The switch's path if it is a plain .wav under ``recording.dir``, else None."""
        if not switch_path or not _PATH.fullmatch(switch_path) or "/../" in switch_path or "/./" in switch_path:
            return None
        return switch_path if self.settings.local_path(switch_path) is not None else None

    def sidecar_path(self, switch_path: str) -> str:
        local = self.settings.local_path(switch_path)
        if local is None:
            raise ValueError(f"{switch_path!r} is not under recording.dir")
        return local[: -len(".wav")] + ".json"

    @staticmethod
    def sidecar(*, uuid: str, route: str, from_: str, to: str, start: float, end: float, outcome: str,
                marks_played: int, marks_cleared: int, recording: str) -> dict[str, Any]:
        return {
            "uuid": uuid,
            "route": route,
            "from": from_[:256],
            "to": to[:256],
            "start": _iso(start),
            "end": _iso(end),
            "duration_s": round(max(0.0, end - start), 3),
            "outcome": outcome,
            "marks": {"played": marks_played, "cleared": marks_cleared},
            "recording": recording,
            "channels": {"left": "caller", "right": "what the caller heard"},
        }

    def write_sidecar(self, switch_path: str, data: dict[str, Any]) -> str:
        """Write ``<name>.json`` beside the recording (atomically); returns its local path."""
        path = self.sidecar_path(switch_path)
        body = json.dumps(data, ensure_ascii=True, indent=1).encode()
        if len(body) > MAX_SIDECAR_BYTES:
            raise ValueError(f"sidecar of {len(body)} bytes is over {MAX_SIDECAR_BYTES}")
        os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, body)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return path

    def sweep(self, now: float | None = None) -> list[str]:
        """Delete .wav and .json files older than ``retention_days`` (by mtime) under the local
        root, then the directories that are left empty; returns what was deleted."""
        days = self.settings.retention_days
        if days <= 0:
            return []
        cutoff = (time.time() if now is None else now) - days * 86400
        deleted: list[str] = []
        seen = 0
        for dirpath, dirnames, filenames in os.walk(self.local_root, topdown=False, followlinks=False):
            for name in filenames:
                seen += 1
                if seen > MAX_SWEEP_FILES:
                    return deleted
                if not name.endswith(_SWEPT):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                    if st.st_mtime < cutoff and os.path.isfile(path) and not os.path.islink(path):
                        os.unlink(path)
                        deleted.append(path)
                except FileNotFoundError:
                    pass
            if dirpath != self.local_root:
                try:  # an old, empty one only: the switch may just have made today's
                    if os.lstat(dirpath).st_mtime < cutoff:
                        os.rmdir(dirpath)
                except OSError:
                    pass
        return deleted
