"""CPU and memory of a process tree, and of the machine, from /proc (Linux only)."""

from __future__ import annotations

import os

__all__ = ["ProcTree", "machine_cpu", "loadavg", "CLK_TCK"]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The command name is in parentheses and may hold spaces: split after the last ")".
    return text[text.rindex(")") + 2 :].split()


def _task_fields(pid: int, tid: str) -> list[str]:
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


class ProcTree:
    """A process and all its descendants (worker processes); threads are inside each process's stat."""

    def __init__(self, pid: int, *, children: bool = True) -> None:
        self.pid = pid
        self.children = children

    def pids(self) -> list[int]:
        if not self.children:
            return [self.pid]
        seen, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            if p in seen:
                continue
            seen.append(p)
            todo += _children(p)
        return seen

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) CPU seconds of every live process in the tree (10 ms resolution)."""
        user = system = 0
        for p in self.pids():
            try:
                f = _stat_fields(p)
            except OSError:
                continue
            user += int(f[11])  # field 14: utime
            system += int(f[12])  # field 15: stime
        return user / CLK_TCK, system / CLK_TCK

    def cpu_seconds(self) -> float:
        return sum(self.cpu_split())

    def rss_kb(self) -> int:
        total = 0
        for p in self.pids():
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                continue
        return total

    def pss_kb(self) -> int:
        """Proportional set size: shared pages split between the workers, so the sum is honest."""
        total = 0
        for p in self.pids():
            try:
                with open(f"/proc/{p}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1])
            except OSError:
                continue
        return total

    def thread_cpu(self) -> dict[str, float]:
        """CPU seconds per thread, keyed ``<pid>/<tid>:<comm>`` (``main`` for each process's first thread)."""
        out: dict[str, float] = {}
        for p in self.pids():
            try:
                tids = os.listdir(f"/proc/{p}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{p}/task/{tid}/comm") as f:
                        comm = f.read().strip()
                    fields = _task_fields(p, tid)
                except OSError:
                    continue
                name = "main" if tid == str(p) else comm
                out[f"{p}/{tid}:{name}"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        return out

    def threads(self) -> int:
        n = 0
        for p in self.pids():
            try:
                n += len(os.listdir(f"/proc/{p}/task"))
            except OSError:
                pass
        return n


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    total = sum(vals[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])
