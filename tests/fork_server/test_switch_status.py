"""GET /freeswitch/status parses the switch's replies: numbers and one printable version line only."""

from fork_server.switch_status import parse_status, parse_version

# A real 1.10.12's reply (trailing spaces included), with larger numbers put in.
REAL_STATUS = """UP 0 years, 0 days, 1 hour, 2 minutes, 3 seconds, 837 milliseconds, 522 microseconds
FreeSWITCH (Version 1.10.12-release  64bit) is ready
7 session(s) since startup
2 session(s) - peak 3, last 5min 3 
0 session(s) per Sec out of max 30, peak 1, last 5min 1 
1000 session(s) max
min idle cpu 0.00/100.00
Current Stack Size/Max 240K/8192K
"""


def test_status_numbers():
    assert parse_status(REAL_STATUS) == {
        "sessions": 2, "sessions_peak": 3, "sessions_since_start": 7, "sessions_max": 1000,
        "sessions_per_second_max": 30, "uptime_s": 3723, "ready": True}


def test_a_reply_it_cannot_read_gives_nothing_rather_than_raw_text():
    assert parse_status("-ERR no reply\n") == {}
    assert parse_version("-ERR version Command not found!\n") is None
    assert parse_version("") is None


def test_version_is_one_printable_bounded_line():
    assert parse_version("FreeSWITCH Version 1.10.12-release~64bit ( 64bit)\n") == \
        "FreeSWITCH Version 1.10.12-release~64bit ( 64bit)"
    assert parse_version("FreeSWITCH Version " + "x\x1b" * 300 + "\nsecond line") == ("FreeSWITCH Version " + "x" * 300)[:200]
