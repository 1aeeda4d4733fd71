"""The ESL subscription the fork server sends, read the way mod_event_socket reads it:
every word after ``CUSTOM`` is a subclass name (mod_event_socket.c, ``event`` command)."""

from fork_server.app import SUBSCRIBED_EVENTS


def as_freeswitch_reads_it(words):
    events, subclasses, custom = set(), set(), False
    for w in words:
        if custom:
            subclasses.add(w)
        else:
            events.add(w)
            custom = w == "CUSTOM"
    return events, subclasses


def test_every_event_we_handle_is_subscribed_as_an_event_not_a_subclass():
    events, subclasses = as_freeswitch_reads_it(SUBSCRIBED_EVENTS)
    assert {"PLAYBACK_START", "PLAYBACK_STOP", "DTMF", "CHANNEL_HANGUP_COMPLETE", "CUSTOM"} <= events
    assert {"mod_audio_fork::connect_failed", "mod_audio_fork::disconnect", "mod_audio_fork::play_audio"} <= subclasses
    assert all(s.startswith("mod_audio_fork::") for s in subclasses)
