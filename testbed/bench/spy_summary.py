"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): top self and inclusive frames.

Run: ``python -m testbed.bench.spy_summary profile.txt [top]``.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

__all__ = ["summarise", "main"]


def _name(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"
    m = re.match(r"(.*?) \((.*?):\d+\)$", frame.strip())
    if not m:
        return frame.strip()
    return f"{m.group(1)} ({m.group(2).rsplit('/', 1)[-1]})"


def summarise(path: str) -> tuple[int, Counter[str], Counter[str]]:
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = [_name(x) for x in stack.split(";") if x]
            # py-spy puts "process N" / thread names first; they are not code.
            frames = [x for x in frames if not x.startswith(("process ", "thread "))]
            if not frames:
                continue
            own[frames[-1]] += n
            for name in set(frames):
                incl[name] += n
    return total, own, incl


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    top = int(args[1]) if len(args) > 1 else 25
    total, own, incl = summarise(args[0])
    print(f"{total} samples")
    print("-- self --")
    for name, n in own.most_common(top):
        print(f"{100 * n / total:6.1f}%  {name}")
    print("-- inclusive --")
    for name, n in incl.most_common(top):
        print(f"{100 * n / total:6.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
