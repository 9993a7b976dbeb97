from __future__ import annotations

from pipeline.gop import GopCutter
from pipeline.media import CodecConfig, MediaUnit, Track

CONFIG = CodecConfig(b"avcc", b"asc", 1280, 720, 30.0)


def video(dts: int, key: bool = False) -> MediaUnit:
    return MediaUnit(Track.VIDEO, dts + 3000, dts, key, b"v")


def audio(dts: int) -> MediaUnit:
    return MediaUnit(Track.AUDIO, dts, dts, True, b"a")


def test_cuts_at_keyframes_and_keeps_audio_with_its_time_span() -> None:
    cutter = GopCutter("s", CONFIG)
    units = [audio(0), video(0, True), video(3000), audio(1920)]
    units += [audio(6000), video(6000, True), video(9000), audio(7920)]
    gops = [g for u in units if (g := cutter.push(u)) is not None]
    last = cutter.flush()
    assert last is not None
    gops.append(last)
    assert [g.sequence for g in gops] == [0, 1]
    first, second = gops
    assert first.units[0].keyframe and first.units[0].track is Track.VIDEO
    assert first.duration_90k == 6000 and second.duration_90k == 6000
    assert [u.dts_90k for u in first.audio] == [1920]  # audio before the 1st keyframe dropped
    assert [u.dts_90k for u in second.audio] == [6000, 7920]
    assert second.start_pts_90k == 9000


def test_audio_arriving_late_goes_to_the_gop_of_its_time() -> None:
    cutter = GopCutter("s", CONFIG)
    for unit in [video(0, True), video(3000), video(6000, True)]:
        gop = cutter.push(unit)
    # audio at 5000 arrived after the keyframe at 6000 was seen: it is in GOP 1's span
    assert gop is not None and gop.sequence == 0
    cutter.push(audio(6500))
    last = cutter.flush()
    assert last is not None and [u.dts_90k for u in last.audio] == [6500]


def test_discontinuity_marks_only_the_next_gop() -> None:
    cutter = GopCutter("s", CONFIG, next_sequence=5)
    cutter.push(video(0, True))
    cutter.mark_discontinuity()
    first = cutter.push(video(900_000, True))
    second = cutter.push(video(906_000, True))
    assert first is not None and second is not None
    assert first.sequence == 5 and first.discontinuity
    assert second.sequence == 6 and not second.discontinuity
