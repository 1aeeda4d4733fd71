"""Capacity and latency benchmark (issue 5): N concurrent full-duplex calls through the fork server.

The fork server runs as its own process (``python -m fork_server`` on a generated config),
so its CPU and memory are read alone from ``/proc/<pid>/stat`` and ``/proc/<pid>/status``
(every process of its tree when it runs workers). This process is the load side
(:mod:`testbed.bench.load`: lean mod_audio_fork media + ESL server + connector), and it
measures the same N against a baseline, a bare websockets relay (:mod:`testbed.bench.relay`)
doing the same WebSocket I/O with no resampling or logic. CPU figures move with whatever
else runs on the machine; the ratio to the baseline, taken minutes apart on the same
box, is the figure that holds.

Per call: caller audio in real time (8k and 16k routes alternate); the bot speaks 40 % of
the time (2 s of TTS every 5 s, sent as 100 ms chunks every 60 ms, a mark after each
utterance) and every 4th utterance is cut by a barge-in ``clear`` 1 s in.

``--switch real`` adds, beside each emulated point, the same N through a REAL FreeSWITCH
(``FREESWITCH_BIN``; :mod:`testbed.bench.switchproc`) started on the conf files rendered from
the bench's own config (:mod:`testbed.bench.benchconf`): N SIP calls from the lean caller agent
(:mod:`testbed.bench.caller`: PCMU, steady 20 ms RTP, the caller talking for the whole call),
the switch forking them to the same fork server process and playing its segments back. Both
kinds of row carry the caller's side (:mod:`testbed.bench.results`: caller frames lost at the
connector, missing or blanked, while the bot plays or not; holes the caller heard; first TTS
audio; barge-in cut), ESL events and bytes per call-second (an :class:`EslTap` subscribed as
the fork server subscribes, on ``--esl-tap-calls`` of the calls) and, on the real switch,
FreeSWITCH's own CPU and RSS from ``/proc``. The caller agent and the connector are this
process ("agent%"). ``build/bench/capacity.png`` draws CPU per call-second and p99 added
latency against N (:mod:`testbed.bench.plot`).

No pass/fail claim is made on any timing. Run ``python -m testbed.bench.capacity --help``.
"""

from __future__ import annotations

import argparse
import asyncio
from array import array
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import websockets

from fork_server.app import SUBSCRIBED_EVENTS
from testbed.real_switch import free_port

from . import benchconf, plot
from . import load as ld
from .caller import SipLoadGen
from .esltap import EslTap, TapCounts
from .procstat import ProcTree, loadavg, machine_cpu
from .results import HeardSnapshot, caller_figures, tap_figures
from .switchproc import MissingSwitch, freeswitch_bin, start_real_switch

__all__ = ["main", "run", "FIELDS"]

ROOT = Path(__file__).resolve().parents[2]
ROUTES = [(r.name, r.rate) for r in benchconf.ROUTES]
ESL_PASSWORD = benchconf.ESL_PASSWORD
FORK_AUTH = benchconf.FORK_AUTH

# Every result row has these keys (the smoke test checks them).
FIELDS = (
    "server", "calls", "calls_up", "window_s", "cpu_percent", "cpu_system_percent", "cpu_us_per_frame", "rss_kb_idle", "rss_kb",
    "rss_kb_per_call", "latency_ms", "latency16_ms", "latency8_ms", "tts_latency_ms", "frames_sent",
    "frames_received", "frames_lost", "frames_late", "frames_in_window", "ts_mismatch", "esl_commands_per_s",
    "segments", "bot_speaking_percent", "marks_sent", "marks_back", "clears", "load_cpu_percent",
    "machine_busy_percent", "loadavg_before", "loadavg_after", "gen_lag_max_ms", "merged_sends", "killed_by_server",
    # issue 13: the switch, and the caller's side (testbed.bench.results), the same on both switches
    "switch", "cpu_ms_per_call_s", "fs_cpu_percent", "fs_cpu_ms_per_call_s", "fs_rss_kb_per_call", "caller_frames",
    "frames_missing", "frames_silent", "frames_replaced", "frames_bot", "frames_missing_bot", "frames_silent_bot",
    "frames_replaced_bot", "lost_percent",
    "lost_bot_percent", "lost_idle_percent", "holes", "hole_ptimes", "rtp_lost", "resyncs", "first_audio_ms", "cut_ms",
    "esl_events_per_call_s", "esl_kb_per_call_s", "esl_events_per_segment",
)


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else (shutil.which("py-spy") or "py-spy")


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Server:
    """The process under test: the fork server or the baseline relay."""

    def __init__(self, kind: str, gen: ld.LoadGen, work: Path, opts: argparse.Namespace, *, esl_port: int,
                 fork_port: int = 0) -> None:
        """``fork_port``: where the fork server listens (0: any; the real switch's dialplan needs it known)."""
        self.kind, self.gen, self.work, self.opts = kind, gen, work, opts
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = work / f"{kind}.log"
        self.esl_port, self.fork_port = esl_port, fork_port
        self.spool = work / "spool"
        self.config: Path | None = None

    def write_config(self) -> Path:
        """The fork server's YAML; the real switch's conf files are rendered from the same file."""
        self.spool.mkdir(exist_ok=True)
        self.config = benchconf.write_config(
            self.work, esl_port=self.esl_port, connector_url=self.gen.connector_url(), spool=self.spool,
            fork_port=self.fork_port or 8099, ping_interval=self.opts.ping_interval, transport=self.opts.transport,
        )
        return self.config

    def _argv(self) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        loop = ["--uvloop"] if self.opts.loop == "uvloop" else []
        if self.kind == "relay":
            return [sys.executable, "-m", "testbed.bench.relay", "--connector", self.gen.connector_url(), *loop], env
        cfg = self.config or self.write_config()
        env.update(benchconf.ENV)
        argv = [sys.executable, "-m", "fork_server", "--config", str(cfg), "--port", str(self.fork_port),
                "--log-level", self.opts.log_level, *loop]
        if self.opts.workers > 1:
            argv += ["--workers", str(self.opts.workers)]
        if self.opts.esl != "python-esl":
            argv += ["--esl", self.opts.esl]
        return argv, env

    async def start(self) -> None:
        argv, env = self._argv()
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_raise_nofile, cwd=ROOT)
        log.close()
        pattern = re.compile(rb"listening on (?:127\.0\.0\.1:)?(\d+)")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            text = self.log_path.read_bytes()
            m = pattern.search(text)
            workers = self.opts.workers if self.kind == "voicefork" else 1
            if m and text.count(b"listening on") >= workers:
                self.port = int(m.group(1))
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"{self.kind} did not start: {self.log_path.read_text()[-2000:]}")
        if self.kind == "voicefork":
            ok = 0
            while time.monotonic() < deadline:  # /healthz is ok once ESL is up (ask every worker)
                ok = ok + 1 if await asyncio.to_thread(self._http, "/healthz") == "ok\n" else 0
                if ok >= 3 * self.opts.workers:
                    return
                await asyncio.sleep(0.02)
            raise RuntimeError("the fork server never reported ESL up")

    def _http(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.read().decode()
        except OSError:
            return None

    def metrics(self) -> dict[str, float]:
        """The fork server's counters from /metrics (frames, segments, barge-ins, dropped frames, errors)."""
        if self.kind != "voicefork":
            return {}
        text = self._http("/metrics") or ""
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            m = re.match(r"(voicefork_[a-z_]+_total)(\{[^}]*\})? ([0-9.e+]+)", line)
            if m:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return out

    async def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 5)
        return self.proc.returncode


async def _point(kind: str, switch: str, n: int, opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One N through one server (``voicefork`` or the ``relay`` baseline) on one switch."""
    real = switch == "real"
    profile = _profile(opts)
    gen: ld.LoadGen = (SipLoadGen(first_tts_within_s=opts.first_tts_within, tts=profile) if real else
                       ld.LoadGen(esl_password=ESL_PASSWORD, first_tts_within_s=opts.first_tts_within, tts=profile))
    await gen.start()
    me = ProcTree(os.getpid(), children=False)  # the load side alone (caller agent, connector), not what it spawned
    fs = tap = None
    fs_tree: ProcTree | None = None
    server = None
    try:
        if real:
            esl_port, sip_port, fork_port = free_port(), free_port(), free_port()
        else:
            esl_port, sip_port, fork_port = gen.esl_port, 0, 0
        server = Server(kind, gen, work, opts, esl_port=esl_port, fork_port=fork_port)
        if kind == "voicefork":
            # The switch (real or emulated) runs what the rendered dialplan says (verbose_events, jitter buffer).
            rendered = benchconf.render_conf(server.write_config())
            if opts.no_jitter_buffer:
                rendered = benchconf.dialplan_variant(rendered, jitter_ms=None, routes=set(opts.no_jitter_buffer))
            gen.switch.flags = benchconf.route_flags(rendered)
            gen.switch.spool = str(server.spool)
            if real:
                fs = await start_real_switch(opts.fs_bin, rendered, work, sip_port=sip_port, esl_port=esl_port,
                                             esl_password=ESL_PASSWORD, log_level=opts.fs_log_level,
                                             fork_module="jambonz" if opts.transport == "stream" else "drachtio")
                fs_tree = ProcTree(fs.pid)  # type: ignore[arg-type]
        await server.start()
        tree = ProcTree(server.proc.pid)  # type: ignore[union-attr]
        rss_idle = tree.rss_kb()
        fs_rss_idle = fs_tree.rss_kb() if fs_tree else 0
        if kind == "voicefork" and opts.esl_tap_calls:
            tap = await EslTap.connect("127.0.0.1", esl_port, ESL_PASSWORD, SUBSCRIBED_EVENTS, counts=TapCounts())
        try:
            if real:
                routes = [(r.name, r.rate, r.number) for r in benchconf.ROUTES]
                placing = gen.place_sip_calls(n, ("127.0.0.1", sip_port), routes=routes, ramp_per_s=opts.ramp)  # type: ignore[attr-defined]
            else:
                placing = gen.place_calls(n, "127.0.0.1", server.port, routes=ROUTES, auth=FORK_AUTH, ramp_per_s=opts.ramp)
            await asyncio.wait_for(placing, timeout=n / opts.ramp + 30)
        except TimeoutError:
            gen.failed.append("ramp: some calls did not connect within the ramp + 30 s")
        deadline = time.monotonic() + 15
        while gen.connected < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if tap is not None:
            for c in [c for c in gen.calls if c.started][: opts.esl_tap_calls]:
                await tap.watch(c.uuid)
        await asyncio.sleep(opts.settle)
        if opts.py_spy and kind == "voicefork":
            spy = subprocess.Popen(
                [_py_spy(), "record", "-p", str(server.proc.pid), "-d", str(int(opts.window)), "-r", "200",  # type: ignore[union-attr]
                 "-f", "raw", "-o", str(work / f"py-spy-{n}.txt"), "--subprocesses", "--nonblocking",
                 *(["--gil"] if opts.py_spy_gil else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        la0 = loadavg()
        counters0 = await asyncio.to_thread(server.metrics)
        for c in gen.calls:
            c.heard.reset_counts()
        (u0, s0), me0, (busy0, _), th0 = tree.cpu_split(), me.cpu_seconds(), machine_cpu(), tree.thread_cpu()
        fs0 = fs_tree.cpu_seconds() if fs_tree else 0.0
        t0 = time.monotonic()
        gen.rec.reset()
        gen.rec.on = True
        if tap is not None:
            tap.counts.on = True
        await asyncio.sleep(opts.window)
        gen.rec.on = False
        if tap is not None:
            tap.counts.on = False
        wall = time.monotonic() - t0
        (u1, s1), me1, (busy1, _), th1 = tree.cpu_split(), me.cpu_seconds(), machine_cpu(), tree.thread_cpu()
        fs1 = fs_tree.cpu_seconds() if fs_tree else 0.0
        heard = HeardSnapshot(gen)
        rss = tree.rss_kb()
        fs_rss = fs_tree.rss_kb() if fs_tree else 0
        pss = tree.pss_kb() if opts.workers > 1 and kind == "voicefork" else None
        threads = tree.threads()
        la1 = loadavg()
        counters1 = await asyncio.to_thread(server.metrics)
        # Stop the caller audio, let what is in flight arrive, then count what never did.
        gen.audio_on = False
        await asyncio.sleep(opts.drain)
        totals = gen.totals()
        gen.finish_cuts()
        gen.hangup_all()
        still_open = await gen.wait_closed(10)
        await asyncio.sleep(0.3)
        if opts.py_spy and kind == "voicefork":
            spy.wait(30)
    finally:
        code = await server.stop() if server is not None else None
        if tap is not None:
            tap.close()
        if fs is not None:
            await fs.close()
        await gen.close()
    rec = gen.rec
    cpu = (u1 - u0) + (s1 - s0)
    fs_cpu = fs1 - fs0
    frames = rec.frames_in_window
    lat_all = array("q", rec.lat16)
    lat_all.extend(rec.lat8)
    machine_busy = (busy1 - busy0) / wall * 100  # percent of one core, all cores summed
    delta = {k: counters1.get(k, 0.0) - counters0.get(k, 0.0) for k in counters1}
    row: dict[str, Any] = {
        "server": kind,
        "switch": switch,
        "calls": n,
        "calls_up": totals["connector_started"],
        "window_s": round(wall, 2),
        "cpu_percent": round(cpu / wall * 100, 1),
        "cpu_us_per_frame": round(cpu / frames * 1e6, 1) if frames else None,
        "cpu_system_percent": round((s1 - s0) / wall * 100, 1),
        "cpu_ms_per_call_s": round(cpu / wall / n * 1000, 3),
        "fs_cpu_percent": round(fs_cpu / wall * 100, 1) if fs_tree else None,
        "fs_cpu_ms_per_call_s": round(fs_cpu / wall / n * 1000, 3) if fs_tree else None,
        "fs_rss_kb_idle": fs_rss_idle if fs_tree else None,
        "fs_rss_kb_per_call": round((fs_rss - fs_rss_idle) / n, 1) if fs_tree else None,
        "rss_kb_idle": rss_idle,
        "rss_kb": rss,
        "rss_kb_per_call": round((rss - rss_idle) / n, 1),
        "pss_kb": pss,
        "threads": threads,
        "thread_cpu_percent": {
            k: round((v - th0.get(k, 0.0)) / wall * 100, 1) for k, v in sorted(th1.items()) if v - th0.get(k, 0.0) > 0
        },
        "latency_ms": ld.percentiles(lat_all),
        "latency16_ms": ld.percentiles(rec.lat16),
        "latency8_ms": ld.percentiles(rec.lat8),
        "tts_latency_ms": ld.percentiles(rec.tts_lat),
        "frames_sent": totals["frames_sent"],
        "frames_received": totals["frames_received"],
        "frames_lost": totals["frames_sent"] - totals["frames_received"],
        "frames_late": rec.late_frames,
        "frames_in_window": frames,
        "ts_mismatch": totals["ts_mismatch"],
        "esl_commands_per_s": None if real else round(rec.esl_commands / wall, 1),
        "esl_by_kind": dict(rec.esl_by_kind),
        "segments": int(delta.get("voicefork_playback_segments_total", 0)) if real else rec.segments,
        "tts_sent_ms": rec.tts_sent_ms,
        "breaks": rec.breaks,
        "marks_sent": totals["marks_sent"],
        "marks_back": totals["marks_back"],
        "clears": totals["clears"],
        "load_cpu_percent": round((me1 - me0) / wall * 100, 1),
        "machine_busy_percent": round(machine_busy, 1),
        "other_cpu_percent": round(machine_busy - (cpu + fs_cpu + me1 - me0) / wall * 100, 1),
        "loadavg_before": la0,
        "loadavg_after": la1,
        "gen_lag_max_ms": round(rec.gen_lag_max_ns / 1e6, 2),
        "merged_sends": rec.merged_sends,
        "killed_by_server": totals["killed_by_server"],
        "forks_open_failed": totals["forks_open_failed"],
        "forks_still_open": still_open,
        "calls_failed": gen.failed[:20],
        "server_exit": code,
        "server_counters": counters1,
        "server_counters_window": delta,
    }
    row.update(caller_figures(gen, window_s=wall, n=n, heard=heard))  # real: latency_ms from the caller's clock
    row.update(tap_figures(tap.counts, calls=len(tap.watched), window_s=wall) if tap is not None else
               {"esl_events_per_call_s": None, "esl_kb_per_call_s": None, "esl_events_per_segment": None})
    return row


def _profile(opts: argparse.Namespace) -> ld.TtsProfile:
    return ld.TtsProfile(speech_s=0.0, bargein_every=0) if opts.silent_bot else ld.TtsProfile()


def _fmt(v: Any, width: int, prec: int = 1) -> str:
    if v is None:
        return f"{'-':>{width}}"
    if isinstance(v, float):
        return f"{v:>{width}.{prec}f}"
    return f"{v:>{width}}"


HEADER = (
    f"{'server':>9} {'switch':>8} {'N':>4} {'up':>4} {'CPU%':>6} {'ms/cs':>6} {'FSms/cs':>7} {'FS%':>5} {'KB/call':>7} {'FSKB/c':>6} "
    f"{'p50ms':>6} {'p99ms':>7} {'lost%':>6} {'miss':>5} {'blank':>5} {'repl':>5} {'bot%':>6} {'idle%':>6} {'holes':>5} "
    f"{'1st50':>6} {'1st99':>6} {'cut50':>6} {'cutmx':>6} {'ev/cs':>6} {'KB/cs':>6} {'agent%':>6} {'other%':>6}"
)
LEGEND = (
    "ms/cs: fork-server CPU ms per call-second; FSms/cs, FS%: FreeSWITCH's (real switch); KB/call, FSKB/c: RSS per call "
    "of the fork server, of FreeSWITCH; "
    "p50/p99ms: added latency (emulated: fork frame sent -> connector; real: caller RTP sent -> connector); "
    "lost%: caller frames lost at the connector (miss: never arrived, blank: arrived as near-silence; "
    "apart, repl: frames that arrived but are not the caller's, e.g. a jitter buffer's concealment), "
    "bot%/idle%: lost while the bot plays / is silent; holes: in the bot's speech at the caller; "
    "1st50/1st99: connector's first TTS byte -> first audio at the caller, ms; cut50/cutmx: clear -> last bot audio, ms; "
    "ev/cs, KB/cs: ESL events and KB per call-second to a listener subscribed as the fork server; "
    "agent%: this process (caller agent, connector, emulated switch)"
)


def format_row(r: dict[str, Any]) -> str:
    lat, first, cut = r["latency_ms"], r["first_audio_ms"], r["cut_ms"]
    return " ".join(
        [
            _fmt(r["server"], 9), _fmt(r["switch"], 8), _fmt(r["calls"], 4), _fmt(r["calls_up"], 4),
            _fmt(r["cpu_percent"], 6), _fmt(r["cpu_ms_per_call_s"], 6, 2), _fmt(r["fs_cpu_ms_per_call_s"], 7, 2),
            _fmt(r["fs_cpu_percent"], 5), _fmt(r["rss_kb_per_call"], 7), _fmt(r["fs_rss_kb_per_call"], 6, 0),
            _fmt(lat["p50"], 6, 2), _fmt(lat["p99"], 7, 2),
            _fmt(r["lost_percent"], 6, 2), _fmt(r["frames_missing"], 5), _fmt(r["frames_silent"], 5),
            _fmt(r["frames_replaced"], 5),
            _fmt(r["lost_bot_percent"], 6, 2), _fmt(r["lost_idle_percent"], 6, 2), _fmt(r["holes"], 5),
            _fmt(first["p50"], 6, 1), _fmt(first["p99"], 6, 1), _fmt(cut["p50"], 6, 1), _fmt(cut["max"], 6, 1),
            _fmt(r["esl_events_per_call_s"], 6, 2), _fmt(r["esl_kb_per_call_s"], 6, 1), _fmt(r["load_cpu_percent"], 6),
            _fmt(r["other_cpu_percent"], 6),
        ]
    )


def _machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        import uvloop

        uv = uvloop.__version__
    except ImportError:
        uv = None
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "websockets": websockets.__version__,
        "uvloop": uv,
        "kernel": platform.release(),
    }


async def run_async(opts: argparse.Namespace) -> dict[str, Any]:
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    # Per N: the fork server on the emulated switch, then (--switch real) on the real one, then the baseline.
    # The bench's emulated switch has no jambonz module: a stream run is measured on the real switch only.
    points = [] if opts.transport == "stream" else [("voicefork", "emulated")]
    points += [("voicefork", "real")] if opts.switch == "real" else []
    points += [] if opts.no_baseline else [("relay", "emulated")]
    result: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": _machine(),
        "options": {k: v for k, v in vars(opts).items()},
        "profile": {"tts_duty": _profile(opts).duty, **_profile(opts).__dict__},
        "rows": [],
        "ratios": [],
    }
    p = _profile(opts)
    talk = (f"bot speaks {p.duty:.0%} of the time ({p.speech_s:g} s TTS every {p.period_s:g} s in {p.chunk_ms} ms chunks "
            f"every {p.chunk_every_ms} ms, every {p.bargein_every}th utterance cut by a barge-in after {p.bargein_after_s:g} s)"
            if p.speech_s else "silent bot (caller audio only)")
    print(f"capacity bench: switch={opts.switch} loop={opts.loop} workers={opts.workers} esl={opts.esl} transport={opts.transport} window={opts.window:g}s "
          f"spool={opts.work_dir}; {talk}; loadavg {loadavg()}", flush=True)
    print(LEGEND, flush=True)
    print(HEADER, flush=True)
    # The spool (TTS segment files) on tmpfs, as the README recommends: on this box's disk a
    # segment write costs ~1 ms against 16 us on tmpfs, and it runs on the event loop.
    with tempfile.TemporaryDirectory(prefix="voicefork-bench-", dir=opts.work_dir) as tmp:
        for n in opts.calls:
            by_kind = {}
            for kind, switch in points:
                work = Path(tmp) / f"{kind}-{switch}-{n}"
                work.mkdir()
                try:
                    row = await _point(kind, switch, n, opts, work)
                except Exception as exc:  # noqa: BLE001 - one broken point must not lose the others
                    row = {"server": kind, "switch": switch, "calls": n, "error": f"{type(exc).__name__}: {exc}"}
                if opts.keep_logs:
                    for log_file, name in ((work / f"{kind}.log", f"{kind}-{switch}-{n}.log"),
                                           (work / "log" / "freeswitch.log", f"freeswitch-{n}.log")):
                        if log_file.exists():
                            (out / name).write_bytes(log_file.read_bytes())
                for spy in work.glob("py-spy-*.txt"):
                    (out / spy.name).write_bytes(spy.read_bytes())
                result["rows"].append(row)
                by_kind[(kind, switch)] = row
                print(format_row(row) if "error" not in row else f"{kind:>9} {switch:>8} {n:>4} FAILED: {row['error'][:200]}",
                      flush=True)
            a, b = by_kind.get(("voicefork", "emulated"), {}), by_kind.get(("relay", "emulated"), {})
            if a and b and "error" not in a and "error" not in b:
                ratio = {
                    "calls": n,
                    "cpu_ratio": round(a["cpu_us_per_frame"] / b["cpu_us_per_frame"], 2)
                    if a["cpu_us_per_frame"] and b["cpu_us_per_frame"] else None,
                    "rss_per_call_ratio": round(a["rss_kb_per_call"] / b["rss_kb_per_call"], 2)
                    if b["rss_kb_per_call"] > 0 else None,
                }
                result["ratios"].append(ratio)
                print(f"{'':>9} {'':>8} {n:>4} voicefork/relay (emulated): CPU per frame x{ratio['cpu_ratio']}, "
                      f"RSS per call x{ratio['rss_per_call_ratio']}", flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"capacity-{stamp}.json"
    text = json.dumps(result, indent=1)
    path.write_text(text)
    (out / "capacity-latest.json").write_text(text)
    print(f"wrote {path}")
    print(plot.draw(result["rows"], out / "capacity.png", title=f"capacity, {result['started']}"))
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m testbed.bench.capacity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--switch", choices=("emulated", "real"), default="emulated",
                   help="emulated: the bench's lean emulated switch only (default); real: each N also through a real "
                        "FreeSWITCH (FREESWITCH_BIN; `just freeswitch` prints it), beside the emulated figures")
    p.add_argument("--calls", default=None,
                   help="comma-separated N (default 50,200,500,1000; with --switch real 20,50,100,200)")
    p.add_argument("--quick", action="store_true",
                   help="CI: N=20,50, 8 s windows (under 2 minutes in all); with --switch real: 4 calls, a 10 s window")
    p.add_argument("--window", type=float, default=15.0, help="measurement window, s")
    p.add_argument("--settle", type=float, default=2.0, help="wait after the last call is up, s")
    p.add_argument("--drain", type=float, default=1.0, help="wait after the audio stops before counting, s")
    p.add_argument("--ramp", type=float, default=200.0, help="new calls per second")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default=None, help="event loop of every process (default uvloop if installed)")
    p.add_argument("--workers", type=int, default=1, help="fork server worker processes (SO_REUSEPORT)")
    p.add_argument("--esl", choices=("python-esl", "asyncio", "python-esl-unguarded"), default="python-esl",
                   help="the fork server's ESL client (python-esl-unguarded: without the framing guard, for comparison)")
    p.add_argument("--no-baseline", action="store_true", help="skip the bare websockets relay")
    p.add_argument("--transport", choices=("file", "stream"), default="file",
                   help="playback.transport of the fork server; stream needs --switch real (the jambonz module "
                        "`just freeswitch` builds into mod-jambonz/)")
    p.add_argument("--ping-interval", type=float, default=None,
                   help="the connector's ping_interval, s (default: the config default, 0.5 s)")
    p.add_argument("--silent-bot", action="store_true", help="no TTS, marks or barge-ins: the caller path alone")
    p.add_argument("--first-tts-within", type=float, default=None,
                   help="each call's first utterance starts within this many s (default: the 5 s period)")
    p.add_argument("--py-spy", action="store_true", help="record a py-spy profile of the fork server in each window")
    p.add_argument("--py-spy-gil", action="store_true", help="with --py-spy: only samples that hold the GIL")
    p.add_argument("--log-level", default="INFO", help="fork server log level")
    p.add_argument("--keep-logs", action="store_true", help="copy the servers' (and FreeSWITCH's) logs to --out")
    p.add_argument("--esl-tap-calls", type=int, default=10,
                   help="calls whose ESL events are counted by a listener of our own (0: none; it costs the switch too)")
    p.add_argument("--no-jitter-buffer", default="", metavar="ROUTES",
                   help="comma-separated routes (bench16, bench8) whose rendered extension loses its jitter buffer, on "
                        "both switches: a playback start then blanks caller frames (testbed.bench.fsprobe)")
    p.add_argument("--fs-log-level", default=None,
                   help="--switch real: FreeSWITCH's core loglevel (default: its own, debug, as tests/freeswitch run it)")
    p.add_argument("--out", default=str(ROOT / "build" / "bench"))
    p.add_argument("--work-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                   help="where the spool and configs go (default /dev/shm: tmpfs, as recommended for the spool)")
    opts = p.parse_args(argv)
    opts.fs_bin = None
    if opts.switch == "real":
        try:
            opts.fs_bin = freeswitch_bin()
        except MissingSwitch as exc:
            p.exit(2, f"capacity: --switch real: {exc}\n")
    if opts.transport == "stream" and opts.switch != "real":
        p.error("--transport stream needs --switch real (the bench's emulated switch has no jambonz module)")
    if opts.quick:
        opts.window, opts.settle = (10.0, 1.0) if opts.switch == "real" else (8.0, 1.0)
        opts.calls = opts.calls or ("4" if opts.switch == "real" else "20,50")
    opts.calls = opts.calls or ("20,50,100,200" if opts.switch == "real" else "50,200,500,1000")
    opts.calls = [int(x) for x in str(opts.calls).split(",") if x]
    opts.no_jitter_buffer = [r for r in opts.no_jitter_buffer.split(",") if r]
    unknown = set(opts.no_jitter_buffer) - {r.name for r in benchconf.ROUTES}
    if unknown:
        p.error(f"--no-jitter-buffer: no route {sorted(unknown)} (the bench's are {[r.name for r in benchconf.ROUTES]})")
    if opts.loop is None:
        try:
            import uvloop  # noqa: F401

            opts.loop = "uvloop"
        except ImportError:
            opts.loop = "asyncio"
    return opts


def run(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse_args(argv)
    _raise_nofile()
    if opts.loop == "uvloop":
        import uvloop

        return uvloop.run(run_async(opts))
    return asyncio.run(run_async(opts))


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
