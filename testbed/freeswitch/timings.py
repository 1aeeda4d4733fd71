"""Measured timings of a real FreeSWITCH 1.10.12, as configurable defaults (REF "Playback timing")."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Timings"]


@dataclass(frozen=True, slots=True)
class Timings:
    ptime_ms: int = 20  # PCMU 20 ms, as measured
    # sendmsg execute playback (event-lock): PLAYBACK_START 20 ms median after the command,
    # first audio 30 ms; queued segments play back to back, sample-exact.
    sendmsg_start_ms: int = 20
    # uuid_broadcast: 5 lead frames before EVERY file (100 ms at 20 ms); with no caller RTP
    # it waits for 9 empty reads (180 ms). On an idle park the first audio is 128 ms after
    # the command: 5 × 20 ms of lead plus about 28 ms of setup.
    lead_frames: int = 5
    lead_frames_no_rtp: int = 9
    broadcast_setup_ms: int = 28
    # uuid_break without `all`: the next queued file starts about 160 ms later.
    break_next_start_ms: int = 160
    # playAudio text frame → mod_audio_fork::play_audio event: median 20 ms.
    play_audio_event_ms: int = 20
    # A file at another rate than the channel's loses ~17 samples (.r16 into 8 kHz: 2.1 ms hole).
    resample_loss_samples: int = 17
    # MOD_AUDIO_FORK_BUFFER_SECS (1–5, default 2).
    fork_buffer_secs: float = 2.0
    # 1 = one frame per packet; n > 1 merges n frames into one message, as under load.
    fork_merge_frames: int = 1
    # Every `playback` start and every return to `park` runs switch_channel_audio_sync; with no
    # jitter buffer mod_sofia flushes the RTP socket and the fork gets this many frames of
    # silence in place of the caller (measured 2026-12-06: 2 each, on mono 8k and 16k forks).
    audio_sync_frames: int = 2
    # With jitterbuffer_msec set the flush is skipped and the buffer reset: 20 ms lost no frame
    # over 3 playbacks (300 frames); 40 ms lost 5 (2 at the first start, then 1 per sync), modelled
    # as 1 per sync (one measurement; the first start's extra frame is not modelled).
    audio_sync_frames_jb20: int = 0
    audio_sync_frames_jb_larger: int = 1
