"""Smoke test of the capacity benchmark's machinery (issue 5): a tiny N for a few seconds.

It asserts counts, never timings: the fork server ran as its own process, every call came
up, caller frames crossed it bit-exact (16k timestamps intact) and none was lost, TTS was
turned into playback commands, and the JSON carries every field the table prints.
"""

import json

import pytest

pytest.importorskip("ESL")

from testbed.bench import capacity  # noqa: E402


@pytest.mark.parametrize("esl", ["python-esl", "asyncio"])
def test_a_tiny_run_measures_both_servers_and_writes_the_json(tmp_path, capsys, esl):
    result = capacity.run([
        "--calls", "4", "--window", "2.5", "--settle", "0.1", "--drain", "1.0",
        "--first-tts-within", "1.5", "--out", str(tmp_path), "--esl", esl,
    ])
    saved = json.loads((tmp_path / "capacity-latest.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    rows = {r["server"]: r for r in saved["rows"]}
    assert set(rows) == {"voicefork", "relay"}
    for row in rows.values():
        assert set(capacity.FIELDS) <= set(row)
        assert row["calls"] == 4 and row["calls_up"] == 4
        assert row["frames_in_window"] > 0 and row["frames_received"] > 0
        assert row["frames_lost"] == 0 and row["ts_mismatch"] == 0
        assert row["killed_by_server"] == 0 and row["forks_still_open"] == 0
        assert row["latency_ms"]["p50"] is not None and row["cpu_percent"] > 0
    ours = rows["voicefork"]
    assert ours["segments"] > 0 and ours["esl_commands_per_s"] > 0 and ours["esl_by_kind"]["sendmsg"] > 0
    assert ours["tts_latency_ms"]["p50"] is not None
    assert ours["server_exit"] == 0  # SIGTERM drained and exited cleanly
    assert rows["relay"]["segments"] == 0  # the baseline does no playback
    assert saved["ratios"][0]["calls"] == 4
    out = capsys.readouterr().out
    assert "voicefork/relay" in out and "server" in out
