"""Prometheus metrics of the fork server, on a private registry served at ``GET /metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """One registry per app, so tests can run several apps in one process."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.active_calls = Gauge("voicefork_active_calls", "Calls with a live fork socket", registry=r)
        self.calls = Counter("voicefork_calls", "Calls ended, by outcome", ["outcome"], registry=r)
        self.rejected = Counter("voicefork_fork_rejected", "Fork sockets refused, by reason", ["reason"], registry=r)
        self.frames_in = Counter("voicefork_caller_frames", "Caller audio frames from FreeSWITCH", registry=r)
        self.frames_out = Counter("voicefork_connector_frames", "20 ms frames sent to connectors", registry=r)
        self.frames_dropped = Counter(
            "voicefork_connector_frames_dropped", "Caller frames dropped (slow connector or pre-start overflow)", registry=r
        )
        self.tts_bytes = Counter("voicefork_tts_bytes", "TTS PCM bytes received from connectors", registry=r)
        self.segments = Counter("voicefork_playback_segments", "TTS segment files queued for playback", registry=r)
        self.barge_ins = Counter("voicefork_barge_ins", "clear requests (barge-in)", registry=r)
        self.esl_reconnects = Counter("voicefork_esl_reconnects", "ESL reconnections", registry=r)
        self.esl_up = Gauge("voicefork_esl_up", "1 when the ESL link is up", registry=r)
        self.errors = Counter("voicefork_errors", "Errors by kind", ["kind"], registry=r)
        self.relay_latency = Histogram(
            "voicefork_relay_seconds",
            "Caller frame received from FreeSWITCH to handed to the connector socket",
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
