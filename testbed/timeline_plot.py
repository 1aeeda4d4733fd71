"""``build/demo/timeline.png``: one call on one time axis, in four lanes.

    caller said    the caller's speech, at the times it was said
    AI heard       the audio the connector received, at its arrival times
    bot sent       the TTS the connector sent, at its send times
    caller heard   the caller's ear, at arrival times; a hole is a gap (shaded red)

with lines for the barge-in, the connector's ``clear``, the last bot audio the caller got and
each mark (sent, then reported played or cleared), and the first-audio latency drawn from the
first TTS message to the first frame in the caller's ear.

Two steps, like the rest of voicefork: :func:`plan` turns plain data (a :class:`CallTimeline`:
clips of PCM placed in ms since the INVITE, and event times) into a :class:`Plan` with no
drawing library involved; :func:`draw` writes the PNG with matplotlib (Agg, imported only
there). :func:`draw_timeline` does both. Tests read the plan, not pixels.

Waveforms are drawn as min/max envelopes over bins about a pixel wide (never narrower than
``min_bin_ms``): a bin no sample falls in is left empty, so a lane shows exactly where audio
was placed and where it was not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["CallTimeline", "Clip", "Lane", "LaneSpec", "MarkEvent", "Marker", "Plan", "Zoom", "draw", "draw_timeline", "plan"]

WIDTH_PX, HEIGHT_PX, DPI = 1600, 900, 100
_LEFT, _RIGHT, _BOTTOM, _TOP = 0.125, 0.985, 0.075, 0.885  # axes box in figure fractions
PLOT_WIDTH_PX = round(WIDTH_PX * (_RIGHT - _LEFT))
ZOOM_WIDTH_PX = 300  # about the inset's width
_CHAR_PX = 6.6  # rough width of a 9 pt character, to keep labels apart

LANES = ("caller_said", "ai_heard", "bot_sent", "caller_heard")


@dataclass(frozen=True, slots=True)
class Clip:
    """PCM (s16le bytes or an int16 array) placed at ``at_ms``.

    It covers ``span_ms`` of the axis, by default its own length (``len / rate``); a shorter
    span draws it squeezed (audio sent faster than real time).
    """

    at_ms: float
    pcm: bytes | np.ndarray = field(repr=False)
    rate: int
    span_ms: float | None = None
    label: str | None = None  # drawn at the clip's start (e.g. what the caller said)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.span_ms is not None and self.span_ms < 0:
            raise ValueError(f"span_ms must be >= 0, got {self.span_ms}")

    def samples(self) -> np.ndarray:
        """The samples as floats in -1..1."""
        if isinstance(self.pcm, (bytes, bytearray, memoryview)):
            raw = np.frombuffer(bytes(self.pcm)[: len(self.pcm) // 2 * 2], "<i2")
        else:
            raw = np.asarray(self.pcm)
        return raw.astype(np.float32) / 32768.0

    @property
    def duration_ms(self) -> float:
        n = len(self.pcm) // 2 if isinstance(self.pcm, (bytes, bytearray, memoryview)) else len(self.pcm)
        return 1000.0 * n / self.rate

    @property
    def end_ms(self) -> float:
        return self.at_ms + (self.duration_ms if self.span_ms is None else self.span_ms)


@dataclass(frozen=True, slots=True)
class MarkEvent:
    """A mark: when the connector sent it and when the fork server reported it (either may be missing)."""

    name: str
    sent_ms: float | None = None
    reported_ms: float | None = None
    status: str | None = None  # "played" | "cleared" | None (never reported)


@dataclass(frozen=True, slots=True)
class CallTimeline:
    """Everything the picture shows, in ms since the INVITE. Any lane may be empty."""

    title: str
    caller_said: Sequence[Clip] = ()
    ai_heard: Sequence[Clip] = ()
    bot_sent: Sequence[Clip] = ()
    caller_heard: Sequence[Clip] = ()
    barge_in_ms: float | None = None  # the caller starts interrupting
    clear_ms: float | None = None  # the connector sends `clear`
    hangup_ms: float | None = None
    marks: Sequence[MarkEvent] = ()
    lane_notes: dict[str, str] = field(default_factory=dict)  # extra text under a lane's name
    outcome: str | None = None  # "OK" or "FAILED", after the title
    failure: str | None = None  # why, on a line of its own


# -- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LaneSpec:
    name: str
    title: str
    color: str
    unit: str  # what one clip is: "utterance", "frame", "message"
    show_holes: bool = False


LANE_SPECS = {
    "caller_said": LaneSpec("caller_said", "caller said", "#1f5fa8", "utterance"),
    "ai_heard": LaneSpec("ai_heard", "AI heard", "#4b93cf", "frame"),
    "bot_sent": LaneSpec("bot_sent", "bot sent", "#d9822b", "message"),
    "caller_heard": LaneSpec("caller_heard", "caller heard", "#a0501a", "frame", show_holes=True),
}


@dataclass(frozen=True, slots=True, eq=False)  # holds arrays: compare fields, not lanes
class Lane:
    spec: LaneSpec
    centers_ms: np.ndarray = field(repr=False)  # bin centres, shared by every lane
    lo: np.ndarray = field(repr=False)  # envelope per bin, NaN where nothing was placed
    hi: np.ndarray = field(repr=False)
    spans_ms: tuple[tuple[float, float], ...]  # where audio was placed: the clips' extents, merged
    holes_ms: tuple[tuple[float, float], ...]  # gaps between clips longer than half a clip (show_holes lanes)
    clips: int
    audio_ms: float  # total audio placed (each clip's own length)
    peak: float  # largest |sample|, 0..1
    labels: tuple[tuple[float, str], ...]  # clip labels
    note: str | None = None  # extra line under the lane's name

    @property
    def empty(self) -> bool:
        return self.clips == 0

    def drawn_spans_ms(self) -> list[tuple[float, float]]:
        """Runs of bins that hold samples, as (first bin start, last bin end)."""
        half = (self.centers_ms[1] - self.centers_ms[0]) / 2 if len(self.centers_ms) > 1 else 0.5
        full = ~np.isnan(self.hi)
        out = []
        i = 0
        while i < len(full):
            if full[i]:
                j = i
                while j + 1 < len(full) and full[j + 1]:
                    j += 1
                out.append((float(self.centers_ms[i] - half), float(self.centers_ms[j] + half)))
                i = j + 1
            else:
                i += 1
        return out


@dataclass(frozen=True, slots=True)
class Marker:
    """A vertical line: ``lanes`` it crosses, the lane its label goes in."""

    kind: str  # barge_in | clear | last_audio | mark_sent | mark_report | hangup
    at_ms: float
    label: str
    label_lane: str
    lanes: tuple[str, ...]
    color: str
    style: str = "-"


@dataclass(frozen=True, slots=True)
class Zoom:
    """The barge-in, magnified: what the caller said and heard around it, on a finer grid."""

    xlim_ms: tuple[float, float]
    bin_ms: float
    said: Lane
    heard: Lane


@dataclass(frozen=True, slots=True)
class Plan:
    title: str
    subtitle: str
    failure: str | None
    xlim_ms: tuple[float, float]
    bin_ms: float
    lanes: tuple[Lane, ...]
    markers: tuple[Marker, ...]
    first_sent_ms: float | None
    first_heard_ms: float | None
    first_audio_latency_ms: float | None  # first TTS message sent -> first frame in the caller's ear
    last_audio_ms: float | None  # last bot frame in the caller's ear (when there was a clear)
    cut_after_clear_ms: float | None  # last bot frame - clear
    cut_after_barge_in_ms: float | None  # last bot frame - barge-in
    zoom: Zoom | None = None
    size_px: tuple[int, int] = (WIDTH_PX, HEIGHT_PX)

    def lane(self, name: str) -> Lane:
        for lane in self.lanes:
            if lane.spec.name == name:
                return lane
        raise KeyError(name)


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _lane(spec: LaneSpec, clips: Sequence[Clip], x0: float, bin_ms: float, nbins: int, note: str | None) -> Lane:
    lo = np.full(nbins, np.inf)
    hi = np.full(nbins, -np.inf)
    peak = 0.0
    for c in clips:
        s = c.samples()
        if s.size == 0:
            continue
        span = c.duration_ms if c.span_ms is None else c.span_ms
        t = c.at_ms + (np.arange(s.size) + 0.5) * (span / s.size)
        idx = np.floor((t - x0) / bin_ms).astype(np.int64)
        keep = (idx >= 0) & (idx < nbins)
        np.minimum.at(lo, idx[keep], s[keep])
        np.maximum.at(hi, idx[keep], s[keep])
        peak = max(peak, float(np.max(np.abs(s))))
    empty = ~np.isfinite(hi)
    lo[empty] = np.nan
    hi[empty] = np.nan
    ordered = sorted(clips, key=lambda c: c.at_ms)
    holes: list[tuple[float, float]] = []
    if spec.show_holes:
        end, length = None, 0.0
        for c in ordered:
            if end is not None and c.at_ms - end > length / 2:
                holes.append((end, c.at_ms))
            if end is None or c.end_ms >= end:
                end, length = c.end_ms, c.duration_ms
    return Lane(
        spec=spec,
        centers_ms=x0 + (np.arange(nbins) + 0.5) * bin_ms,
        lo=lo,
        hi=hi,
        spans_ms=tuple(_merge([(c.at_ms, c.end_ms) for c in ordered])),
        holes_ms=tuple(holes),
        clips=len(ordered),
        audio_ms=sum(c.duration_ms for c in ordered),
        peak=peak,
        labels=tuple((c.at_ms, c.label) for c in ordered if c.label),
        note=note,
    )


def _group_marks(marks: Sequence[MarkEvent], within_ms: float) -> list[tuple[float, str, str]]:
    """Reports close together with the same status make one line: (ms, "seg-2, seg-3", status)."""
    reported = sorted((m.reported_ms, m.name, m.status or "?") for m in marks if m.reported_ms is not None)
    groups: list[tuple[float, list[str], str]] = []
    for at, name, status in reported:
        if groups and groups[-1][2] == status and at - groups[-1][0] <= within_ms:
            groups[-1][1].append(name)
        else:
            groups.append((at, [name], status))
    out = []
    for at, names, status in groups:
        who = ", ".join(names) if len(names) <= 3 else f"{names[0]} .. {names[-1]} ({len(names)})"
        out.append((at, who, status))
    return out


def _fmt_ms(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{v:+.0f} ms" if signed else f"{v:.0f} ms"


def plan(data: CallTimeline, *, plot_width_px: int = PLOT_WIDTH_PX, min_bin_ms: float = 10.0) -> Plan:
    """Lay ``data`` out: envelopes per lane on a common bin grid, markers and the key numbers."""
    if plot_width_px <= 0 or min_bin_ms <= 0:
        raise ValueError("plot_width_px and min_bin_ms must be > 0")
    clip_lists = {name: list(getattr(data, name)) for name in LANES}
    times = [0.0]
    for clips in clip_lists.values():
        times += [c.at_ms for c in clips] + [c.end_ms for c in clips]
    times += [t for t in (data.barge_in_ms, data.clear_ms, data.hangup_ms) if t is not None]
    times += [t for m in data.marks for t in (m.sent_ms, m.reported_ms) if t is not None]
    lo_ms, hi_ms = min(times), max(times)
    if hi_ms - lo_ms < 100:
        hi_ms = lo_ms + 100
    pad = 0.015 * (hi_ms - lo_ms)
    x0, x1 = lo_ms - pad, hi_ms + pad
    bin_ms = max((x1 - x0) / plot_width_px, min_bin_ms)
    nbins = max(1, math.ceil((x1 - x0) / bin_ms))
    lanes = tuple(_lane(LANE_SPECS[name], clip_lists[name], x0, bin_ms, nbins, data.lane_notes.get(name)) for name in LANES)

    sent, heard = clip_lists["bot_sent"], clip_lists["caller_heard"]
    first_sent = min((c.at_ms for c in sent), default=None)
    first_heard = min((c.at_ms for c in heard), default=None)
    latency = first_heard - first_sent if first_sent is not None and first_heard is not None else None
    last_audio = max((c.at_ms for c in heard), default=None) if data.clear_ms is not None else None
    cut_clear = last_audio - data.clear_ms if last_audio is not None and data.clear_ms is not None else None
    cut_barge = last_audio - data.barge_in_ms if last_audio is not None and data.barge_in_ms is not None else None

    everywhere = LANES
    markers: list[Marker] = []
    if data.barge_in_ms is not None:
        markers.append(Marker("barge_in", data.barge_in_ms, "caller barges in", "caller_said", everywhere, "#7b2fbf", "--"))
    if data.clear_ms is not None:
        markers.append(Marker("clear", data.clear_ms, "`clear` sent", "bot_sent", everywhere, "#d62728"))
    if last_audio is not None:
        markers.append(Marker("last_audio", last_audio, f"last bot audio ({_fmt_ms(cut_clear, True)} vs clear)",
                              "caller_heard", everywhere, "#222222", ":"))
    for m in data.marks:
        if m.sent_ms is not None:
            markers.append(Marker("mark_sent", m.sent_ms, m.name, "bot_sent", ("bot_sent",), "#2b7a3d", ":"))
    for at, who, status in _group_marks(data.marks, within_ms=3 * bin_ms):
        color = "#2b7a3d" if status == "played" else "#888888"
        markers.append(Marker("mark_report", at, f"{who} {status}", "caller_heard", ("caller_heard",), color, "-."))
    if data.hangup_ms is not None:
        markers.append(Marker("hangup", data.hangup_ms, "caller hangs up", "caller_said", everywhere, "#555555", "-"))

    zoom = None
    if data.barge_in_ms is not None:
        around = [t for t in (data.barge_in_ms, data.clear_ms, last_audio) if t is not None]
        z0, z1 = min(around) - 120.0, max(around) + 140.0
        zbin = (z1 - z0) / ZOOM_WIDTH_PX
        zn = math.ceil((z1 - z0) / zbin)
        zoom = Zoom(
            (z0, z1), zbin,
            _lane(LANE_SPECS["caller_said"], clip_lists["caller_said"], z0, zbin, zn, None),
            _lane(LANE_SPECS["caller_heard"], heard, z0, zbin, zn, None),
        )

    holes = len(lanes[3].holes_ms)
    if latency is not None:
        parts = [f"first audio {_fmt_ms(latency)} after the connector sent it"]
    elif first_sent is None:
        parts = ["the bot sent no audio"]
    else:
        parts = ["none of the bot's audio reached the caller"]
    if cut_clear is not None:
        parts.append(f"barge-in: last bot audio {_fmt_ms(cut_clear, True)} after `clear`, {_fmt_ms(cut_barge, True)} after the caller started")
    elif data.barge_in_ms is not None:
        parts.append("barge-in: no `clear` seen")
    parts.append(f"{holes} hole{'s' if holes != 1 else ''} in the caller's ear")
    title = data.title if not data.outcome else f"{data.title}  —  {data.outcome}"
    failure = data.failure if not data.failure or len(data.failure) <= 170 else data.failure[:169] + "\u2026"
    return Plan(
        title=title,
        subtitle="   ·   ".join(parts),
        failure=failure,
        xlim_ms=(x0, x1),
        bin_ms=bin_ms,
        lanes=lanes,
        markers=tuple(sorted(markers, key=lambda m: m.at_ms)),
        first_sent_ms=first_sent,
        first_heard_ms=first_heard,
        first_audio_latency_ms=latency,
        last_audio_ms=last_audio,
        cut_after_clear_ms=cut_clear,
        cut_after_barge_in_ms=cut_barge,
        zoom=zoom,
    )


# -- drawing -----------------------------------------------------------------------------------


def _levels(items: list[tuple[float, str]], ms_per_px: float, levels: int) -> list[int]:
    """Greedy: each label (left-aligned at its x) on the first row where it clears the one before."""
    ends = [-math.inf] * levels
    out = []
    for at, text in items:
        width = (len(text) * _CHAR_PX + 14) * ms_per_px
        row = next((i for i in range(levels) if at > ends[i]), min(range(levels), key=lambda i: ends[i]))
        ends[row] = at + width
        out.append(row)
    return out


def _lane_caption(lane: Lane) -> str:
    if lane.empty:
        return f"{lane.spec.title}\n(nothing)"
    s = lane.audio_ms / 1000
    lines = [lane.spec.title, f"{lane.clips} {lane.spec.unit}{'s' if lane.clips != 1 else ''}, {s:.2f} s"]
    if lane.spec.show_holes:
        lines.append(f"{len(lane.holes_ms)} hole{'s' if len(lane.holes_ms) != 1 else ''}")
    if lane.note:
        lines.append(lane.note)
    return "\n".join(lines)


def draw(p: Plan, path: str | Path) -> Path:
    """Write the plan as a PNG of ``p.size_px``; returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure
    from matplotlib.patches import ConnectionPatch

    w, h = p.size_px
    fig = Figure(figsize=(w / DPI, h / DPI), dpi=DPI)
    gs = fig.add_gridspec(len(p.lanes), 1, left=_LEFT, right=_RIGHT, bottom=_BOTTOM, top=_TOP, hspace=0.08)
    axes: dict[str, Any] = {}
    for i, lane in enumerate(p.lanes):
        ax = fig.add_subplot(gs[i], sharex=next(iter(axes.values()), None))
        axes[lane.spec.name] = ax
        _draw_lane(ax, lane, shade=bool(i % 2))
        ax.set_xlim(*p.xlim_ms)
        ax.set_ylabel(_lane_caption(lane), rotation=0, ha="right", va="center", fontsize=9.5, labelpad=10,
                      color=lane.spec.color if not lane.empty else "#999999")
        if i < len(p.lanes) - 1:
            ax.tick_params(axis="x", labelbottom=False, length=0)
    axes[p.lanes[-1].spec.name].set_xlabel("ms since the INVITE", fontsize=10)

    for m in p.markers:
        for name in m.lanes:
            axes[name].axvline(m.at_ms, color=m.color, ls=m.style, lw=0.9 if m.kind == "mark_sent" else 1.2,
                               alpha=0.9, zorder=3)
    span = p.xlim_ms[1] - p.xlim_ms[0]
    ms_per_px = span / PLOT_WIDTH_PX
    rows_y = (0.80, 0.63, 0.46, 0.29, 0.12)
    for name, ax in axes.items():
        mine = [m for m in p.markers if m.label_lane == name]
        rows = _levels([(m.at_ms, m.label) for m in mine], ms_per_px, len(rows_y))
        for m, row in zip(mine, rows):
            y = rows_y[row] - (0.12 if p.lane(name).labels and row == 0 else 0.0)
            width = len(m.label) * _CHAR_PX * ms_per_px
            right = m.at_ms + width > p.xlim_ms[1] - 8 * ms_per_px  # would run off the edge: label on the left
            ax.text(m.at_ms + (-4 if right else 4) * ms_per_px, y, m.label, transform=ax.get_xaxis_transform(),
                    ha="right" if right else "left", va="center", fontsize=9, color=m.color, zorder=5,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))

    if p.first_sent_ms is not None and p.first_heard_ms is not None:
        fig.add_artist(ConnectionPatch(
            xyA=(p.first_sent_ms, 0.0), coordsA=axes["bot_sent"].transData,
            xyB=(p.first_heard_ms, 0.0), coordsB=axes["caller_heard"].transData,
            arrowstyle="-|>", color=_LATENCY, lw=1.6, mutation_scale=14, zorder=6,
        ))
        axes["caller_heard"].annotate(
            f"first audio +{p.first_audio_latency_ms:.0f} ms", xy=(p.first_heard_ms, 1.0),
            xycoords=axes["caller_heard"].get_xaxis_transform(), xytext=(-8, -4), textcoords="offset points",
            ha="right", va="top", fontsize=10, fontweight="bold", color=_LATENCY, zorder=6,
            bbox=dict(boxstyle="round,pad=0.2", fc="white", ec=_LATENCY, lw=0.8, alpha=0.9),
        )
    if p.zoom is not None:
        _draw_zoom(axes["caller_heard"], p)

    fig.suptitle(p.title, x=0.5, y=0.985, fontsize=14, fontweight="bold", va="top",
                 color="#c0141b" if p.failure else "black")
    fig.text(0.5, 0.942, p.subtitle, ha="center", va="top", fontsize=11, color="#333333")
    if p.failure:
        fig.text(0.5, 0.915, p.failure, ha="center", va="top", fontsize=10, color="#c0141b")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    return out


_LATENCY = "#0a7d6b"


def _draw_lane(ax: Any, lane: Lane, shade: bool = False, alpha: float = 0.85) -> None:
    color = lane.spec.color
    lim = max(lane.peak, 0.05) * 1.15
    ax.set_ylim(-lim, lim * (1.3 if lane.labels else 1.0))  # room for the clip labels above the waveform
    ax.set_yticks([])
    ax.set_facecolor("#f8f8f8" if shade else "#ffffff")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="x", color="#e4e4e4", lw=0.6)
    ax.set_axisbelow(True)
    if lane.empty:
        ax.text(0.5, 0.5, "no audio", transform=ax.transAxes, ha="center", va="center", color="#999999", fontsize=11)
    else:
        ax.fill_between(lane.centers_ms, lane.lo, lane.hi, color=color, lw=0, alpha=alpha)
        present = np.where(np.isnan(lane.hi), np.nan, 0.0)  # a thin line wherever audio was placed, silent or not
        ax.plot(lane.centers_ms, present, color=color, lw=0.8)
    for a, b in lane.holes_ms:
        ax.axvspan(a, b, color="#e0302a", alpha=0.35, lw=0)
    for at, text in lane.labels:
        ax.text(at, 0.97, text, transform=ax.get_xaxis_transform(), ha="left", va="top", fontsize=9,
                color=color, style="italic", clip_on=True)


def _draw_zoom(host: Any, p: Plan) -> None:
    """An inset in the caller-heard lane, on its wider empty side: the caller's voice over the bot's."""
    z = p.zoom
    assert z is not None  # checked by the caller
    x0, x1 = p.xlim_ms
    heard = p.lane("caller_heard").spans_ms
    left_free = ((heard[0][0] if heard else x1) - x0) / (x1 - x0)
    right_free = (x1 - (heard[-1][1] if heard else x0)) / (x1 - x0)
    width = 0.26
    at = 0.015 if left_free >= right_free else 0.985 - width
    ax = host.inset_axes([at, 0.07, width, 0.86])
    lim = max(z.said.peak, z.heard.peak, 0.05) * 1.15
    for lane in (z.heard, z.said):
        if not lane.empty:
            ax.fill_between(lane.centers_ms, lane.lo, lane.hi, color=lane.spec.color, lw=0, alpha=0.55,
                            label=lane.spec.title)
    for a, b in z.heard.holes_ms:
        ax.axvspan(a, b, color="#e0302a", alpha=0.35, lw=0)
    ax.set_xlim(*z.xlim_ms)
    ax.set_ylim(-lim, lim)
    ax.set_yticks([])
    ax.tick_params(axis="x", labelsize=7.5, pad=1)
    ax.set_facecolor("#ffffff")
    for m in p.markers:
        if m.kind in ("barge_in", "clear", "last_audio") and z.xlim_ms[0] <= m.at_ms <= z.xlim_ms[1]:
            ax.axvline(m.at_ms, color=m.color, ls=m.style, lw=1.3)
    legend = ax.legend(loc="upper left", fontsize=7.5, frameon=False, handlelength=1.0, borderaxespad=0.2)
    legend.set_zorder(7)
    ax.set_title("barge-in, zoomed", fontsize=8.5, pad=2, loc="right")
    if p.cut_after_barge_in_ms is not None and p.last_audio_ms is not None:
        ax.annotate("", xy=(p.last_audio_ms, -0.88 * lim), xytext=(p.last_audio_ms - p.cut_after_barge_in_ms, -0.88 * lim),
                    arrowprops=dict(arrowstyle="<->", color="#7b2fbf", lw=1.0, shrinkA=0, shrinkB=0))
        ax.text(p.last_audio_ms + 4 * z.bin_ms, -0.88 * lim, f"last bot frame {p.cut_after_barge_in_ms:+.0f} ms",
                fontsize=7.5, color="#7b2fbf", va="center", ha="left")
    host.axvspan(*z.xlim_ms, fill=False, ec="#888888", ls="--", lw=0.9, zorder=2)  # what the inset magnifies


def draw_timeline(data: CallTimeline, path: str | Path) -> Plan:
    """:func:`plan` then :func:`draw`; returns the plan (what was placed where)."""
    p = plan(data)
    draw(p, path)
    return p
