"""Chaos row "churn of calls starting and ending" (issue 6), the CI form: 30 s at 50 concurrent
calls through the whole stack, the fork server in its own process, as deployed. The full
10 minutes at 100 concurrent is ``just chaos`` (testbed.churn), which prints the same figures."""

import pytest

pytest.importorskip("ESL")

from testbed.churn import churn  # noqa: E402
from testbed.figures import record  # noqa: E402


async def test_churn_leaves_no_growth_in_tasks_fds_threads_rss_or_spool():
    report = await churn(30.0, 50, sample_s=2.0, warmup_s=10.0)
    print(report.text())
    g = report.growth()
    ok = report.ended - report.stuck
    record("churn 30 s at 50 concurrent (CI form)", report.placed, ok,
           idle_tasks=g["idle_tasks"], idle_fds=g["idle_fds"], idle_threads=g["idle_threads"],
           idle_spool_files=g["idle_spool_files"], steady_rss_mb=round(g["steady_rss_mb"], 1),
           idle_rss_mb=round(g["idle_rss_mb"], 1), fork_server_cpu_s=round(report.fork_server_cpu_s or 0, 1),
           idle_settle_s=round(report.idle_settle_s, 1))
    assert report.placed >= 150 and report.ended == report.placed and report.stuck == 0
    # Back to idle, everything is exactly where it was before the first call.
    assert g["idle_tasks"] <= 0 and g["idle_fds"] <= 0 and g["idle_threads"] <= 0 and g["idle_spool_files"] == 0
    # Under the same load, no growth past the warm-up beyond allocator noise (a 30 KB-per-call
    # leak would show as +9 MB here; the 10-minute run gives the real slope).
    assert g["steady_rss_mb"] < 6.0
    a, b = report.steady()
    assert b.threads <= a.threads
