"""What the bench's emulated switch must copy, measured on the REAL FreeSWITCH (``FREESWITCH_BIN``).

``python -m testbed.bench.fsprobe [--events-out testbed/bench/fs_events.json]`` starts the real
switch on the bench's rendered config (:mod:`testbed.bench.benchconf`), stands in for the fork
server itself (a plain WebSocket server taking mod_audio_fork's frames, an ESL command
connection giving playbacks by hand, as REF "Playback methods compared" did), calls each route
once with :mod:`testbed.sip_caller` saying the bench voice (never silent) and measures:

* caller frames blanked at the fork (RMS < 64; the voice's frames are never under ~1500) around
  each playback: one 1 s file; three 0.4 s files queued at once with event-lock; a 2 s file
  broken by ``uuid_break all`` after 0.6 s; each is placed relative to the PLAYBACK_START and the
  last PLAYBACK_STOP it belongs to;
* every event of the call (an ``ALL`` listener filtered on the call's Unique-ID): names in
  order per segment, bytes and header counts; and which of them reach a listener subscribed as
  the fork server subscribes (``fork_server.app.SUBSCRIBED_EVENTS`` and its filters);
* on two switches, the rendered dialplan changed on both routes
  (:func:`testbed.bench.benchconf.dialplan_variant`): ``verbose`` runs ``verbose_events`` with no
  jitter buffer (the dialplan REF measured), ``plain`` neither with a 20 ms jitter buffer (what
  the dialplan renders since).

Measured 2026-12-06, FreeSWITCH 1.10.12 (the bench box, 2 cores, loadavg ~0.3):

* no jitter buffer: exactly 2 caller frames blanked (RMS 1.0) at each playback start and 2 on
  the return to park, a ``uuid_break all`` included, on both routes (8k: two whole 320-byte
  frames; 16k: FreeSWITCH's resampler spreads the 40 ms over 275-286 + 320 samples); none
  missing. With ``jitterbuffer_msec=20``: none blanked, none missing, over the same playbacks.
* per segment: CHANNEL_EXECUTE, PLAYBACK_START, PLAYBACK_STOP, CHANNEL_EXECUTE_COMPLETE,
  PRIVATE_COMMAND; the fork server's subscription gets PLAYBACK_START, PLAYBACK_STOP and
  CHANNEL_EXECUTE_COMPLETE; a file queued behind a broken one gives no event.
* sizes: see :mod:`testbed.bench.fsevents`.

It prints a report, writes it as JSON (``--out``), and with ``--events-out`` writes the events it
saw as templates for :mod:`testbed.bench.fsevents` (call-specific values as ``{uuid}``,
``{number}``, ``{path}``...). A measuring tool: no pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.server import serve

from fork_server.app import SUBSCRIBED_EVENTS
from testbed.real_switch import free_port
from testbed.sip_caller import SipCaller

from . import benchconf
from .esltap import EslTap, TapCounts
from .switchproc import MissingSwitch, freeswitch_bin, start_real_switch
from .voice import CallerVoice

__all__ = ["main", "probe"]

ROOT = Path(__file__).resolve().parents[2]
SILENT_RMS = 64.0
# What the emulated switch emits per call (testbed.bench.fsevents).
TEMPLATE_EVENTS = ("CHANNEL_EXECUTE", "PLAYBACK_START", "PLAYBACK_STOP", "CHANNEL_EXECUTE_COMPLETE", "PRIVATE_COMMAND",
                   "CHANNEL_HANGUP_COMPLETE")


class ForkSink:
    """Stands in for the fork server: records every fork frame's arrival and RMS, per call uuid."""

    def __init__(self) -> None:
        self.frames: dict[str, list[tuple[float, int, float]]] = {}
        self.uuids: asyncio.Queue[str] = asyncio.Queue()

    async def handler(self, ws: Any) -> None:
        meta = json.loads(await ws.recv())
        uuid = meta["uuid"]
        rows = self.frames.setdefault(uuid, [])
        self.uuids.put_nowait(uuid)
        async for msg in ws:
            if isinstance(msg, bytes) and len(rows) < 100_000:
                x = np.frombuffer(msg, "<i2").astype(np.float64)
                rows.append((time.monotonic(), len(msg), float(np.sqrt(np.mean(x * x))) if len(x) else 0.0, _zero_run(x)))


def _zero_run(x: np.ndarray) -> int:
    """Samples in the frame's longest run of |x| < 64 (a blanked stretch; speech has none over a few samples)."""
    quiet = np.concatenate(([0], (np.abs(x) < SILENT_RMS).astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(quiet))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


def _tone(path: Path, seconds: float) -> str:
    n = int(8000 * seconds)
    x = (8000 * np.sin(2 * np.pi * 440 * np.arange(n) / 8000)).astype("<i2")
    path.write_bytes(x.tobytes())
    return str(path)


async def _playback(cmd: EslTap, uuid: str, path: str) -> None:
    await cmd.command(f"sendmsg {uuid}\ncall-command: execute\nexecute-app-name: playback\n"
                      f"execute-app-arg: {path}\nevent-lock: true", expect="+OK")


async def _scenarios(cmd: EslTap, uuid: str, spool: Path, tag: str) -> list[dict[str, Any]]:
    out = []
    one = _tone(spool / f"{tag}-1s.r8", 1.0)
    t0 = time.monotonic()
    await _playback(cmd, uuid, one)
    await asyncio.sleep(2.0)
    out.append({"name": "one 1 s file", "t0": t0, "t1": time.monotonic(), "files": [one]})
    three = [_tone(spool / f"{tag}-q{i}.r8", 0.4) for i in range(3)]
    t0 = time.monotonic()
    for p in three:
        await _playback(cmd, uuid, p)
    await asyncio.sleep(2.2)
    out.append({"name": "three 0.4 s files queued at once", "t0": t0, "t1": time.monotonic(), "files": three})
    long = _tone(spool / f"{tag}-2s.r8", 2.0)
    queued = _tone(spool / f"{tag}-2s-next.r8", 0.4)
    t0 = time.monotonic()
    await _playback(cmd, uuid, long)
    await _playback(cmd, uuid, queued)
    await asyncio.sleep(0.6)
    tb = time.monotonic()
    await cmd.command(f"api uuid_break {uuid} all")
    await asyncio.sleep(1.6)
    out.append({"name": "2 s file (+0.4 s queued) broken by uuid_break all at 0.6 s", "t0": t0, "t1": time.monotonic(),
                "files": [long, queued], "break_at": tb})
    return out


def _silence_report(frames: list[tuple[float, int, float]], sc: dict[str, Any], trace: list[tuple]) -> dict[str, Any]:
    """Blanked frames within the scenario, placed against its PLAYBACK_START / last STOP events."""
    span = [f for f in frames if sc["t0"] - 0.1 <= f[0] <= sc["t1"]]
    silent = [f[0] for f in span if f[2] < SILENT_RMS]
    half = [f[0] for f in span if 2 * f[3] >= f[1] // 2]  # at least half the frame one blanked run
    rate = 8000 if span and span[0][1] == 320 else 16000
    blanked_ms = sum(f[3] for f in span if f[3] >= rate // 400) * 1000 / rate  # runs of 2.5 ms or more
    ev = [(t, name) for t, _u, name, _b, _n in trace if sc["t0"] - 0.05 <= t <= sc["t1"]]
    starts = [t for t, n in ev if n == "PLAYBACK_START"]
    stops = [t for t, n in ev if n == "PLAYBACK_STOP"]
    near_start = {i: [round((s - t) * 1000) for s in silent if -40e-3 <= s - t < 120e-3] for i, t in enumerate(starts)}
    after_last = [round((s - stops[-1]) * 1000) for s in silent if stops and -40e-3 <= s - stops[-1] < 200e-3]
    return {
        "frames": len(span),
        "frames_expected": round((span[-1][0] - span[0][0]) * 50) + 1 if span else 0,  # 50/s from the first to the last
        "silent": len(silent),
        "half_blanked": len(half),
        "blanked_ms": round(blanked_ms, 1),
        "partly_blanked_runs": [f[3] for f in span if 0 < f[3] and f[3] >= rate // 400],
        "playback_starts": len(starts),
        "silent_ms_after_each_start": list(near_start.values()),
        "silent_ms_after_last_stop": after_last,
        "rms_of_silent": sorted({round(f[2], 1) for f in span if f[2] < SILENT_RMS}),
        "min_rms_of_speech": round(min((f[2] for f in span if f[2] >= SILENT_RMS), default=0.0)),
        "events": [n for _, n in ev],
    }


def _tokens(values: dict[str, str]) -> list[tuple[str, str]]:
    return sorted(((v, k) for k, v in values.items() if v), key=lambda kv: -len(kv[0]))


def _template(headers: list[tuple[str, str]], tokens: list[tuple[str, str]]) -> list[list[str]]:
    out = []
    for name, value in headers:
        for raw, tok in tokens:
            value = value.replace(raw, "{" + tok + "}")
        out.append([name, value])
    return out


async def _one_switch(binary: str, work: Path, *, verbose: bool, jitter_ms: int | None, voice: CallerVoice,
                      log_level: str | None) -> dict[str, Any]:
    esl_port, sip_port, fork_port = free_port(), free_port(), free_port()
    spool = work / "spool"
    spool.mkdir(parents=True)
    cfg = benchconf.write_config(work, esl_port=esl_port, connector_url="ws://127.0.0.1:9/unused", spool=spool,
                                 fork_port=fork_port)
    rendered = benchconf.dialplan_variant(benchconf.render_conf(cfg), verbose_events=verbose, jitter_ms=jitter_ms)
    sink = ForkSink()
    result: dict[str, Any] = {"verbose_events": verbose, "jitter_ms": jitter_ms, "calls": []}
    async with serve(sink.handler, "127.0.0.1", fork_port, subprotocols=["audio.drachtio.org"], max_size=1 << 20):
        fs = await start_real_switch(binary, rendered, work, sip_port=sip_port, esl_port=esl_port,
                                     esl_password=benchconf.ESL_PASSWORD, log_level=log_level)
        caller = SipCaller(sip_port=sip_port)
        await caller.start()
        every = TapCounts(trace=True)
        as_fork = TapCounts()
        every.on = as_fork.on = True
        tap_all = await EslTap.connect("127.0.0.1", esl_port, benchconf.ESL_PASSWORD, ["ALL"], counts=every)
        tap_fork = await EslTap.connect("127.0.0.1", esl_port, benchconf.ESL_PASSWORD, SUBSCRIBED_EVENTS, counts=as_fork,
                                        filters=_fork_filters())
        cmd = await EslTap.connect("127.0.0.1", esl_port, benchconf.ESL_PASSWORD, None)
        try:
            for i, route in enumerate(benchconf.ROUTES):
                number = f"+1555000{9000 + i}"
                call = await caller.place_call(route.number, number, f"Probe {i}")
                pcm = np.clip(voice.reference(i, 0, 50 * 30), -32768, 32767).astype("<i2").tobytes()
                call.say(pcm)  # 30 s of the bench voice: never silent
                uuid = await asyncio.wait_for(sink.uuids.get(), 10)
                await tap_all.watch(uuid)
                await asyncio.sleep(1.0)
                scen = await _scenarios(cmd, uuid, spool, f"{route.name}")
                call.hangup()
                await asyncio.sleep(1.0)
                trace = [row for row in every.trace if row[1] == uuid]
                frames = sink.frames.get(uuid, [])
                result["calls"].append({
                    "route": route.name,
                    "fork_frame_bytes": sorted({f[1] for f in frames}),
                    "scenarios": [{"name": s["name"], **_silence_report(frames, s, trace)} for s in scen],
                    "first_file": scen[0]["files"][0],
                    "tokens": {"uuid": uuid, "number": number, "name": f"Probe {i}", "destination": route.number,
                               "route": route.name, "fork_password": benchconf.FORK_AUTH[1], "spool": str(spool)},
                })
            result["all_events"] = {n: {"count": every.events[n], "bytes_each": round(every.bytes[n] / every.events[n]),
                                        "headers": len(every.samples[n][1])} for n in sorted(every.events)}
            result["reach_fork_subscription"] = {n: as_fork.events[n] for n in sorted(as_fork.events)}
            result["segments"] = every.segment_profile()
            result["segments_as_fork"] = as_fork.segment_profile()
            result["_samples"] = every.samples
        finally:
            for t in (tap_all, tap_fork, cmd):
                t.close()
            await caller.close()
            await fs.close()
    return result


def _fork_filters() -> list[tuple[str, str]]:
    """The fork server's own ESL filters (fork_server.app.ESL_FILTERS where it has them)."""
    from fork_server import app

    filters = getattr(app, "ESL_FILTERS", None)
    return list(filters) if filters else [("variable_voicefork_route", r.name) for r in benchconf.ROUTES]


async def probe(binary: str, *, log_level: str | None = None, jitter_ms: int = 20) -> dict[str, Any]:
    """Two switches: ``verbose`` (verbose_events, no jitter buffer: the dialplan REF measured)
    and ``plain`` (no verbose_events, a ``jitter_ms`` jitter buffer: the dialplan as rendered since)."""
    voice = CallerVoice()
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "freeswitch_bin": binary}
    with tempfile.TemporaryDirectory(prefix="voicefork-fsprobe-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        out["verbose"] = await _one_switch(binary, Path(tmp) / "verbose", verbose=True, jitter_ms=None, voice=voice,
                                           log_level=log_level)
        out["plain"] = await _one_switch(binary, Path(tmp) / "plain", verbose=False, jitter_ms=jitter_ms, voice=voice,
                                         log_level=log_level)
    return out


def _templates(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"captured": result["date"], "freeswitch": "1.10.12 (drachtio mod_audio_fork)", "by_verbose": {}}
    for key in ("verbose", "plain"):
        run = result[key]
        tokens = _tokens(run["calls"][0]["tokens"])
        tokens.insert(0, (run["calls"][0]["first_file"], "path"))
        out["by_verbose"][key] = {
            name: {"bytes": size, "headers": _template(headers, tokens)}
            for name, (size, headers) in run["_samples"].items() if name in TEMPLATE_EVENTS
        }
    return out


def _print(result: dict[str, Any]) -> None:
    for key in ("verbose", "plain"):
        run = result[key]
        print(f"== {key} (verbose_events {'on' if run['verbose_events'] else 'off'}, "
              f"jitter buffer {run['jitter_ms'] or 'none'} ms)")
        for call in run["calls"]:
            print(f"  route {call['route']}: fork frames of {call['fork_frame_bytes']} bytes")
            for s in call["scenarios"]:
                print(f"    {s['name']}: {s['frames']} frames ({s['frames_expected']} at 50/s); "
                      f"{s['silent']} blanked whole, {s['half_blanked']} at least half; "
                      f"{s['blanked_ms']} ms blanked in all (runs in samples {s['partly_blanked_runs']})")
                print(f"      whole ones: RMS {s['rms_of_silent']}; "
                      f"speech RMS >= {s['min_rms_of_speech']}); {s['playback_starts']} PLAYBACK_START; "
                      f"blanked ms after each start {s['silent_ms_after_each_start']}, after the last stop {s['silent_ms_after_last_stop']}")
                print(f"      events: {' '.join(s['events'])}")
        print("  every event of the calls (ALL, by Unique-ID):")
        for name, v in run["all_events"].items():
            print(f"    {name:<40} {v['count']:>4} x {v['bytes_each']:>6} B, {v['headers']} headers")
        print(f"  reaching the fork server's subscription: {run['reach_fork_subscription']}")
        print(f"  per segment (ALL): {run['segments']}")
        print(f"  per segment (as the fork server): {run['segments_as_fork']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.bench.fsprobe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "build" / "bench" / "fsprobe.json"))
    p.add_argument("--events-out", default=None, help="write the event templates for testbed.bench.fsevents here")
    p.add_argument("--fs-log-level", default=None, help="switch.conf loglevel (default: FreeSWITCH's, debug)")
    opts = p.parse_args(argv)
    try:
        binary = freeswitch_bin()
    except MissingSwitch as exc:
        print(f"fsprobe: {exc}", file=sys.stderr)
        return 2
    result = asyncio.run(probe(binary, log_level=opts.fs_log_level))
    _print(result)
    if opts.events_out:
        Path(opts.events_out).write_text(json.dumps(_templates(result), indent=1) + "\n")
        print(f"wrote {opts.events_out}")
    for key in ("verbose", "plain"):
        result[key].pop("_samples", None)
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
