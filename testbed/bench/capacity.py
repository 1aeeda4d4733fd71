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

from . import load as ld
from .procstat import ProcTree, loadavg, machine_cpu

__all__ = ["main", "run", "FIELDS"]

ROOT = Path(__file__).resolve().parents[2]
ROUTES = [("bench16", 16000), ("bench8", 8000)]
ESL_PASSWORD = "bench-esl-secret"
FORK_AUTH = ("freeswitch", "bench-fork-secret")

# Every result row has these keys (the smoke test checks them).
FIELDS = (
    "server", "calls", "calls_up", "window_s", "cpu_percent", "cpu_system_percent", "cpu_us_per_frame", "rss_kb_idle", "rss_kb",
    "rss_kb_per_call", "latency_ms", "latency16_ms", "latency8_ms", "tts_latency_ms", "frames_sent",
    "frames_received", "frames_lost", "frames_late", "frames_in_window", "ts_mismatch", "esl_commands_per_s",
    "segments", "bot_speaking_percent", "marks_sent", "marks_back", "clears", "load_cpu_percent",
    "machine_busy_percent", "loadavg_before", "loadavg_after", "gen_lag_max_ms", "merged_sends", "killed_by_server",
)

CONFIG = """\
freeswitch:
  esl_host: 127.0.0.1
  esl_port: {esl_port}
  esl_password_env: BENCH_ESL_PASSWORD
  temp_dir: {tmp}
fork_server:
  public_url: ws://127.0.0.1:8099
  listen_host: 127.0.0.1
  listen_port: 8099
  auth:
    username: {user}
    password_env: BENCH_FORK_PASSWORD
  drain_timeout: 5s
connectors:
  bench:
    url: {connector}
    connect_timeout: 5s
{ping}defaults:
  connector: bench
  language: en-US
  fallback:
    action: hangup
routes:
  - name: bench16
    number: "+15550000016"
    rate: 16k
  - name: bench8
    number: "+15550000008"
    rate: 8k
playback:
  spool_dir: {spool}
  freeswitch_spool_dir: {spool}
  command: sendmsg
  transport: file
"""


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else (shutil.which("py-spy") or "py-spy")


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Server:
    """The process under test: the fork server or the baseline relay."""

    def __init__(self, kind: str, gen: ld.LoadGen, work: Path, opts: argparse.Namespace) -> None:
        self.kind, self.gen, self.work, self.opts = kind, gen, work, opts
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = work / f"{kind}.log"

    def _argv(self) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        loop = ["--uvloop"] if self.opts.loop == "uvloop" else []
        if self.kind == "relay":
            return [sys.executable, "-m", "testbed.bench.relay", "--connector", self.gen.connector_url(), *loop], env
        spool = self.work / "spool"
        spool.mkdir(exist_ok=True)
        cfg = self.work / "voicefork-bench.yaml"
        cfg.write_text(
            CONFIG.format(
                esl_port=self.gen.esl_port,
                tmp=self.work,
                user=FORK_AUTH[0],
                connector=self.gen.connector_url(),
                spool=spool,
                ping=f"    ping_interval: {self.opts.ping_interval}s\n" if self.opts.ping_interval else "",
            )
        )
        env.update(BENCH_ESL_PASSWORD=ESL_PASSWORD, BENCH_FORK_PASSWORD=FORK_AUTH[1])
        argv = [sys.executable, "-m", "fork_server", "--config", str(cfg), "--port", "0", "--log-level", self.opts.log_level, *loop]
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
        """The fork server's counters worth reporting (dropped frames, errors), from /metrics."""
        if self.kind != "voicefork":
            return {}
        text = self._http("/metrics") or ""
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            m = re.match(r"(voicefork_(?:connector_frames_dropped|errors|fork_rejected)_total)(\{[^}]*\})? ([0-9.e+]+)", line)
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


async def _point(kind: str, n: int, opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    gen = ld.LoadGen(esl_password=ESL_PASSWORD, first_tts_within_s=opts.first_tts_within, tts=_profile(opts))
    await gen.start()
    server = Server(kind, gen, work, opts)
    me = ProcTree(os.getpid(), children=False)  # the load side alone, not the server it spawned
    try:
        await server.start()
        tree = ProcTree(server.proc.pid)  # type: ignore[union-attr]
        rss_idle = tree.rss_kb()
        try:
            await asyncio.wait_for(
                gen.place_calls(n, "127.0.0.1", server.port, routes=ROUTES, auth=FORK_AUTH, ramp_per_s=opts.ramp),
                timeout=n / opts.ramp + 30,
            )
        except TimeoutError:
            gen.failed.append("ramp: some forks did not connect within the ramp + 30 s")
        deadline = time.monotonic() + 15
        while gen.connected < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(opts.settle)
        if opts.py_spy and kind == "voicefork":
            spy = subprocess.Popen(
                [_py_spy(), "record", "-p", str(server.proc.pid), "-d", str(int(opts.window)), "-r", "200",  # type: ignore[union-attr]
                 "-f", "raw", "-o", str(work / f"py-spy-{n}.txt"), "--subprocesses", "--nonblocking",
                 *(["--gil"] if opts.py_spy_gil else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        la0 = loadavg()
        (u0, s0), me0, (busy0, _), th0 = tree.cpu_split(), me.cpu_seconds(), machine_cpu(), tree.thread_cpu()
        t0 = time.monotonic()
        gen.rec.reset()
        gen.rec.on = True
        await asyncio.sleep(opts.window)
        gen.rec.on = False
        wall = time.monotonic() - t0
        (u1, s1), me1, (busy1, _), th1 = tree.cpu_split(), me.cpu_seconds(), machine_cpu(), tree.thread_cpu()
        rss = tree.rss_kb()
        pss = tree.pss_kb() if opts.workers > 1 and kind == "voicefork" else None
        threads = tree.threads()
        la1 = loadavg()
        # Stop the caller audio, let what is in flight arrive, then count what never did.
        gen.audio_on = False
        await asyncio.sleep(opts.drain)
        totals = gen.totals()
        counters = server.metrics()
        gen.hangup_all()
        still_open = await gen.wait_closed(10)
        await asyncio.sleep(0.3)
        if opts.py_spy and kind == "voicefork":
            spy.wait(30)
    finally:
        code = await server.stop()
        await gen.close()
    rec = gen.rec
    cpu = (u1 - u0) + (s1 - s0)
    frames = rec.frames_in_window
    lat_all = array("q", rec.lat16)
    lat_all.extend(rec.lat8)
    machine_busy = (busy1 - busy0) / wall * 100  # percent of one core, all cores summed
    row: dict[str, Any] = {
        "server": kind,
        "calls": n,
        "calls_up": totals["connector_started"],
        "window_s": round(wall, 2),
        "cpu_percent": round(cpu / wall * 100, 1),
        "cpu_us_per_frame": round(cpu / frames * 1e6, 1) if frames else None,
        "cpu_system_percent": round((s1 - s0) / wall * 100, 1),
        "cpu_ms_per_call_s": round(cpu / wall / n * 1000, 3),
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
        "esl_commands_per_s": round(rec.esl_commands / wall, 1),
        "esl_by_kind": dict(rec.esl_by_kind),
        "segments": rec.segments,
        "bot_speaking_percent": round(rec.played_ms / 1000 / wall / n * 100, 1),
        "tts_sent_ms": rec.tts_sent_ms,
        "breaks": rec.breaks,
        "marks_sent": totals["marks_sent"],
        "marks_back": totals["marks_back"],
        "clears": totals["clears"],
        "load_cpu_percent": round((me1 - me0) / wall * 100, 1),
        "machine_busy_percent": round(machine_busy, 1),
        "other_cpu_percent": round(machine_busy - (cpu + me1 - me0) / wall * 100, 1),
        "loadavg_before": la0,
        "loadavg_after": la1,
        "gen_lag_max_ms": round(rec.gen_lag_max_ns / 1e6, 2),
        "merged_sends": rec.merged_sends,
        "killed_by_server": totals["killed_by_server"],
        "forks_open_failed": totals["forks_open_failed"],
        "forks_still_open": still_open,
        "server_exit": code,
        "server_counters": counters,
    }
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
    f"{'server':>9} {'N':>5} {'up':>5} {'CPU%':>6} {'sys%':>5} {'us/fr':>6} {'KB/call':>7} {'p50ms':>6} {'p99ms':>6} {'maxms':>7} "
    f"{'tts50':>6} {'tts99':>6} {'lost':>6} {'late':>6} {'ESL/s':>6} {'spk%':>5} {'load%':>6} {'other%':>6}"
)


def format_row(r: dict[str, Any]) -> str:
    lat, tts = r["latency_ms"], r["tts_latency_ms"]
    return " ".join(
        [
            _fmt(r["server"], 9), _fmt(r["calls"], 5), _fmt(r["calls_up"], 5), _fmt(r["cpu_percent"], 6),
            _fmt(r["cpu_system_percent"], 5), _fmt(r["cpu_us_per_frame"], 6), _fmt(r["rss_kb_per_call"], 7), _fmt(lat["p50"], 6, 2),
            _fmt(lat["p99"], 6, 2), _fmt(lat["max"], 7, 1), _fmt(tts["p50"], 6, 1), _fmt(tts["p99"], 6, 1),
            _fmt(r["frames_lost"], 6), _fmt(r["frames_late"], 6), _fmt(r["esl_commands_per_s"], 6),
            _fmt(r["bot_speaking_percent"], 5), _fmt(r["load_cpu_percent"], 6), _fmt(r["other_cpu_percent"], 6),
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
    kinds = ["voicefork"] + ([] if opts.no_baseline else ["relay"])
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
    print(f"capacity bench: loop={opts.loop} workers={opts.workers} esl={opts.esl} window={opts.window:g}s spool={opts.work_dir}; "
          f"{talk}; loadavg {loadavg()}", flush=True)
    print(HEADER, flush=True)
    # The spool (TTS segment files) on tmpfs, as the README recommends: on this box's disk a
    # segment write costs ~1 ms against 16 us on tmpfs, and it runs on the event loop.
    with tempfile.TemporaryDirectory(prefix="voicefork-bench-", dir=opts.work_dir) as tmp:
        for n in opts.calls:
            by_kind = {}
            for kind in kinds:
                work = Path(tmp) / f"{kind}-{n}"
                work.mkdir()
                try:
                    row = await _point(kind, n, opts, work)
                except Exception as exc:  # noqa: BLE001 - one broken point must not lose the others
                    row = {"server": kind, "calls": n, "error": f"{type(exc).__name__}: {exc}"}
                if opts.keep_logs and (work / f"{kind}.log").exists():
                    (out / f"{kind}-{n}.log").write_bytes((work / f"{kind}.log").read_bytes())
                for spy in work.glob("py-spy-*.txt"):
                    (out / spy.name).write_bytes(spy.read_bytes())
                result["rows"].append(row)
                by_kind[kind] = row
                print(format_row(row) if "error" not in row else f"{kind:>9} {n:>5} FAILED: {row['error'][:200]}", flush=True)
            if "relay" in by_kind and "error" not in by_kind["relay"] and "error" not in by_kind["voicefork"]:
                a, b = by_kind["voicefork"], by_kind["relay"]
                ratio = {
                    "calls": n,
                    "cpu_ratio": round(a["cpu_us_per_frame"] / b["cpu_us_per_frame"], 2)
                    if a["cpu_us_per_frame"] and b["cpu_us_per_frame"] else None,
                    "rss_per_call_ratio": round(a["rss_kb_per_call"] / b["rss_kb_per_call"], 2)
                    if b["rss_kb_per_call"] > 0 else None,
                }
                result["ratios"].append(ratio)
                print(f"{'':>9} {n:>5} voicefork/relay: CPU per frame x{ratio['cpu_ratio']}, RSS per call x{ratio['rss_per_call_ratio']}", flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"capacity-{stamp}.json"
    text = json.dumps(result, indent=1)
    path.write_text(text)
    (out / "capacity-latest.json").write_text(text)
    print(f"wrote {path}")
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m testbed.bench.capacity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", default="50,200,500,1000", help="comma-separated N (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="CI: N=20,50, 8 s windows (under 2 minutes in all)")
    p.add_argument("--window", type=float, default=15.0, help="measurement window, s")
    p.add_argument("--settle", type=float, default=2.0, help="wait after the last call is up, s")
    p.add_argument("--drain", type=float, default=1.0, help="wait after the audio stops before counting, s")
    p.add_argument("--ramp", type=float, default=200.0, help="new calls per second")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default=None, help="event loop of every process (default uvloop if installed)")
    p.add_argument("--workers", type=int, default=1, help="fork server worker processes (SO_REUSEPORT)")
    p.add_argument("--esl", choices=("python-esl", "asyncio", "python-esl-unguarded"), default="python-esl",
                   help="the fork server's ESL client (python-esl-unguarded: without the framing guard, for comparison)")
    p.add_argument("--no-baseline", action="store_true", help="skip the bare websockets relay")
    p.add_argument("--ping-interval", type=float, default=None,
                   help="the connector's ping_interval, s (default: the config default, 0.5 s)")
    p.add_argument("--silent-bot", action="store_true", help="no TTS, marks or barge-ins: the caller path alone")
    p.add_argument("--first-tts-within", type=float, default=None,
                   help="each call's first utterance starts within this many s (default: the 5 s period)")
    p.add_argument("--py-spy", action="store_true", help="record a py-spy profile of the fork server in each window")
    p.add_argument("--py-spy-gil", action="store_true", help="with --py-spy: only samples that hold the GIL")
    p.add_argument("--log-level", default="INFO", help="fork server log level")
    p.add_argument("--keep-logs", action="store_true", help="copy the servers' logs to --out")
    p.add_argument("--out", default=str(ROOT / "build" / "bench"))
    p.add_argument("--work-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                   help="where the spool and configs go (default /dev/shm: tmpfs, as recommended for the spool)")
    opts = p.parse_args(argv)
    if opts.quick:
        opts.calls, opts.window, opts.settle = "20,50", 8.0, 1.0
    opts.calls = [int(x) for x in str(opts.calls).split(",") if x]
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
