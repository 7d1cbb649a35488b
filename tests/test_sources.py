"""Sources yield one event per part (or per problem), in a defined order, and never read a file half-written."""

from __future__ import annotations

import itertools
import os
import threading

import cv2
import numpy as np
import pytest

from utils.sources import (FileSource, FolderWatcher, SourceError, SourceItem, VideoSource, open_source,
                           parse_camera_index)


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


def test_watcher_takes_a_new_file_only_once_it_is_stable(tmp_path):
    write_png(tmp_path / "old.png", 5)  # present at start: not a part of this run
    watcher = FolderWatcher(tmp_path)
    assert watcher.poll() == []

    data = png_bytes(77)
    target = tmp_path / "new.png"
    target.write_bytes(data[: len(data) // 2])  # a camera PC still copying the file
    assert watcher.poll() == []
    with open(target, "ab") as handle:
        handle.write(data[len(data) // 2:])
    assert watcher.poll() == []  # it grew since the last poll: still not stable
    (event,) = watcher.poll()
    assert isinstance(event, SourceItem) and event.id == str(target)
    assert int(event.image[0, 0, 0]) == 77 and int(event.image[-1, -1, 0]) == 77  # all of it, not half
    assert watcher.poll() == [] and watcher.poll() == []  # each file once


def test_watcher_ignores_temporary_names_and_empty_files_and_sees_replacements(tmp_path):
    watcher = FolderWatcher(tmp_path)
    (tmp_path / "part.png.tmp").write_bytes(png_bytes(1))
    (tmp_path / ".upload.png").write_bytes(png_bytes(2))
    (tmp_path / "empty.png").write_bytes(b"")
    watcher.poll()
    assert watcher.poll() == []
    os.replace(tmp_path / "part.png.tmp", tmp_path / "part.png")  # the writer's rename marks it complete
    watcher.poll()
    (event,) = watcher.poll()
    assert event.id.endswith("part.png") and int(event.image[0, 0, 0]) == 1

    (tmp_path / "part.png").write_bytes(png_bytes(3, size=(30, 30)))  # a new part under the same name
    watcher.poll()
    (replaced,) = watcher.poll()
    assert int(replaced.image[0, 0, 0]) == 3


def test_watcher_reports_a_corrupt_file_and_iteration_ends_on_stop(tmp_path):
    stop = threading.Event()
    watcher = FolderWatcher(tmp_path, stop=stop, poll_interval_s=0.01)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    watcher.poll()
    (error,) = watcher.poll()
    assert isinstance(error, SourceError) and "bad.png" in error.message

    events = iter(watcher)
    assert next(events) is None  # an idle tick: nothing new
    stop.set()
    assert list(events) == []


def test_watch_folder_must_exist(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        open_source(f"watch:{tmp_path / 'missing'}")


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
