"""``build/bench/capacity.png``: CPU per call-second and p99 added latency against the number of
calls, for the fork server on the emulated and the real switch, FreeSWITCH itself (real), and
the bare websockets relay baseline. matplotlib on its headless Agg backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

__all__ = ["draw"]

# (server, switch, row key, label, style)
_CPU = [
    ("voicefork", "emulated", "cpu_ms_per_call_s", "fork server, emulated switch", "o-"),
    ("voicefork", "real", "cpu_ms_per_call_s", "fork server, real FreeSWITCH", "s-"),
    ("voicefork", "real", "fs_cpu_ms_per_call_s", "FreeSWITCH itself", "s--"),
    ("relay", "emulated", "cpu_ms_per_call_s", "bare websockets relay (baseline)", "^:"),
]
_LAT = [
    ("voicefork", "emulated", "fork server, emulated (fork frame -> connector)", "o-"),
    ("voicefork", "real", "real FreeSWITCH (caller RTP -> connector)", "s-"),
    ("relay", "emulated", "bare relay (fork frame -> connector)", "^:"),
]


def _series(rows: Iterable[dict[str, Any]], server: str, switch: str, get: Any) -> tuple[list[int], list[float]]:
    pts = sorted((r["calls"], get(r)) for r in rows
                 if r.get("server") == server and r.get("switch", "emulated") == switch and "error" not in r)
    pts = [(n, v) for n, v in pts if v is not None]
    return [n for n, _ in pts], [v for _, v in pts]


def draw(rows: list[dict[str, Any]], path: Path, *, title: str = "capacity") -> str:
    """Write the figure; returns a line saying where (or why not)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "capacity.png not drawn: matplotlib is not installed (pip install matplotlib)"
    fig, (cpu, lat) = plt.subplots(1, 2, figsize=(12, 4.5))
    for server, switch, key, label, style in _CPU:
        x, y = _series(rows, server, switch, lambda r, k=key: r.get(k))
        if x:
            cpu.plot(x, y, style, label=label)
    cpu.set_xlabel("concurrent calls")
    cpu.set_ylabel("CPU ms per call-second")
    cpu.set_title("CPU per call-second")
    for server, switch, label, style in _LAT:
        x, y = _series(rows, server, switch, lambda r: (r.get("latency_ms") or {}).get("p99"))
        if x:
            lat.plot(x, y, style, label=label)
    lat.set_xlabel("concurrent calls")
    lat.set_ylabel("p99 added latency, ms (log)")
    lat.set_title("p99 added latency")
    if lat.lines:
        lat.set_yscale("log")  # from a fraction of a ms (emulated) to tens (real) and more once saturated
    cpu.set_ylim(bottom=0)
    for ax in (cpu, lat):
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"
