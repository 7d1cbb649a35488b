"""Sources yield one event per part (or per problem), in a defined order, and never read a file half-written."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time

import cv2
import numpy as np
import pytest

from utils.sources import (FileSource, FolderWatcher, SourceError, SourceItem, VideoSource, end_mark_present,
                           open_source, parse_camera_index)


def write_png(path, value, size=(24, 32)):
    """A gray PNG whose pixels all equal `value`, so a test can tell parts apart after decoding."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full(size, value, np.uint8))
    return path


def png_bytes(value, size=(24, 32)):
    return cv2.imencode(".png", np.full(size, value, np.uint8))[1].tobytes()


def write_video(path, frame_values):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
    assert writer.isOpened()
    for value in frame_values:
        writer.write(np.full((24, 32, 3), value, np.uint8))
    writer.release()
    return path


def test_folder_source_is_sorted_recursive_and_reports_bad_files(tmp_path):
    write_png(tmp_path / "b.png", 20)
    write_png(tmp_path / "a.png", 10)
    write_png(tmp_path / "sub" / "c.png", 30)
    (tmp_path / "a2.png").write_bytes(png_bytes(99)[:60])  # truncated PNG
    (tmp_path / "notes.txt").write_text("not an image")
    write_png(tmp_path / ".hidden.png", 1)
    (tmp_path / "d.png.part").write_bytes(png_bytes(2))

    events = list(open_source(str(tmp_path)))

    names = [os.path.relpath(event.id, tmp_path) for event in events]
    assert names == ["a.png", "a2.png", "b.png", "notes.txt", os.path.join("sub", "c.png")]
    kinds = [type(event) for event in events]
    assert kinds == [SourceItem, SourceError, SourceItem, SourceError, SourceItem]
    assert "a2.png" in events[1].message and "notes.txt" in events[3].message
    assert [int(event.image[0, 0, 0]) for event in events if isinstance(event, SourceItem)] == [10, 20, 30]
    assert events[0].image.dtype == np.uint8 and events[0].image.shape == (24, 32, 1)


def test_glob_and_single_file_sources(tmp_path):
    for name, value in (("p2.png", 2), ("p1.png", 1), ("q.png", 3)):
        write_png(tmp_path / name, value)
    assert [os.path.basename(event.id) for event in open_source(str(tmp_path / "p*.png"))] == ["p1.png", "p2.png"]
    (single,) = list(open_source(str(tmp_path / "q.png")))
    assert isinstance(single, SourceItem) and int(single.image[0, 0, 0]) == 3


@pytest.mark.parametrize("spec, message", [("nothing/here/*.png", "matches no file"),
                                           ("does-not-exist", "does-not-exist"),
                                           ("camera:first", "camera:first"),
                                           ("", "--source")])
def test_bad_source_specs_are_value_errors_echoing_the_spec(spec, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        open_source(spec)


def test_source_kinds_are_recognised_without_opening_devices(tmp_path):
    assert parse_camera_index("camera:2") == 2
    camera = open_source("camera:0")
    stream = open_source("rtsp://192.0.2.1/line1")
    video = open_source(str(write_video(tmp_path / "clip.avi", [0, 50])))
    assert isinstance(camera, VideoSource) and camera.live and camera.target == 0
    assert isinstance(stream, VideoSource) and stream.live
    assert isinstance(video, VideoSource) and not video.live
    assert isinstance(open_source(f"watch:{tmp_path}"), FolderWatcher)


def test_file_source_stops_between_items_when_asked(tmp_path):
    stop = threading.Event()
    source = FileSource([write_png(tmp_path / f"{index}.png", index) for index in range(3)], stop=stop)
    seen = []
    for event in source:
        seen.append(event)
        stop.set()
    assert len(seen) == 1


# ---------------------------------------------------------------- watch:DIR
# The watcher runs on a clock the test sets (`clock=`) and the test calls poll() itself: "2 s later" is a number
# the test adds, never a wait. The files are real files in a real folder.


class ManualClock:
    """The watcher's injectable monotonic clock: seconds pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def poll_for(watcher, clock, seconds, step_s=0.5):
    """Poll every `step_s` of watcher time for `seconds` (a poll at the start, none at the end); every event."""
    events = []
    end = clock.now + seconds
    while clock.now < end - 1e-9:
        events += watcher.poll()
        clock.now += step_s
    return events


WRITE_EVENTS = pytest.mark.parametrize("write_events", [True, False], ids=["close-write events", "settle rule only"])


@WRITE_EVENTS
def test_a_file_written_in_two_halves_2_s_apart_is_inspected_once_whole_never_half(tmp_path, write_events):
    clock = ManualClock()
    watcher = FolderWatcher(tmp_path, clock=clock, write_events=write_events)
    data = png_bytes(77, size=(60, 80))
    target = tmp_path / "part.png"
    target.write_bytes(data[: len(data) // 2])  # the camera PC's first half; then it stalls for 2 s
    assert poll_for(watcher, clock, 2.0) == []  # neither the half part nor an error about it
    with open(target, "ab") as handle:
        handle.write(data[len(data) // 2:])
    (event,) = poll_for(watcher, clock, watcher.give_up_s + 5)  # once, and nothing more afterwards
    assert isinstance(event, SourceItem) and event.id == str(target)
    assert event.image.shape == (60, 80, 1) and (event.image == 77).all()  # all of it


@WRITE_EVENTS
def test_a_file_that_keeps_growing_is_retried_not_reported(tmp_path, write_events):
    clock = ManualClock()
    watcher = FolderWatcher(tmp_path, clock=clock, write_events=write_events)
    data = png_bytes(33, size=(120, 160))
    target = tmp_path / "slow_copy.png"
    chunks = [data[start:start + len(data) // 40 + 1] for start in range(0, len(data), len(data) // 40 + 1)]
    events = []
    for chunk in chunks[:-1]:  # a slow network copy: a little more every half second, longer than give_up_s
        with open(target, "ab") as handle:
            handle.write(chunk)
        events += poll_for(watcher, clock, 0.5)
    assert len(chunks) * 0.5 > watcher.give_up_s and events == []
    with open(target, "ab") as handle:
        handle.write(chunks[-1])
    (event,) = poll_for(watcher, clock, watcher.settle_s + 1)
    assert isinstance(event, SourceItem) and (event.image == 33).all()


@pytest.mark.parametrize("extension", [".png", ".jpg", ".bmp", ".webp"])
def test_end_marks_tell_a_whole_image_file_from_a_cut_one(extension):
    data = cv2.imencode(extension, np.full((24, 32), 90, np.uint8))[1].tobytes()
    assert end_mark_present(data[:16], data[-16:], len(data)) is True
    for cut in (1, 2, len(data) // 2):
        part = data[:-cut]
        assert end_mark_present(part[:16], part[-16:], len(part)) is False, cut


def test_formats_without_an_end_mark_are_judged_by_time_alone(tmp_path):
    data = cv2.imencode(".tif", np.full((24, 32), 90, np.uint8))[1].tobytes()
    assert end_mark_present(data[:16], data[-16:], len(data)) is None
    clock = ManualClock()
    watcher = FolderWatcher(tmp_path, clock=clock)
    (tmp_path / "part.tif").write_bytes(data)
    assert poll_for(watcher, clock, watcher.settle_s) == []  # decodes, but nothing says it is whole yet
    (event,) = poll_for(watcher, clock, 1.0)
    assert isinstance(event, SourceItem) and (event.image == 90).all()


def test_a_file_that_decodes_without_its_end_mark_waits_for_the_give_up_time(tmp_path, caplog):
    # What a lenient decoder makes of a half-written JPEG (OpenCV 4 decodes one and greys out the rest): it decodes,
    # but the end-of-image marker is not where it belongs. Here a camera's trailer after the marker does that.
    clock = ManualClock()
    watcher = FolderWatcher(tmp_path, clock=clock)
    data = cv2.imencode(".jpg", np.full((24, 32), 90, np.uint8))[1].tobytes() + b"camera trailer"
    (tmp_path / "trailer.jpg").write_bytes(data)
    assert poll_for(watcher, clock, watcher.give_up_s) == []
    with caplog.at_level(logging.WARNING, logger="utils.sources"):
        (event,) = poll_for(watcher, clock, 1.0)
    assert isinstance(event, SourceItem) and abs(int(event.image[0, 0, 0]) - 90) <= 2
    assert "trailer.jpg" in caplog.text and "end" in caplog.text


def test_an_undecodable_file_is_reported_once_after_it_stopped_changing_and_a_rewrite_is_a_new_part(tmp_path):
    clock = ManualClock()
    watcher = FolderWatcher(tmp_path, clock=clock)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    assert poll_for(watcher, clock, watcher.give_up_s) == []  # it may still be on its way
    (error,) = poll_for(watcher, clock, 1.0)
    assert isinstance(error, SourceError) and error.id == str(bad) and "bad.png" in error.message
    assert poll_for(watcher, clock, 3 * watcher.give_up_s) == []  # reported once
    bad.write_bytes(png_bytes(5))  # the writer delivers it after all: a new part
    (item,) = poll_for(watcher, clock, watcher.settle_s + 1)
    assert isinstance(item, SourceItem) and int(item.image[0, 0, 0]) == 5


def test_an_empty_file_is_reported_once_it_stayed_empty(tmp_path):
    clock = ManualClock()
    watcher = FolderWatcher(tmp_path, clock=clock)
    (tmp_path / "empty.png").write_bytes(b"")
    assert poll_for(watcher, clock, watcher.give_up_s) == []
    (error,) = poll_for(watcher, clock, 3 * watcher.give_up_s)
    assert isinstance(error, SourceError) and "empty" in error.message


@WRITE_EVENTS
def test_watcher_ignores_temporary_names_takes_renamed_files_and_sees_replacements(tmp_path, write_events):
    clock = ManualClock()
    watcher = FolderWatcher(tmp_path, clock=clock, write_events=write_events)
    (tmp_path / "part.png.tmp").write_bytes(png_bytes(1))
    (tmp_path / ".upload.png").write_bytes(png_bytes(2))
    assert poll_for(watcher, clock, watcher.give_up_s + 1) == []
    os.replace(tmp_path / "part.png.tmp", tmp_path / "part.png")  # the writer's rename marks it complete
    first = watcher.poll()
    if write_events:
        (event,) = first  # renamed in and whole: taken at the next poll, no settle wait
    else:
        assert first == []
        clock.now += 0.5
        (event,) = watcher.poll()  # unchanged since the previous poll and whole
    assert event.id == str(tmp_path / "part.png") and int(event.image[0, 0, 0]) == 1

    (tmp_path / "part.png").write_bytes(png_bytes(3, size=(30, 30)))  # a new part under the same name
    (replaced,) = poll_for(watcher, clock, 1.0)
    assert int(replaced.image[0, 0, 0]) == 3


def test_with_close_write_events_a_file_its_writer_holds_open_waits_for_the_close(tmp_path):
    clock = ManualClock()
    watcher = FolderWatcher(tmp_path, clock=clock)
    if not watcher.write_events_available:
        pytest.skip("no inotify close-write events on this system")
    with open(tmp_path / "held.png", "wb") as handle:
        handle.write(png_bytes(44))
        handle.flush()
        assert poll_for(watcher, clock, watcher.settle_s + 1) == []  # looks whole, but its writer is not done
    (event,) = watcher.poll()  # closed: taken at the next poll
    assert isinstance(event, SourceItem) and int(event.image[0, 0, 0]) == 44


def test_watcher_iteration_ticks_when_idle_and_ends_on_stop(tmp_path):
    stop = threading.Event()
    watcher = FolderWatcher(tmp_path, stop=stop, poll_interval_s=0.01)
    events = iter(watcher)
    assert next(events) is None  # an idle tick: nothing new
    stop.set()
    assert list(events) == []


def test_watch_folder_must_exist(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        open_source(f"watch:{tmp_path / 'missing'}")


# ---------------------------------------------------------------- watch:DIR after a restart


def test_files_already_in_the_folder_are_inspected_unless_the_journal_has_them(tmp_path, caplog):
    folder = tmp_path / "incoming"
    inspected_at = time.time()  # when the line that went down journaled its results
    done = write_png(folder / "done.png", 1)
    arrived = write_png(folder / "arrived_while_down.png", 2)
    replaced = write_png(folder / "replaced_while_down.png", 3)
    spelled = write_png(folder / "journaled_under_a_link.png", 4)
    for path in (done, spelled):
        os.utime(path, (inspected_at - 60, inspected_at - 60))  # written a minute before their results
    os.utime(replaced, (inspected_at + 60, inspected_at + 60))  # rewritten after its result
    (tmp_path / "link").symlink_to(folder)
    journaled = {str(done): inspected_at, str(replaced): inspected_at,
                 str(tmp_path / "link" / spelled.name): inspected_at,  # the same folder, spelled another way
                 str(tmp_path / "elsewhere" / arrived.name): inspected_at}  # the same name in another folder
    clock = ManualClock()
    with caplog.at_level(logging.INFO, logger="utils.sources"):
        watcher = FolderWatcher(folder, clock=clock, already_inspected=journaled)
    events = poll_for(watcher, clock, watcher.settle_s + 1)
    assert [event.id for event in events] == [str(arrived), str(replaced)]
    assert [int(event.image[0, 0, 0]) for event in events] == [2, 3]
    assert "4 file(s) already in the folder: 2 already in the journal (skipped), 2 to inspect now" in caplog.text
    assert "1 of them changed after" in caplog.text


def test_a_line_started_on_a_folder_holding_parts_inspects_them_and_says_so(tmp_path, caplog):
    for index in range(3):
        write_png(tmp_path / f"waiting_{index}.png", 10 + index)
    clock = ManualClock()
    with caplog.at_level(logging.INFO, logger="utils.sources"):
        watcher = open_source(f"watch:{tmp_path}", already_inspected={})  # a fresh journal
    watcher.clock = clock
    events = poll_for(watcher, clock, watcher.settle_s + 1)
    assert [int(event.image[0, 0, 0]) for event in events] == [10, 11, 12]
    assert "3 file(s) already in the folder: 0 already in the journal (skipped), 3 to inspect now" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="utils.sources"):
        skipping = FolderWatcher(tmp_path, clock=clock, skip_existing=True)  # only what arrives from now on
    assert poll_for(skipping, clock, skipping.give_up_s + 1) == []
    assert "3 file(s) already in the folder are skipped" in caplog.text


# ---------------------------------------------------------------- cameras, streams, video files


def test_video_file_yields_its_frames_in_order_then_ends(tmp_path):
    path = write_video(tmp_path / "clip.avi", [0, 60, 120, 180])
    events = list(VideoSource(str(path), live=False))
    assert [event.id for event in events] == [f"{path}#{number}" for number in range(1, 5)]
    means = [float(event.image.mean()) for event in events]
    assert means == sorted(means) and means[-1] - means[0] > 100  # the frames, in order (MJPG is lossy)
    assert events[0].image.shape == (24, 32, 3)


def test_unreadable_video_file_is_one_error(tmp_path):
    bogus = tmp_path / "broken.avi"
    bogus.write_bytes(b"not a video")
    (event,) = list(VideoSource(str(bogus), live=False))
    assert isinstance(event, SourceError) and "broken.avi" in event.message


def test_live_source_reports_a_drop_and_reconnects(tmp_path):
    # A real VideoCapture on a file behaves like a camera whose feed stops after two frames.
    path = write_video(tmp_path / "feed.avi", [40, 200])
    waits = []
    camera = VideoSource(str(path), live=True, wait=waits.append)
    events = [event for event in itertools.islice(camera, 8) if event is not None]
    kinds = [type(event).__name__ for event in events]
    assert kinds[:6] == ["SourceItem", "SourceItem", "SourceError", "SourceItem", "SourceItem", "SourceError"]
    assert "dropped" in events[2].message and "attempt 1" in events[2].message
    assert "attempt 1" in events[5].message  # back-off starts again after good frames
    assert events[3].id == f"{path}#3"  # frame numbers keep counting across reconnects
    assert waits == [0.5, 0.5]


def test_live_source_backs_off_then_gives_up(tmp_path):
    waits = []
    camera = VideoSource(str(tmp_path / "unplugged.avi"), live=True, max_reconnects=3, max_backoff_s=1.5,
                         wait=waits.append)
    errors = [event for event in camera if event is not None]
    assert [error.message.split("; ")[1] for error in errors[:3]] == [
        "reconnecting in 0.5 s (attempt 1)", "reconnecting in 1 s (attempt 2)", "reconnecting in 1.5 s (attempt 3)"]
    assert "giving up" in errors[-1].message and len(errors) == 4
    assert waits == [0.5, 1.0, 1.0, 0.5]  # long waits are cut into steps of at most 1 s (idle ticks between)
