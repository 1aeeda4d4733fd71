"""Prometheus metrics of the fork server, on a private registry served at ``GET /metrics``.

The caller-audio hot path runs 50 times a second per call. prometheus_client's Counter
takes a lock on every ``inc()`` and a Histogram searches its buckets on every
``observe()`` (issue 5 profile: a few µs per frame, several % of a core at 500 calls), so
the per-frame counters here are plain ints read when /metrics is scraped, and the relay
latency histogram observes one frame in ``RELAY_SAMPLE_EVERY``. Every other metric is
rare (per call, per segment) and stays a prometheus_client metric.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics", "LoopCounter", "CONTENT_TYPE", "RELAY_SAMPLE_EVERY"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
RELAY_SAMPLE_EVERY = 64  # one caller frame in 64 is timed for voicefork_relay_seconds


class LoopCounter(Collector):
    """A counter incremented only from the event loop thread: no lock, read at scrape time."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.value = 0
        registry.register(self)

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation)


class Metrics:
    """One registry per app, so tests can run several apps in one process."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.active_calls = Gauge("voicefork_active_calls", "Calls with a live fork socket", registry=r)
        self.calls = Counter("voicefork_calls", "Calls ended, by outcome", ["outcome"], registry=r)
        self.rejected = Counter("voicefork_fork_rejected", "Fork sockets refused, by reason", ["reason"], registry=r)
        self.frames_in = LoopCounter("voicefork_caller_frames", "Caller audio frames from FreeSWITCH", r)
        self.frames_out = LoopCounter("voicefork_connector_frames", "20 ms frames sent to connectors", r)
        self.frames_dropped = Counter(
            "voicefork_connector_frames_dropped", "Caller frames dropped (slow connector or pre-start overflow)", registry=r
        )
        self.tts_bytes = Counter("voicefork_tts_bytes", "TTS PCM bytes received from connectors", registry=r)
        self.segments = Counter("voicefork_playback_segments", "TTS segment files queued for playback", registry=r)
        self.barge_ins = Counter("voicefork_barge_ins", "clear requests (barge-in)", registry=r)
        self.esl_reconnects = Counter("voicefork_esl_reconnects", "ESL reconnections", ["switch"], registry=r)
        self.esl_up = Gauge("voicefork_esl_up", "1 when the ESL link to the switch is up", ["switch"], registry=r)
        self.errors = Counter("voicefork_errors", "Errors by kind", ["kind"], registry=r)
        self.relay_latency = Histogram(
            "voicefork_relay_seconds",
            f"Caller frame received from FreeSWITCH to handed to the connector socket (1 frame in {RELAY_SAMPLE_EVERY})",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.resample_seconds = Histogram(
            "voicefork_resample_seconds", "CPU time to resample one caller frame", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.tts_to_playback = Histogram(
            "voicefork_tts_to_playback_seconds",
            "TTS bytes received to playback command issued",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._relay_tick = 0

    def sample_relay(self) -> bool:
        """True for one caller frame in RELAY_SAMPLE_EVERY (that frame's relay time is observed)."""
        self._relay_tick += 1
        if self._relay_tick >= RELAY_SAMPLE_EVERY:
            self._relay_tick = 0
            return True
        return False

    def render(self) -> bytes:
        return generate_latest(self.registry)
