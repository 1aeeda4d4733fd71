"""Prometheus metrics of the fork server, on a private registry served at ``GET /metrics``.

The caller-audio hot path runs 50 times a second per call. prometheus_client's Counter
takes a lock on every ``inc()`` and a Histogram searches its buckets on every
``observe()`` (issue 5 profile: a few µs per frame, several % of a core at 500 calls), so
the per-frame counters here are plain ints read when /metrics is scraped, and the relay
latency histogram observes one frame in ``RELAY_SAMPLE_EVERY``. Every other metric is
rare (per call, per segment) and stays a prometheus_client metric.

With ``--workers N`` (fork_server.cli) every worker writes its own scrape into a directory the
parent made, once a second (:class:`WorkerShare`), and ``GET /metrics`` in any worker serves the
sum of its live registry and its siblings' last snapshots (:func:`merge`): counters, histogram
buckets, sums and counts and the call gauges add up; ``voicefork_esl_up`` is the minimum (1 only
when every worker's link is up); the per-process ``*_created`` timestamps are left out. A
sibling's part is at most ``SHARE_INTERVAL_S`` old. (prometheus_client's multiprocess mode would
need its environment variable before import and does not see the lock-free LoopCounters.)
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

__all__ = ["Metrics", "LoopCounter", "WorkerShare", "merge", "CONTENT_TYPE", "RELAY_SAMPLE_EVERY", "SHARE_INTERVAL_S"]

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
        self.originates = Counter("voicefork_outbound_calls", "Outbound calls by outcome (answered, completed, busy, "
                                  "no-answer, failed) and refused requests (refused_<why>)", ["outcome"], registry=r)
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


SHARE_INTERVAL_S = 1.0
_MAX_SNAPSHOT_BYTES = 1 << 20  # a worker's scrape is a few KB; a bigger file is not ours
_MIN_GAUGES = frozenset({"voicefork_esl_up"})


def merge(texts: Iterable[bytes]) -> bytes:
    """One exposition from several workers' (see the module docstring)."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text.decode("utf-8", "replace")):
            if fam.name.endswith("_created"):
                continue
            families.setdefault(fam.name, fam)
            acc = values.setdefault(fam.name, {})
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                if key not in acc:
                    acc[key] = s.value
                elif fam.name in _MIN_GAUGES:
                    acc[key] = min(acc[key], s.value)
                else:
                    acc[key] += s.value
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(families, values))
    return generate_latest(registry)


class _Merged(Collector):
    def __init__(self, families: dict[str, Metric], values: dict[str, dict]) -> None:  # type: ignore[type-arg]
        self.families, self.values = families, values

    def collect(self) -> Iterator[Metric]:
        for name, fam in self.families.items():
            out = Metric(name, fam.documentation, fam.type)
            for (sample, labels), value in self.values[name].items():
                out.add_sample(sample, dict(labels), value)
            yield out


class WorkerShare:
    """This worker's snapshot file in the directory all workers of one server share."""

    def __init__(self, directory: str, index: int) -> None:
        self.directory, self.index = directory, index
        self.path = os.path.join(directory, f"w{index}.prom")

    def write(self, text: bytes) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(text)
        os.replace(tmp, self.path)  # a reader sees the old snapshot or the new one, whole

    def siblings(self) -> list[bytes]:
        out = []
        for name in sorted(os.listdir(self.directory)):
            if not (name.startswith("w") and name.endswith(".prom")) or name == os.path.basename(self.path):
                continue
            try:
                with open(os.path.join(self.directory, name), "rb") as f:
                    data = f.read(_MAX_SNAPSHOT_BYTES + 1)
            except FileNotFoundError:
                continue
            if len(data) <= _MAX_SNAPSHOT_BYTES:
                out.append(data)
        return out
