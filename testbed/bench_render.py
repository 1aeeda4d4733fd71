"""Render benchmark: N routes (default 10,000) loaded from YAML and rendered; prints the times.

Run: ``python -m testbed.bench_render [N]``.
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
routes:
"""


def main(argv: list[str] | None = None) -> None:
    n = int((argv or sys.argv[1:] or ["10000"])[0])
    lines = [HEAD] + [f'  - {{name: r{i}, number: "+1555{i:07d}", connector: bot, rate: {"8k" if i % 2 else "16k"}}}\n' for i in range(n)]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.yaml"
        path.write_text("".join(lines))
        t0 = time.perf_counter()
        config = load_config(str(path))
        t1 = time.perf_counter()
        files = render(config, {"BENCH_ESL": "e1", "BENCH_FORK": "f1"})
        t2 = time.perf_counter()
    size = sum(len(v) for v in files.values())
    print(f"render bench: {n} routes: load+validate {1000 * (t1 - t0):.0f} ms, render+verify {1000 * (t2 - t1):.0f} ms, "
          f"total {1000 * (t2 - t0):.0f} ms, {size / 1e6:.1f} MB of XML")


if __name__ == "__main__":
    main()
