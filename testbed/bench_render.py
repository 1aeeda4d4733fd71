"""Render benchmark: N routes (default 10,000) loaded from YAML and rendered; prints the times.

Run: ``python -m testbed.bench_render [N]``. Two mixes: all exact numbers (the issue's
target: load + render well under 2 s), and 1% regex routes plus a trunk, which exercises the
number/regex overlap check (patterns x numbers, each pattern compiled once).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from fs_dialplan import load_config
from fs_dialplan.render import render

HEAD = """freeswitch: {esl_password_env: BENCH_ESL}
fork_server: {public_url: "ws://127.0.0.1:8099", auth: {username: fs, password_env: BENCH_FORK}}
connectors: {bot: {url: "ws://127.0.0.1:8765/bot"}}
playback: {spool_dir: /tmp/vf, freeswitch_spool_dir: /tmp/vf}
"""
TRUNK = """trunks:
  - {name: carrier, proxy: sip.example.com, username: vf, password_env: BENCH_TRUNK, acl_cidrs: [192.0.2.0/24, 198.51.100.0/24]}
"""
ENV = {"BENCH_ESL": "e1", "BENCH_FORK": "f1", "BENCH_TRUNK": "t1"}


def route_lines(n: int, pattern_every: int = 0) -> list[str]:
    lines = ["routes:\n"]
    for i in range(n):
        rate = "8k" if i % 2 else "16k"
        if pattern_every and i % pattern_every == 0:
            lines.append(f"  - {{name: r{i}, pattern: '^\\+44{i:07d}[0-9]*$', connector: bot, rate: {rate}}}\n")
        else:
            lines.append(f'  - {{name: r{i}, number: "+1555{i:07d}", connector: bot, rate: {rate}}}\n')
    return lines


def run(label: str, text: str, n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.yaml"
        path.write_text(text)
        t0, c0 = time.perf_counter(), time.process_time()
        config = load_config(str(path))
        t1, c1 = time.perf_counter(), time.process_time()
        files = render(config, ENV)
        t2, c2 = time.perf_counter(), time.process_time()
    size = sum(len(v) for v in files.values())
    # CPU time too: on a shared machine the wall clock includes waiting for a core.
    print(f"render bench ({label}): {n} routes: load+validate {1000 * (t1 - t0):.0f} ms (cpu {1000 * (c1 - c0):.0f}), "
          f"render+verify {1000 * (t2 - t1):.0f} ms (cpu {1000 * (c2 - c1):.0f}), total {1000 * (t2 - t0):.0f} ms "
          f"(cpu {1000 * (c2 - c0):.0f}), {size / 1e6:.1f} MB of XML, {len(config.warnings)} warnings")


def main(argv: list[str] | None = None) -> None:
    n = int((argv or sys.argv[1:] or ["10000"])[0])
    run("exact numbers", HEAD + "".join(route_lines(n)), n)
    run("1% regex routes, 1 trunk", HEAD + TRUNK + "".join(route_lines(n, pattern_every=100)), n)


if __name__ == "__main__":
    main()
