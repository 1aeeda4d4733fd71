"""Churn: calls starting and ending for a while at a fixed concurrency, watching for growth (issue 6).

Each call goes through the whole stack (emulated switch running the rendered dialplan, real
ESL wire, the real fork server in this process, the script connector). The bot answers and
hangs up after its answer; about half the callers hang up first, mid-playback, at a random
moment, and every seventh caller barges in. New calls are placed as others end, so ``concurrent``
calls are live all the time.

Every ``sample_s`` it samples what must not grow: asyncio tasks, open fds, threads, RSS, files
in the spool, and the fork server's live calls. "No growth" is judged two ways:

* steady state: after ``warmup_s`` (allocator and caches settle), the median of the first
  half of the samples against the median of the second half (same load, so about the same
  number of live calls); RSS also as a slope per 1000 calls;
* idle: before the first call against after the last call has ended and been torn down, and
  after that once more after glibc's ``malloc_trim(0)`` (memory freed but kept by the
  allocator is given back: what is left is in use).

``--esl asyncio`` runs the fork server with its asyncio ESL client instead of python-ESL.
python-ESL as built by ``just bootstrap`` has a 128 KiB receive buffer per connection; the
stock 1.4.18 build's 6.5 MB one filled up with the bytes received, which was the ~1.9 MB per
1000 calls this churn showed (see the justfile's bootstrap).

``python -m testbed.churn --seconds 600 --concurrent 100`` is ``just chaos``; the CI test runs
a short one (tests/chaos/test_churn.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .speech import CALLER_BARGEIN, load_wav
from .stack import Stack, malloc_trim

__all__ = ["Sample", "ChurnReport", "churn", "main"]

NUMBERS = ("+15551234567", "+15557654321")  # support (16k fork) and sales (8k fork) in config/voicefork.yaml


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    live_calls: int
    tasks: int
    fds: int
    threads: int
    rss: int
    spool_files: int


@dataclass
class ChurnReport:
    seconds: float
    concurrent: int
    warmup_s: float = 0.0
    placed: int = 0
    ended: int = 0
    by_caller: int = 0
    by_bot: int = 0
    stuck: int = 0  # calls still up long after they should have ended
    idle_before: Sample | None = None
    idle_after: Sample | None = None
    idle_settle_s: float = 0.0  # from the last call's teardown to the idle_after sample
    idle_trimmed: Sample | None = None  # idle_after, then glibc malloc_trim(0): freed memory given back
    samples: list[Sample] = field(default_factory=list)
    ended_at: list[tuple[float, int]] = field(default_factory=list)  # (t, calls ended so far) per sample
    cpu_s: float = 0.0
    fork_server_cpu_s: float | None = None

    def _steady_samples(self) -> list[Sample]:
        return [x for x in self.samples if x.t >= self.warmup_s] or self.samples

    def steady(self) -> tuple[Sample, Sample]:
        """Medians of the first and second half of the samples after the warm-up."""
        s = self._steady_samples()
        return _median(s[: max(1, len(s) // 2)]), _median(s[len(s) // 2 :])

    def rss_kib_per_1000_calls(self, since_s: float | None = None) -> float:
        """Least-squares slope of RSS against calls ended, after the warm-up (or ``since_s``), in
        KiB per 1000 calls. A leak keeps its slope; memory that fills up once (caches, the
        allocator's high-water mark) has a smaller one late in the run."""
        t0 = self.warmup_s if since_s is None else since_s
        pts = [(n, x.rss) for (t, n), x in zip(self.ended_at, self.samples) if x.t >= t0]
        if len(pts) < 3:
            return float("nan")
        mx = statistics.fmean(p[0] for p in pts)
        my = statistics.fmean(p[1] for p in pts)
        den = sum((p[0] - mx) ** 2 for p in pts)
        return (sum((p[0] - mx) * (p[1] - my) for p in pts) / den * 1000 / 1024) if den else float("nan")

    def _second_half_s(self) -> float:
        s = self._steady_samples()
        return s[len(s) // 2].t if s else self.warmup_s

    def growth(self) -> dict[str, float]:
        a, b = self.steady()
        assert self.idle_before is not None and self.idle_after is not None
        i, j = self.idle_before, self.idle_after
        return {
            "steady_tasks": b.tasks - a.tasks,
            "steady_fds": b.fds - a.fds,
            "steady_threads": b.threads - a.threads,
            "steady_rss_mb": (b.rss - a.rss) / 1e6,
            "steady_spool_files": b.spool_files - a.spool_files,
            "idle_tasks": j.tasks - i.tasks,
            "idle_fds": j.fds - i.fds,
            "idle_threads": j.threads - i.threads,
            "idle_spool_files": j.spool_files - i.spool_files,
            "idle_rss_mb": (j.rss - i.rss) / 1e6,
        }

    def text(self) -> str:
        g = self.growth()
        a, b = self.steady()
        cpu = f"CPU {self.cpu_s:.0f} s here" + (
            f", {self.fork_server_cpu_s:.0f} s in the fork server" if self.fork_server_cpu_s is not None else "")
        lines = [
            f"churn: {self.seconds:.0f} s at {self.concurrent} concurrent: {self.placed} calls placed, "
            f"{self.ended} ended ({self.by_caller} by the caller, {self.by_bot} by the bot), {self.stuck} stuck; {cpu}",
            f"  steady state (after {self.warmup_s:.0f} s warm-up, 1st half -> 2nd half): live {a.live_calls} -> {b.live_calls}, tasks {a.tasks} -> "
            f"{b.tasks}, fds {a.fds} -> {b.fds}, threads {a.threads} -> {b.threads}, RSS {a.rss / 1e6:.1f} -> "
            f"{b.rss / 1e6:.1f} MB, spool files {a.spool_files} -> {b.spool_files}",
            f"  idle (before -> after): tasks {self.idle_before.tasks} -> {self.idle_after.tasks}, fds "  # type: ignore[union-attr]
            f"{self.idle_before.fds} -> {self.idle_after.fds}, threads {self.idle_before.threads} -> "  # type: ignore[union-attr]
            f"{self.idle_after.threads}, RSS {self.idle_before.rss / 1e6:.1f} -> {self.idle_after.rss / 1e6:.1f} MB, "  # type: ignore[union-attr]
            f"spool files {self.idle_before.spool_files} -> {self.idle_after.spool_files}"  # type: ignore[union-attr]
            + (f"; after malloc_trim(0) RSS {self.idle_trimmed.rss / 1e6:.1f} MB" if self.idle_trimmed else ""),
            "  growth: " + ", ".join(f"{k}={v:+.1f}" if isinstance(v, float) else f"{k}={v:+d}" for k, v in g.items()),
            f"  RSS slope after warm-up: {self.rss_kib_per_1000_calls():+.0f} KiB per 1000 calls "
            f"({self.rss_kib_per_1000_calls(self._second_half_s()):+.0f} in the 2nd half), of the "
            + ("fork server process" if self.fork_server_cpu_s is not None else "whole test process"),
        ]
        return "\n".join(lines)


def _median(samples: list[Sample]) -> Sample:
    def med(name: str) -> Any:
        return int(statistics.median(getattr(s, name) for s in samples))

    return Sample(samples[-1].t, *(med(n) for n in ("live_calls", "tasks", "fds", "threads", "rss", "spool_files")))


def _prune(stack: Stack, ch: Any) -> None:
    if ch in stack.switch.ended:
        stack.switch.ended.remove(ch)
    rec = stack.connector.calls.pop(ch.uuid, None)
    stack.connector.connections[:] = [r for r in stack.connector.connections if r.uuid != ch.uuid and r is not rec]


def _rss(pid: int | None = None) -> int:
    with open(f"/proc/{pid or 'self'}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _sample(stack: Stack, t0: float) -> Sample:
    if stack.app is not None:  # in this process: the emulator and the connector are counted too
        return Sample(
            round(time.monotonic() - t0, 1),
            len(stack.app.calls),
            len(asyncio.all_tasks()),
            len(os.listdir("/proc/self/fd")),
            threading.active_count(),
            _rss(),
            len(stack.spool_files()),
        )
    pid = stack.fork_pid  # the fork server alone, in its own process
    with open(f"/proc/{pid}/status") as f:
        threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    return Sample(
        round(time.monotonic() - t0, 1),
        len(await stack.live_calls()),
        await _process_tasks(stack),
        len(os.listdir(f"/proc/{pid}/fd")),
        threads,
        _rss(pid),
        len(stack.spool_files()),
    )


async def _process_tasks(stack: Stack) -> int:
    """testbed.fork_process answers SIGUSR1 with a ``TASKS <n>`` line on stdout."""
    assert stack.proc is not None and stack.proc.stdout is not None
    stack.proc.send_signal(signal.SIGUSR1)
    line = await asyncio.wait_for(stack.proc.stdout.readline(), 5)
    return int(line.split()[1]) if line.startswith(b"TASKS ") else -1


async def _trim(stack: Stack) -> bool:
    """malloc_trim(0) in the fork server (testbed.fork_process answers SIGUSR2 with ``TRIMMED <0|1>``)."""
    if stack.proc is None:
        return malloc_trim()
    assert stack.proc.stdout is not None
    stack.proc.send_signal(signal.SIGUSR2)
    line = await asyncio.wait_for(stack.proc.stdout.readline(), 5)
    return line.strip() == b"TRIMMED 1"


async def churn(
    seconds: float,
    concurrent: int,
    *,
    sample_s: float = 2.0,
    seed: int = 6,
    warmup_s: float | None = None,
    fork_server: str = "process",
    esl: str = "python-esl",
    progress: Callable[[str], None] | None = None,
) -> ChurnReport:
    rng = random.Random(seed)
    report = ChurnReport(seconds, concurrent, warmup_s=min(30.0, seconds / 4) if warmup_s is None else warmup_s)
    bargein = load_wav(CALLER_BARGEIN, 8000)
    opts = {"bargein": True, "rate": 24000, "speed": 3.0, "answer_delay_ms": 100, "mark_every_ms": 1000,
            "hangup_after_playback": True}
    # store_audio off and every finished call pruned from the testbed's own records, so what is
    # measured is the fork server (and the emulator's live state), not the test's history.
    async with Stack(connector_mode="script", connector_options={**opts, "store_audio": False},
                     fork_server=fork_server, esl=esl) as stack:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        cpu0 = time.process_time()
        report.idle_before = await _sample(stack, t0)
        live: set[asyncio.Task[None]] = set()

        async def one_call(i: int) -> None:
            ch = stack.switch.place_call(NUMBERS[i % 2], f"+1555{i % 10_000_000:07d}", f"Churn {i}")
            report.placed += 1
            hang_after = rng.uniform(1.0, 6.0) if rng.random() < 0.5 else None
            if i % 7 == 0:  # a barge-in: the bot stops and waits, so the caller ends the call
                loop.call_later(rng.uniform(0.8, 1.5), lambda: ch.alive and ch.say(bargein))
                hang_after = rng.uniform(2.0, 6.0)
            try:
                await asyncio.wait_for(ch.hungup.wait(), hang_after if hang_after is not None else 20.0)
                report.by_bot += 1
            except TimeoutError:
                if hang_after is None:
                    report.stuck += 1
                else:
                    report.by_caller += 1
                ch.hangup()
            report.ended += 1
            await asyncio.sleep(1.0)  # let the fork server and the connector finish with it
            _prune(stack, ch)

        end = loop.time() + seconds
        next_sample = loop.time() + sample_s
        i = 0
        while loop.time() < end:
            started = 0
            while len(live) < concurrent and started < 10:  # spread the starts: 10 per 50 ms at most
                task = loop.create_task(one_call(i))
                live.add(task)
                task.add_done_callback(live.discard)
                i += 1
                started += 1
            if loop.time() >= next_sample:
                s = await _sample(stack, t0)
                report.samples.append(s)
                report.ended_at.append((s.t, report.ended))
                next_sample += sample_s
                if progress is not None:
                    progress(f"{s.t:6.1f} s: live {s.live_calls:3d} tasks {s.tasks:4d} fds {s.fds:4d} threads "
                             f"{s.threads:3d} RSS {s.rss / 1e6:6.1f} MB spool {s.spool_files:4d} ended {report.ended}")
            await asyncio.sleep(0.05)
        await asyncio.gather(*live, return_exceptions=True)
        for _ in range(100):  # every call torn down in the fork server
            if not await stack.live_calls() and not stack.spool_files():
                break
            await asyncio.sleep(0.05)
        await stack.switch.settle()
        await asyncio.sleep(1.0)
        # A leg still in its WebSocket close handshake holds its fd up to close_timeout (2 s):
        # give the idle figures that long and a little more to come back, and say how long it took.
        settle0 = loop.time()
        report.idle_after = await _sample(stack, t0)
        while loop.time() - settle0 < 4.0 and (report.idle_after.fds > report.idle_before.fds  # type: ignore[union-attr]
                                               or report.idle_after.tasks > report.idle_before.tasks):  # type: ignore[union-attr]
            await asyncio.sleep(0.2)
            report.idle_after = await _sample(stack, t0)
        report.idle_settle_s = 1.0 + loop.time() - settle0
        if await _trim(stack):
            report.idle_trimmed = await _sample(stack, t0)
        report.cpu_s = time.process_time() - cpu0
        if stack.proc is not None:
            with open(f"/proc/{stack.fork_pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            report.fork_server_cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m testbed.churn", description="Calls starting and ending; growth figures.")
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--concurrent", type=int, default=100)
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--inprocess", action="store_true",
                    help="the fork server in this process (figures then include the emulator and the connector)")
    ap.add_argument("--esl", choices=("python-esl", "asyncio"), default="python-esl",
                    help="the fork server's ESL client, as voicefork-server --esl")
    args = ap.parse_args(argv)
    report = asyncio.run(churn(args.seconds, args.concurrent, sample_s=args.sample, progress=print,
                               fork_server="inprocess" if args.inprocess else "process", esl=args.esl))
    print(report.text())
    g = report.growth()
    bad = [k for k in ("idle_tasks", "idle_fds", "idle_threads", "idle_spool_files") if g[k] > 2] + (
        ["stuck calls"] if report.stuck else []
    )
    if bad:
        print("GROWTH:", ", ".join(bad))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
