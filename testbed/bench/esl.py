"""ESL client cost: CPU µs per command and per event, and latency, for each ESL client.

Clients: the default ``EslClient`` (commands through python-ESL behind the framing guard,
events on the event loop by ``esl_async.EslEvents``), python-ESL connected directly for both
(``EslClient(guard=False)``, the old path, for comparison) and the asyncio client
(``--esl asyncio``). The switch is :class:`testbed.freeswitch.esl_server.EslServer` in a
process of its own, so the CPU figures (``time.process_time``: every thread of this process)
are the client's alone. Per client: ``api status`` one at a time (round trip, CPU per
command), then events at a steady rate, "lean" (the capacity bench's ~30 headers, ~1.3 KB)
and "full" (~120 headers with URL-encoded SDP, ~5 KB, closer to a real switch), each carrying
its send time (CLOCK_MONOTONIC is shared by the processes). Best of three runs (CPU); the
latencies are from that run. Also, in-process on the same events: what the event link runs on
each (EslReader + ``esl_messages.parse_plain``) and the guard's check it no longer runs on them.

Run: ``python -m testbed.bench.esl [--commands N] [--events N] [--rate R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import time
import timeit
from typing import Any, Callable, Mapping

__all__ = ["main"]

U = "3f1a2b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
PASSWORD = "bench-esl"


def _headers(kind: str) -> dict[str, str]:
    h = {
        "Event-Name": "PLAYBACK_START", "Core-UUID": "9d4f2c1e-0000-4000-8000-000000000001",
        "FreeSWITCH-Hostname": "bench", "FreeSWITCH-Switchname": "bench", "FreeSWITCH-IPv4": "127.0.0.1",
        "Event-Date-Local": "2024-05-01 12:00:00", "Event-Date-GMT": "Wed, 01 May 2024 12:00:00 GMT",
        "Event-Date-Timestamp": "1714564800000000", "Event-Calling-File": "switch_ivr_play_say.c",
        "Event-Calling-Function": "switch_ivr_play_file", "Event-Calling-Line-Number": "1483", "Event-Sequence": "1",
        "Channel-State": "CS_EXECUTE", "Channel-Call-State": "ACTIVE", "Channel-Name": "sofia/external/+15550001111@127.0.0.1",
        "Unique-ID": U, "Call-Direction": "inbound", "Answer-State": "answered",
        "Channel-Read-Codec-Name": "PCMU", "Channel-Read-Codec-Rate": "8000", "Channel-Write-Codec-Name": "PCMU",
        "Channel-Write-Codec-Rate": "8000", "Caller-Caller-ID-Number": "+15550001111", "Caller-Caller-ID-Name": "Bench 1",
        "Caller-Destination-Number": "+15551234567", "Caller-Unique-ID": U, "Caller-Context": "public",
        "variable_voicefork_route": "support",
    }
    if kind == "full":
        sdp = ("v=0\r\no=FreeSWITCH 1714550000 1714550001 IN IP4 127.0.0.1\r\ns=FreeSWITCH\r\nc=IN IP4 127.0.0.1\r\n"
               "t=0 0\r\nm=audio 16384 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
               "a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n")
        h.update({f"variable_sip_h_X-Bench-{i}": f"value {i}; tag=abc{i}" for i in range(40)})
        h.update({f"variable_bench_var_{i}": f"/usr/share/freeswitch/sounds/en/us/callie/ivr/8000/file_{i}.wav"
                  for i in range(40)})
        h.update({"variable_switch_r_sdp": sdp, "variable_rtp_local_sdp_str": sdp,
                  "variable_sip_full_via": "SIP/2.0/UDP 127.0.0.1:5080;rport=5080;branch=z9hG4bK-1"})
    return h


# ---------------------------------------------------------------------------- the switch (its own process)


class _Core:
    def __init__(self) -> None:
        self.listeners: list[Callable[[Mapping[str, str], str | None], None]] = []

    def subscribe(self, listener: Callable[[Mapping[str, str], str | None], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener) if listener in self.listeners else None

    def sendmsg(self, uuid: str, headers: Mapping[str, str], body: str | None) -> str:
        return "+OK"

    def api(self, command: str, args: str) -> str:
        if command == "bench_emit":
            n, rate, kind = args.split()
            asyncio.get_running_loop().create_task(self._emit(int(n), float(rate), kind))
        return "+OK\n"

    async def _emit(self, n: int, rate: float, kind: str) -> None:
        base, loop = _headers(kind), asyncio.get_running_loop()
        start = loop.time()
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            h = dict(base, **{"Event-Sequence": str(i), "Playback-File-Path": f"/spool/b/{time.monotonic():.6f}.r8"})
            for listener in list(self.listeners):
                listener(h, None)


async def _serve() -> None:
    from testbed.freeswitch.esl_server import EslServer

    server = EslServer(_Core(), PASSWORD)
    await server.start()
    print(server.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await server.close()


# ---------------------------------------------------------------------------- the client (this process)


def _client(kind: str, port: int, on_event: Callable[[Any], None]) -> Any:
    common = dict(on_event=on_event, event_names=["PLAYBACK_START"], filters=[("variable_voicefork_route", "support")],
                  logger=logging.getLogger("bench.esl"))
    if kind == "asyncio":
        from fork_server.esl_async import AsyncEslClient

        return AsyncEslClient("127.0.0.1", port, PASSWORD, **common)
    from fork_server.esl_client import EslClient

    return EslClient("127.0.0.1", port, PASSWORD, guard=kind == "default", **common)


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def _run(kind: str, port: int, n_cmd: int, n_evt: int, rate: float) -> dict[str, float]:
    got: list[float] = []
    client = _client(kind, port, lambda ev: got.append(time.monotonic() - float(ev.path.rsplit("/", 1)[1][:-3])))
    await client.start()
    if not await client.wait_up(10):
        raise SystemExit(f"{kind}: ESL did not come up")
    out: dict[str, float] = {}
    try:
        for _ in range(200):  # warm up
            await client.api("status")
        rtt, cpu = [], time.process_time()
        for _ in range(n_cmd):
            t = time.monotonic()
            await client.api("status")
            rtt.append(time.monotonic() - t)
        out["cmd_cpu_us"] = (time.process_time() - cpu) / n_cmd * 1e6
        out["cmd_p50_us"], out["cmd_p99_us"] = _pct(rtt, 0.5) * 1e6, _pct(rtt, 0.99) * 1e6
        for size in ("lean", "full"):
            got.clear()
            cpu, wall = time.process_time(), time.monotonic()
            await client.api(f"bench_emit {n_evt} {rate} {size}")
            deadline = time.monotonic() + n_evt / rate + 10
            while len(got) < n_evt and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if len(got) < n_evt:
                raise SystemExit(f"{kind}: {len(got)} of {n_evt} events arrived")
            # The command that started it and the wait loop are in the figure too: the same for every client.
            out[f"{size}_cpu_us"] = (time.process_time() - cpu) / n_evt * 1e6
            out[f"{size}_core_pct"] = (time.process_time() - cpu) / (time.monotonic() - wall) * 100
            out[f"{size}_p50_us"], out[f"{size}_p99_us"] = _pct(got, 0.5) * 1e6, _pct(got, 0.99) * 1e6
    finally:
        await client.close()
    return out


def _in_process_us() -> dict[str, float]:
    from fork_server import esl_messages as em
    from fork_server.esl_wire import EslReader, python_esl_verdict
    from testbed.freeswitch.esl_server import serialize_event

    out = {}
    for size in ("lean", "full"):
        wire = serialize_event(dict(_headers(size), **{"Playback-File-Path": "/spool/b/1.000000.r8"}), None)
        reader = EslReader()

        def read() -> None:
            for frame in reader.feed(wire):
                em.parse_plain(frame.body)  # type: ignore[arg-type]

        def check() -> None:
            for frame in reader.feed(wire):
                python_esl_verdict(frame, events=True)

        n = 20000
        out[f"{size}_read"] = min(timeit.repeat(read, number=n, repeat=3)) / n * 1e6
        out[f"{size}_check"] = min(timeit.repeat(check, number=n, repeat=3)) / n * 1e6
        out[f"{size}_bytes"] = len(wire)
    return out


async def _bench(args: argparse.Namespace) -> None:
    kinds = ["default", "python-esl (direct)", "asyncio"]
    server = subprocess.Popen([sys.executable, "-m", "testbed.bench.esl", "--serve"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        port = int(server.stdout.readline())  # type: ignore[union-attr]
        rows = {}
        for kind in kinds:
            runs = [await _run(kind, port, args.commands, args.events, args.rate) for _ in range(args.repeat)]
            best = {k: min(r[k] for r in runs) if k.endswith("cpu_us") or k.endswith("core_pct")
                    else statistics.median(r[k] for r in runs) for k in runs[0]}
            rows[kind] = best
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(10)
    chk = _in_process_us()
    print(f"ESL clients on {args.loop} ({args.commands} api commands one at a time; {args.events} events at {args.rate:g}/s; "
          f"CPU best of {args.repeat}, latency medians of the runs; this process only, the switch runs apart)")
    print(f"{'client':22} {'µs CPU/cmd':>10} {'cmd RTT p50/p99 µs':>19} | {'lean µs/evt':>11} {'p50/p99 µs':>13} "
          f"{'% core':>6} | {'full µs/evt':>11} {'p50/p99 µs':>13} {'% core':>6}")
    for kind, r in rows.items():
        print(f"{kind:22} {r['cmd_cpu_us']:10.0f} {r['cmd_p50_us']:9.0f}/{r['cmd_p99_us']:<9.0f} | "
              f"{r['lean_cpu_us']:11.0f} {r['lean_p50_us']:6.0f}/{r['lean_p99_us']:<6.0f} {r['lean_core_pct']:6.1f} | "
              f"{r['full_cpu_us']:11.0f} {r['full_p50_us']:6.0f}/{r['full_p99_us']:<6.0f} {r['full_core_pct']:6.1f}")
    g, d = rows["default"], rows["python-esl (direct)"]
    print(f"guard adds: {g['cmd_cpu_us'] - d['cmd_cpu_us']:+.0f} µs CPU and {g['cmd_p50_us'] - d['cmd_p50_us']:+.0f} µs "
          f"(p50) per command; events on the loop instead of python-ESL's thread: "
          f"{g['lean_cpu_us'] - d['lean_cpu_us']:+.0f} / {g['full_cpu_us'] - d['full_cpu_us']:+.0f} µs CPU per lean / full event")
    print(f"event read alone (EslReader + parse_plain): {chk['lean_read']:.1f} µs per lean event ({chk['lean_bytes']} B), "
          f"{chk['full_read']:.1f} µs per full event ({chk['full_bytes']} B); the guard's check, no longer run on "
          f"events: {chk['lean_check']:.1f} / {chk['full_check']:.1f} µs")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.bench.esl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--commands", type=int, default=2000)
    p.add_argument("--events", type=int, default=3000)
    p.add_argument("--rate", type=float, default=1000.0, help="events per second")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default=None, help="this process's event loop (default uvloop if installed)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        asyncio.run(_serve())
        return 0
    if args.loop is None:
        try:
            import uvloop  # noqa: F401

            args.loop = "uvloop"
        except ImportError:
            args.loop = "asyncio"
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(_bench(args))
    else:
        asyncio.run(_bench(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
