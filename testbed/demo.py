"""``just demo``: one emulated inbound call, end to end, on the example config.

The caller asks a question (real synthesised speech), the script connector answers with TTS,
the caller barges in, the bot stops, the caller hangs up. Prints a timeline, writes
``build/demo/caller_heard.wav`` (8 kHz, what the caller's ear got, holes as silence) and
``build/demo/ai_heard.wav`` (16 kHz, what the connector got), draws
``build/demo/timeline.png`` (:mod:`testbed.timeline_plot`: the four audio lanes on one time
axis) and exits non-zero if any step of the call failed. A picture that cannot be drawn is a
warning, never a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

from fs_dialplan.render import rate_name

from . import timeline_plot as tp
from .connector.modes import ScriptBehaviour, make_options
from .speech import CALLER_BARGEIN, CALLER_QUESTION, load_wav, write_wav
from .stack import EXAMPLE_CONFIG, Stack

__all__ = ["main", "run_demo"]

BARGE_IN_AFTER_S = 1.5  # of bot speech heard before the caller interrupts


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.rows: list[tuple[float, str]] = []
        self.moments: dict[str, float] = {}  # for the picture: "barge_in", "hangup"
        self.said: list[tuple[float, bytes, str]] = []  # (when, PCM at the channel rate, words)
        self.title = "voicefork demo"

    def at(self, t: float | None, what: str, key: str | None = None) -> None:
        if t is not None:
            self.rows.append((t, what))
            if key is not None:
                self.moments[key] = t

    def ms(self, t: float) -> float:
        return 1000 * (t - self.t0)

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
        print(f"demo: calling {number} (route {route}, fork {rate_name(r.rate)}, playback {s.config.playback.command})")
        tl.title = f"voicefork demo: route {route} ({number}, fork {rate_name(r.rate)}, playback {s.config.playback.command})"
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
        question = load_wav(CALLER_QUESTION, ch.rate)
        ch.say(question)
        tl.said.append((said_at, question, "\u201cHello, I would like to check the status of my order\u201d"))
        tl.at(said_at, "caller starts speaking: \"Hello, I would like to check the status of my order\"")
        await _until(lambda: record.first_audio_at is not None, 5, "caller audio at the connector", failures)
        tl.at(record.first_audio_at, "first caller audio at the voice connector")

        if not await _until(lambda: ch.ear.frames, 20, "the bot's first word in the caller's ear", failures):
            return _finish(failures, tl, s, record, ch, out_dir)
        first_tts = record.sent_of("audio")
        tl.at(first_tts[0].t if first_tts else None, "connector sends its first TTS audio")
        tl.at(ch.ear.frames[0].time, "caller hears the bot's first TTS audio")
        heard_enough = lambda: len(ch.ear.frames) * ch.ptime_ms >= BARGE_IN_AFTER_S * 1000  # noqa: E731
        await _until(heard_enough, 10, "1.5 s of bot speech", failures)

        barge_at = time.monotonic()
        bargein = load_wav(CALLER_BARGEIN, ch.rate)
        ch.say(bargein)
        tl.said.append((barge_at, bargein, "\u201cWait, stop, stop.\u201d"))
        tl.at(barge_at, "caller barges in: \"Wait, stop, stop.\"", key="barge_in")
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
        tl.at(hangup_at, "caller hangs up (BYE)", key="hangup")
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
    _draw(out_dir / "timeline.png", tl, s, record, ch, failures)
    if failures:
        print("DEMO FAILED:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    print("demo: OK")
    return 0


def _draw(png: Path, tl: Timeline, s, record, ch, failures: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Draw the timeline picture; any failure to draw is a warning (the call decides pass/fail)."""
    try:
        p = tp.draw_timeline(_call_timeline(tl, s, record, ch, failures), png)
    except Exception as e:  # noqa: BLE001 - whatever breaks the picture must not break the demo
        hint = " (install the dev extras: pip install 'matplotlib>=3.8')" if isinstance(e, ImportError) else ""
        print(f"warning: {png} not drawn: {type(e).__name__}: {e}{hint}", file=sys.stderr)
        return
    print(f"wrote {png} ({p.subtitle.replace('   ·   ', '; ')})")


def _call_timeline(tl: Timeline, s, record, ch, failures: list[str]) -> tp.CallTimeline:  # type: ignore[no-untyped-def]
    """The call as plain data for :mod:`testbed.timeline_plot`, in ms since the INVITE.

    Every lane is rebuilt from what the call kept: the caller's clips with the times they were
    said, the connector's received frames with their arrival times, its TTS messages (sizes and
    send times; the PCM is the script's WAV, which it streams in order from the start) and the
    caller's ear frames with the times they were written.
    """
    said = [tp.Clip(tl.ms(t), pcm, ch.rate, label=words) for t, pcm, words in tl.said] if ch is not None else []
    heard = [tp.Clip(tl.ms(f.time), f.pcm, ch.rate) for f in ch.ear.frames] if ch is not None else []
    ai: list[tp.Clip] = []
    sent: list[tp.Clip] = []
    marks: list[tp.MarkEvent] = []
    rate = f"{ch.rate // 1000} kHz" if ch is not None else ""
    notes = {"caller_said": f"{rate}, when said", "caller_heard": f"{rate}, at arrival"}
    if record is not None:
        ai = [tp.Clip(tl.ms(f.t), f.pcm, 16000) for f in record.frames]
        notes["ai_heard"] = "16 kHz, at arrival"
        sent, notes["bot_sent"] = _sent_clips(tl, s, record)
        sent_at = {x.message["name"]: tl.ms(x.t) for x in record.sent_of("mark") if x.message}
        reports = {m.name: m for m in record.marks}
        marks = [
            tp.MarkEvent(name, at, tl.ms(reports[name].t) if name in reports else None,
                         reports[name].status if name in reports else None)
            for name, at in sent_at.items()
        ]
    clears = record.clears_sent if record is not None else []
    return tp.CallTimeline(
        title=tl.title,
        caller_said=said,
        ai_heard=ai,
        bot_sent=sent,
        caller_heard=heard,
        barge_in_ms=tl.ms(tl.moments["barge_in"]) if "barge_in" in tl.moments else None,
        clear_ms=tl.ms(clears[0]) if clears else None,
        hangup_ms=tl.ms(tl.moments["hangup"]) if "hangup" in tl.moments else None,
        marks=marks,
        lane_notes=notes,
        outcome="FAILED" if failures else "OK",
        failure=(failures[0] + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else "")) if failures else None,
    )


def _sent_clips(tl: Timeline, s, record) -> tuple[list[tp.Clip], str]:  # type: ignore[no-untyped-def]
    """The TTS messages at their send times, each squeezed to the time until the next one
    (the connector sends faster than real time), and a note for the lane."""
    opts = make_options(s.connector_mode, **s.connector_options)
    rate = next((int(x.message["sample_rate"]) for x in record.sent_of("audio_format") if x.message), 16000)
    pcm = ScriptBehaviour.prepare(opts) if rate == getattr(opts, "rate", None) else b""
    audio = record.sent_of("audio")
    clips: list[tp.Clip] = []
    pos = 0
    for i, x in enumerate(audio):
        chunk = pcm[pos : pos + x.nbytes]
        if len(chunk) != x.nbytes:  # not the script's WAV after all: show the message, silent
            chunk = bytes(x.nbytes)
        pos += x.nbytes
        natural = 1000 * x.nbytes / 2 / rate
        if i + 1 < len(audio):
            span = min(natural, 1000 * (audio[i + 1].t - x.t))
        else:
            earlier = [c.span_ms for c in clips if c.span_ms]
            span = min(natural, sorted(earlier)[len(earlier) // 2]) if earlier else natural
        clips.append(tp.Clip(tl.ms(x.t), chunk, rate, span_ms=span))
    return clips, f"{rate // 1000} kHz, at send\npaced {getattr(opts, 'speed', 1.0):g}\u00d7 real time"


async def run_twilio_demo(config: str, out_dir: Path, route: str = "support") -> int:
    """``just demo --twilio``: the same call with a Pipecat bot written for Twilio Media Streams
    (testbed/pipecat_bot.py, in the Pipecat venv) as the route's connector: it answers with
    TTS from a WAV, Pipecat's interruption becomes Twilio's ``clear`` when the caller barges
    in, and the bot ends the call through Twilio's REST API, served by the fork server."""
    from .pipecat_proc import PIPECAT_PY, start_bot
    from .twilio_peer import twilio_config

    if not PIPECAT_PY.exists():
        print(f"demo --twilio: no Pipecat venv at {PIPECAT_PY}; run `just pipecat-env`", file=sys.stderr)
        return 1
    failures: list[str] = []
    tl = Timeline()
    base = Stack(config).base  # the route's connector becomes a twilio one
    connector = base.route(route).connector
    cfg = twilio_config(config, connector=connector)
    async with Stack(cfg, connector_url_override="ws://127.0.0.1:9/until-the-bot-is-up") as s:
        bot = await start_bot(s, "--bargein", "--listen-ms", "3000", connector=connector)
        try:
            number = s.number_of(route)
            print(f"demo --twilio: calling {number} (route {route}); connector {connector}: protocol twilio, "
                  f"a Pipecat {bot.proc.pid} bot (TwilioFrameSerializer, REST base_url http://127.0.0.1:{s.fork_port})")
            tl.t0 = time.monotonic()
            ch = s.switch.place_call(number, "+15550001111", "Demo Caller")
            tl.at(tl.t0, "INVITE: emulated FreeSWITCH runs the rendered extension")
            start = await bot.wait("start", timeout=10)
            tl.at(start["t"], f"Pipecat bot: Twilio stream {start['stream_id']} (call {start['call_id']}) "
                              f"from {start['from_number']}")
            said_at = time.monotonic()
            ch.say(load_wav(CALLER_QUESTION, ch.rate))
            tl.at(said_at, "caller starts speaking: \"Hello, I would like to check the status of my order\"")
            answer = await bot.wait("answer", timeout=20)
            tl.at(answer["t"], "Pipecat bot pushes its answer (TTS from a WAV)")
            if await _until(lambda: ch.ear.frames, 10, "the bot's first word in the caller's ear", failures):
                tl.at(ch.ear.frames[0].time, "caller hears the bot's first audio")
                await _until(lambda: len(ch.ear.frames) * ch.ptime_ms >= BARGE_IN_AFTER_S * 1000, 10,
                             "1.5 s of bot speech", failures)
                barge_at = time.monotonic()
                ch.say(load_wav(CALLER_BARGEIN, ch.rate))
                tl.at(barge_at, "caller barges in: \"Wait, stop, stop.\"")
                cut = await bot.wait("interrupted", timeout=10)
                tl.at(cut["t"], "Pipecat interrupts itself: its serializer sends Twilio `clear`")
                await asyncio.sleep(0.3)
                last = max(f.time for f in ch.ear.frames)
                tl.at(last, f"last bot audio in the caller's ear ({1000 * (last - cut['t']):.0f} ms after the interruption)")
                if last - cut["t"] > 0.3:
                    failures.append(f"bot audio heard {1000 * (last - cut['t']):.0f} ms after the interruption")
            if await _until(lambda: ch.hungup.is_set(), 10, "the bot's REST hang-up to end the call", failures):
                tl.at(time.monotonic(), "the bot POSTed Status=completed: the fork server hung the call up (BYE)")
            await _until(lambda: not s.app.calls and not s.spool_files(), 5, "the fork server to clean up", failures)
        finally:
            await bot.stop()
        print("timeline:")
        tl.print()
        out_dir.mkdir(parents=True, exist_ok=True)
        write_wav(out_dir / "caller_heard_twilio.wav", ch.ear.timeline(from_tick=1), ch.rate)
        print(f"caller heard {len(ch.ear.frames) * ch.ptime_ms} ms of bot audio, {len(ch.ear.gaps())} holes; "
              f"wrote {out_dir / 'caller_heard_twilio.wav'}")
        failures.extend(f"emulated FreeSWITCH logged: {e}" for e in s.switch.errors)
    if failures:
        print("DEMO FAILED:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    print("demo --twilio: OK")
    return 0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m testbed.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(EXAMPLE_CONFIG))
    ap.add_argument("--out", default="build/demo")
    ap.add_argument("--route", default="support")
    ap.add_argument("-v", "--verbose", action="store_true", help="fork server logs at DEBUG")
    ap.add_argument("--twilio", action="store_true", help="the connector is a Pipecat bot written for Twilio Media Streams")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("websockets", "testbed", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    demo = run_twilio_demo if args.twilio else run_demo
    sys.exit(asyncio.run(demo(args.config, Path(args.out), args.route)))


if __name__ == "__main__":
    main()
