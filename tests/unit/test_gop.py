from __future__ import annotations

from pipeline.gop import Gop, GopCutter
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


def test_parts_hand_out_every_unit_once_and_hold_audio_ahead_of_video() -> None:
    cutter = GopCutter("s", CONFIG)
    cutter.push(video(0, True))
    cutter.push(audio(1000))
    cutter.push(audio(5000))  # ahead of the newest video frame: not in a part yet
    first = cutter.take_part()
    assert [u.dts_90k for u in first] == [0]
    assert cutter.open_sequence == 0
    cutter.push(video(3000))
    second = cutter.take_part()
    assert [u.dts_90k for u in second] == [1000, 3000]
    gop = cutter.push(video(6000, True))
    assert gop is not None
    last = cutter.unsent(gop)
    assert [u.dts_90k for u in last] == [5000]
    sent = [*first, *second, *last]
    assert sorted(u.dts_90k for u in sent) == sorted(u.dts_90k for u in gop.units)
    assert cutter.take_part() == [video(6000, True)]


def test_parts_assemble_into_the_whole_gop_record() -> None:
    from schemas.records import PartAssembler, gop_to_record

    cutter = GopCutter("s", CONFIG)
    parts = []
    for unit in [video(0, True), audio(100), video(3000), audio(3100), video(6000)]:
        cutter.push(unit)
        taken = cutter.take_part()
        if taken:
            head = Gop("s", 0, CONFIG, tuple(taken), 3000, 0)
            parts.append(
                gop_to_record(
                    head, channel="c", ingest_time_ms=0, part_index=len(parts), last_part=False
                )
            )
    gop = cutter.push(video(9000, True))
    assert gop is not None
    last = Gop("s", 0, CONFIG, tuple(cutter.unsent(gop)), 3000, gop.duration_90k)
    parts.append(
        gop_to_record(last, channel="c", ingest_time_ms=0, part_index=len(parts), last_part=True)
    )
    assembler = PartAssembler()
    results = [assembler.add(p) for p in parts]
    assert results[:-1] == [None] * (len(parts) - 1)
    whole = results[-1]
    expected = gop_to_record(gop, channel="c", ingest_time_ms=0)
    assert whole is not None
    assert sorted(p["dts_90k"] for p in whole["packets"]) == sorted(
        p["dts_90k"] for p in expected["packets"]
    )
    assert whole["duration_90k"] == 9000 and whole["last_part"] and whole["part_index"] == 0
    assert assembler.add(parts[1]) is None  # a part without its first part is dropped
