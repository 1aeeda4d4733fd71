"""``just demo``: one emulated inbound call, end to end, on the example config.

The caller asks a question (real synthesised speech), the script connector answers with TTS,
the caller barges in, the bot stops, the caller hangs up. Prints a timeline, writes
``build/demo/caller_heard.wav`` (8 kHz, what the caller's ear got, holes as silence) and
``build/demo/ai_heard.wav`` (16 kHz, what the connector got), and exits non-zero if any
step failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path


from .speech import CALLER_BARGEIN, CALLER_QUESTION, load_wav, write_wav
from .stack import EXAMPLE_CONFIG, Stack

__all__ = ["main", "run_demo"]

BARGE_IN_AFTER_S = 1.5  # of bot speech heard before the caller interrupts


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.rows: list[tuple[float, str]] = []

    def at(self, t: float | None, what: str) -> None:
        if t is not None:
            self.rows.append((t, what))

    def print(self) -> None:
        for t, what in sorted(self.rows):
            print(f"  {1000 * (t - self.t0):8.0f} ms  {what}")


async def _until(pred, timeout: float, what: str, failures: list[str]) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            failures.append(f"timed out after {timeout:.0f} s waiting for {what}")
            return False
        await asyncio.sleep(0.01)
    return True


async def run_demo(config: str, out_dir: Path, route: str = "support") -> int:
    failures: list[str] = []
    tl = Timeline()
    options = {"speak_after_first_utterance": True, "bargein": True, "rate": 24000, "speed": 3.0}
    async with Stack(config, connector_mode="script", connector_options=options) as s:
        number = s.number_of(route)
        r = s.config.route(route)
        print(f"demo: calling {number} (route {route}, fork {r.rate // 1000}k, playback {s.config.playback.command})")
        fork_events: dict[str, float] = {}
        s.switch.subscribe(
            lambda h, b: h.get("Event-Subclass", "").startswith("mod_audio_fork::")
            and fork_events.setdefault(h["Event-Subclass"].split("::")[1], time.monotonic())
        )
        tl.t0 = time.monotonic()
        ch = s.switch.place_call(number, "+15550001111", "Demo Caller")
        tl.at(tl.t0, "INVITE: emulated FreeSWITCH runs the rendered extension")
        if not await _until(lambda: "connect" in fork_events or "connect_failed" in fork_events, 5, "the fork to connect", failures):
            return _finish(failures, tl, s, None, ch, out_dir)
        tl.at(fork_events.get("connect"), "mod_audio_fork connected to the fork server")
        record = await s.connector.wait_call(0, timeout=5)
        tl.at(record.start_at, "connector got `start` (caller id looked up over ESL)")

        said_at = time.monotonic()
        ch.say(load_wav(CALLER_QUESTION, ch.rate))
        tl.at(said_at, "caller starts speaking: \"Hello, I would like to check the status of my order\"")
        await _until(lambda: record.first_audio_at is not None, 5, "caller audio at the connector", failures)
        tl.at(record.first_audio_at, "first caller audio at the voice connector")

        if not await _until(lambda: ch.ear.frames, 20, "the bot's first word in the caller's ear", failures):
            return _finish(failures, tl, s, record, ch, out_dir)
        tl.at(ch.ear.frames[0].time, "caller hears the bot's first TTS audio")
        heard_enough = lambda: len(ch.ear.frames) * ch.ptime_ms >= BARGE_IN_AFTER_S * 1000  # noqa: E731
        await _until(heard_enough, 10, "1.5 s of bot speech", failures)

        barge_at = time.monotonic()
        ch.say(load_wav(CALLER_BARGEIN, ch.rate))
        tl.at(barge_at, "caller barges in: \"Wait, stop, stop.\"")
        if await _until(lambda: record.clears_sent, 5, "the connector's `clear`", failures):
            clear_at = record.clears_sent[0]
            tl.at(clear_at, "connector sends `clear` (its VAD heard the caller)")
            await asyncio.sleep(0.5)
            after = [f for f in ch.ear.frames if f.time > clear_at]
            last = max((f.time for f in ch.ear.frames), default=clear_at)
            tl.at(last, f"last bot audio leaves toward the caller ({1000 * (last - clear_at):.0f} ms after `clear`)")
            if after and (after[-1].time - clear_at) > 0.060:
                failures.append(f"bot audio still heard {1000 * (after[-1].time - clear_at):.0f} ms after clear (limit 60)")
        await asyncio.sleep(0.5)

        hangup_at = time.monotonic()
        ch.hangup()
        tl.at(hangup_at, "caller hangs up (BYE)")
        await _until(lambda: record.closed, 5, "the connector to see `stop`", failures)
        tl.at(record.stop_at, f"connector gets `stop` ({record.stop_reason})")
        await _until(lambda: not s.app.calls and not s.spool_files(), 5, "the fork server to clean up", failures)
        tl.at(time.monotonic(), f"fork server: call ended, {len(s.spool_files())} spool files left")
        return _finish(failures, tl, s, record, ch, out_dir)


def _finish(failures, tl, s, record, ch, out_dir: Path) -> int:  # type: ignore[no-untyped-def]
    print("timeline:")
    tl.print()
    out_dir.mkdir(parents=True, exist_ok=True)
    if ch is not None:
        write_wav(out_dir / "caller_heard.wav", ch.ear.timeline(from_tick=1), ch.rate)
    if record is not None:
        write_wav(out_dir / "ai_heard.wav", record.audio(), 16000)
        heard_ms = len(ch.ear.frames) * ch.ptime_ms if ch is not None else 0
        print(
            f"caller heard {heard_ms} ms of bot audio in {len(ch.ear.frames) if ch else 0} frames, "
            f"{len(ch.ear.gaps()) if ch else 0} holes; connector got {record.frame_count} frames "
            f"({record.audio_bytes / 32000:.2f} s), marks {[(m.name, m.status) for m in record.marks]}"
        )
    if s.switch.crashed:
        failures.append(f"the emulated FreeSWITCH crashed: {s.switch.crashed}")
    failures.extend(f"emulated FreeSWITCH logged: {e}" for e in s.switch.errors)
    print(f"wrote {out_dir / 'caller_heard.wav'} and {out_dir / 'ai_heard.wav'}")
    if failures:
        print("DEMO FAILED:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    print("demo: OK")
    return 0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m testbed.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(EXAMPLE_CONFIG))
    ap.add_argument("--out", default="build/demo")
    ap.add_argument("--route", default="support")
    ap.add_argument("-v", "--verbose", action="store_true", help="fork server logs at DEBUG")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("websockets", "testbed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sys.exit(asyncio.run(run_demo(args.config, Path(args.out), args.route)))


if __name__ == "__main__":
    main()
