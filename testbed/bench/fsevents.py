"""Events of the size and shape a real FreeSWITCH sends, for the bench's emulated switch.

``fs_events.json`` holds events captured from a real FreeSWITCH 1.10.12 (drachtio
mod_audio_fork) on 2026-12-06 by ``python -m testbed.bench.fsprobe --events-out``: one call of
the bench's rendered config (PCMU, 20 ms), its events as an ``ALL`` listener got them, with the
call's own values replaced by ``{uuid}``, ``{number}``, ``{name}``, ``{destination}``,
``{route}``, ``{path}``, ``{fork_password}``. Observed then, in bytes on the ESL wire (outer
header included), mean over the two routes' calls (fsprobe report):

* ``verbose_events`` on the channel, no jitter buffer (the dialplan REF measured): every event
  carries every channel variable: CHANNEL_EXECUTE 6.29 KB (145 headers), PLAYBACK_START 6.21 KB
  (143), PLAYBACK_STOP 6.26 KB (148), CHANNEL_EXECUTE_COMPLETE 6.42 KB (151), PRIVATE_COMMAND
  6.36 KB (150), CHANNEL_HANGUP_COMPLETE 9.25 KB (229), CHANNEL_DESTROY 9.20 KB, CHANNEL_STATE
  8.25 KB;
* without ``verbose_events`` (and with the 20 ms jitter buffer the dialplan renders since, whose
  ~10 ``rtp_jb_*`` variables add ~0.37 KB): CHANNEL_EXECUTE 6.67 KB (157), PLAYBACK_START 6.59 KB
  (155), PLAYBACK_STOP 6.64 KB (160), CHANNEL_EXECUTE_COMPLETE 6.80 KB (163),
  CHANNEL_HANGUP_COMPLETE 9.62 KB (241): the variables are still there. Only PRIVATE_COMMAND
  (2.29 KB, 64 headers), CHANNEL_STATE (2.15 KB) and CHANNEL_CALLSTATE (2.22 KB) shrink to the
  core and channel headers. FreeSWITCH adds the variables to PLAYBACK_*, CHANNEL_EXECUTE[_COMPLETE],
  CHANNEL_HANGUP[_COMPLETE], CHANNEL_DESTROY and a few more whatever the flag
  (``switch_channel_event_set_extended_data``, 1.10.12); ``verbose_events`` adds them to the rest.

Each played file gives CHANNEL_EXECUTE, PLAYBACK_START, PLAYBACK_STOP, CHANNEL_EXECUTE_COMPLETE,
PRIVATE_COMMAND in that order (5 per segment, REF "Event sizes"); a listener subscribed as the
fork server subscribes (``fork_server.app.SUBSCRIBED_EVENTS``, filtered on
``variable_voicefork_route``) got 3 of them per segment: PLAYBACK_START, PLAYBACK_STOP,
CHANNEL_EXECUTE_COMPLETE. A file still queued when ``uuid_break <uuid> all`` came gave no event.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

__all__ = ["EventTemplates", "ChannelEvents", "EVENTS_FILE"]

EVENTS_FILE = Path(__file__).resolve().with_name("fs_events.json")
_DYNAMIC = ("Event-Date-Timestamp", "Event-Sequence")
# uuid_dump answers with the channel's event data; the event-only headers are left out.
_NOT_CHANNEL = ("Event-", "Application", "Playback-", "variable_current_application", "variable_playback_")


class ChannelEvents:
    """One channel's events: ``headers(name, path)`` is a fresh dict of that event's headers."""

    __slots__ = ("_by_name", "_path_keys", "dump", "_seq")

    def __init__(self, templates: Mapping[str, list[list[str]]], values: Mapping[str, str]) -> None:
        self._by_name: dict[str, dict[str, str]] = {}
        self._path_keys: dict[str, tuple[str, ...]] = {}
        for name, headers in templates.items():
            ev: dict[str, str] = {}
            for key, value in headers:
                if "{" in value:
                    for tok, real in values.items():
                        value = value.replace(tok, real)
                ev[key] = value
            self._by_name[name] = ev
            self._path_keys[name] = tuple(k for k, v in ev.items() if "{path}" in v)
        base = self._by_name.get("CHANNEL_EXECUTE_COMPLETE") or next(iter(self._by_name.values()), {})
        self.dump = {k: v for k, v in base.items() if not k.startswith(_NOT_CHANNEL)}
        self._seq = 0

    def headers(self, name: str, path: str = "") -> dict[str, str]:
        h = dict(self._by_name[name])
        for key in self._path_keys[name]:
            h[key] = h[key].replace("{path}", path)
        self._seq += 1
        h["Event-Date-Timestamp"] = str(time.time_ns() // 1000)
        h["Event-Sequence"] = str(self._seq)
        return h

    def has(self, name: str) -> bool:
        return name in self._by_name


class EventTemplates:
    """The captured events, by ``verbose`` (the channel ran ``verbose_events``) or not."""

    def __init__(self, path: Path = EVENTS_FILE) -> None:
        data = json.loads(path.read_text())
        self.captured = f"{data['captured']}, FreeSWITCH {data['freeswitch']}"
        self._sets = {True: {k: v["headers"] for k, v in data["by_verbose"]["verbose"].items()},
                      False: {k: v["headers"] for k, v in data["by_verbose"]["plain"].items()}}
        self.sizes = {verbose: {k: v["bytes"] for k, v in data["by_verbose"][key].items()}
                      for verbose, key in ((True, "verbose"), (False, "plain"))}

    def channel(self, *, verbose: bool, uuid: str, number: str, name: str, destination: str, route: str,
                fork_password: str = "", spool: str = "") -> ChannelEvents:
        values = {"{uuid}": uuid, "{number}": number, "{name}": name, "{destination}": destination, "{route}": route,
                  "{fork_password}": fork_password, "{spool}": spool}
        return ChannelEvents(self._sets[verbose], values)
