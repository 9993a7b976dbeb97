from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.gop import GOP_OVERHEAD_BYTES, UNIT_OVERHEAD_BYTES, Gop, GopCutter, GopLimits
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


# -- limits (issue 12, item 3): a publisher that never sends a second keyframe --------------

FRAME = b"f" * 20_000  # shared: the tests count bytes held, not the test's own memory


def frame(dts: int, key: bool = False, payload: bytes = FRAME) -> MediaUnit:
    return MediaUnit(Track.VIDEO, dts, dts, key, payload)


def test_a_gop_without_a_next_keyframe_is_closed_at_its_duration() -> None:
    """20 kB frames at 30 fps and no second keyframe held 172 MiB after 5 min."""
    cutter = GopCutter("s", CONFIG)
    gops = []
    for i in range(5 * 60 * 30):
        gop = cutter.push(frame(i * 3000, key=i == 0))
        gops.extend([gop] if gop is not None else [])
        assert cutter.held_bytes <= cutter.limits.max_bytes
    (gop,) = gops
    assert gop.close_reason == "max_duration"
    assert gop.duration_90k == 20 * 90_000 and len(gop.units) == 600
    assert cutter.held_bytes == 0 and cutter.open_sequence is None
    assert cutter.dropped_units == 5 * 60 * 30 - 600  # nothing decodable until a keyframe


def test_a_gop_is_closed_before_it_outgrows_the_topic_message() -> None:
    big = b"b" * 1_000_000
    limits = GopLimits(max_bytes=12 * 1024 * 1024)
    cutter = GopCutter("s", CONFIG, limits=limits)
    gops = [g for i in range(100) if (g := cutter.push(frame(i * 3000, i == 0, big)))]
    assert [g.close_reason for g in gops] == ["max_bytes"]
    record = GOP_OVERHEAD_BYTES + sum(len(u.payload) + UNIT_OVERHEAD_BYTES for u in gops[0].units)
    assert record + len(CONFIG.avc_config) <= limits.max_bytes < 16 * 1024 * 1024
    assert len(gops[0].units) == 12


def test_after_a_cut_the_next_keyframe_starts_a_discontinuous_gop() -> None:
    cutter = GopCutter("s", CONFIG, next_sequence=3, limits=GopLimits(max_duration_ms=100))
    assert cutter.push(frame(0, True)) is None
    assert cutter.push(audio(2000)) is None
    cut = cutter.push(frame(9000))  # 100 ms after the keyframe
    assert cut is not None and cut.sequence == 3 and cut.close_reason == "max_duration"
    assert [u.dts_90k for u in cut.units] == [0, 2000]
    assert cutter.push(frame(12000)) is None and cutter.push(audio(13000)) is None
    assert cutter.dropped_units == 3
    assert cutter.push(frame(15000, True)) is None
    last = cutter.flush()
    assert last is not None and last.sequence == 4 and last.discontinuity
    assert last.close_reason == "end" and last.start_pts_90k == 15000


def test_a_keyframe_no_gop_can_hold_is_dropped() -> None:
    cutter = GopCutter("s", CONFIG, limits=GopLimits(max_bytes=10_000))
    assert cutter.push(frame(0, True)) is None  # 20 kB: too big alone
    assert cutter.open_sequence is None and cutter.dropped_units == 1
    assert cutter.push(frame(3000, True, b"k")) is None
    assert cutter.open_sequence == 0


def test_released_parts_are_not_held_and_every_unit_goes_out_once() -> None:
    cutter = GopCutter("s", CONFIG, release_parts=True)
    sent: list[MediaUnit] = []
    for i in range(90):
        cutter.push(frame(i * 3000, key=i == 0))
        cutter.push(audio(i * 3000 + 1000))
        if i % 15 == 14:
            sent += cutter.take_part()
            assert cutter.held_bytes <= 20_000 + len(b"a")  # at most what came since
    gop = cutter.push(frame(90 * 3000, True))
    assert gop is not None and gop.close_reason == "keyframe"
    sent += cutter.unsent(gop)
    assert len(sent) == 180 and len({id(u) for u in sent}) == 180
    assert gop.start_pts_90k == 0 and gop.duration_90k == 90 * 3000


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["key", "video", "audio"]),
            st.integers(0, 20_000),  # dts step
            st.integers(0, 40_000),  # payload size
            st.booleans(),  # take a part now
        ),
        max_size=120,
    ),
    st.booleans(),
)
def test_limits_hold_for_any_stream(
    events: list[tuple[str, int, int, bool]], release: bool
) -> None:
    limits = GopLimits(max_duration_ms=500, max_bytes=100_000)
    cutter = GopCutter("s", CONFIG, limits=limits, release_parts=release)
    gops: list[Gop] = []
    dts = 0
    for kind, step, size, part in events:
        dts += step
        unit = MediaUnit(
            Track.AUDIO if kind == "audio" else Track.VIDEO, dts, dts, kind != "video", b"x" * size
        )
        gop = cutter.push(unit)
        if gop is not None:
            gops.append(gop)
        if part:
            cutter.take_part()
        assert cutter.held_bytes <= limits.max_bytes
    for gop in gops:
        cost = sum(len(u.payload) + UNIT_OVERHEAD_BYTES for u in gop.units)
        assert cost + GOP_OVERHEAD_BYTES + len(CONFIG.avc_config) <= limits.max_bytes
        if not release:
            assert gop.units[0].keyframe and gop.units[0].track is Track.VIDEO
        if gop.close_reason == "max_duration" and not release:
            assert gop.video[-1].dts_90k - gop.units[0].dts_90k < limits.max_duration_90k


def test_released_parts_assemble_into_the_same_gop_record() -> None:
    """The ingest's flow (parts while the GOP arrives, `unsent()` at the close) gives the
    same whole GOP with `release_parts` as without."""
    from schemas.records import PartAssembler, gop_to_record

    stream = [video(0, True), audio(100), video(3000), audio(3100), video(6000), audio(7000)]
    wholes = []
    for release in (False, True):
        cutter = GopCutter("s", CONFIG, release_parts=release)
        parts = []
        for unit in stream:
            cutter.push(unit)
            if taken := cutter.take_part():
                head = Gop("s", 0, CONFIG, tuple(taken), 3000, 0)
                parts.append(gop_to_record(head, channel="c", ingest_time_ms=0, last_part=False))
                parts[-1]["part_index"] = len(parts) - 1
        gop = cutter.push(video(9000, True))
        assert gop is not None
        last = Gop("s", 0, CONFIG, tuple(cutter.unsent(gop)), gop.start_pts_90k, gop.duration_90k)
        parts.append(gop_to_record(last, channel="c", ingest_time_ms=0, part_index=len(parts)))
        assembler = PartAssembler()
        wholes.append([assembler.add(p) for p in parts][-1])
    assert wholes[0] is not None and wholes[0] == wholes[1]
    assert [p["dts_90k"] for p in wholes[1]["packets"]] == [0, 100, 3000, 3100, 6000, 7000]
