"""The JSON Lines record of poses (model/records.py): what the sinks write is what every reader reads back, for
any keypoint set; bad files are one error naming the file and the line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tagtrack.model.errors import UserFacingError
from tagtrack.model.pose import Pose
from tagtrack.model.records import (
    frame_record,
    json_line,
    person_record,
    read_pose_file,
    read_pose_lines,
    rounded,
    unit_score,
)
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.realtime.jsonl import JsonLinesSink, result_record
from tagtrack.realtime.pipeline import FrameResult, is_confirmed, untracked
from tagtrack.realtime.sources import Frame
from tagtrack.tracker import TrackedPose

# A keypoint set that is not COCO-17: readers that assume COCO-17 fail on it.
HAND = KeypointSchema(name="hand3", keypoint_names=("wrist", "thumb_tip", "index_tip"), flip_index=(0, 1, 2),
                      skeleton=((0, 1), (0, 2)), oks_sigmas=(0.05, 0.03, 0.03), grouping_order=(0, 1, 2))


def hand_pose(x: float, score: float = 0.8) -> Pose:
    keypoints = np.array([[x, 10.0, score], [x + 3.333, 4.0, 0.5], [x - 2.0, 3.0, 0.0]], np.float32)
    return Pose(keypoints=keypoints, score=score, box=Pose.box_from_keypoints(keypoints),
                tag=np.array([0.123456], np.float32))


def result(index: int, people: list[tuple[Pose, int | None]]) -> FrameResult:
    frame = Frame(image=np.zeros((48, 64, 3), np.uint8), index=index, timestamp=index / 25.0, source_id="hand.mp4")
    tracked = [TrackedPose(pose, track_id, 0.0, pose.keypoints) for pose, track_id in people]
    return FrameResult(frame=frame, tracked=tracked, heatmaps=None, timings={}, dropped=0)


def test_any_keypoint_set_is_written_and_read_back_with_its_own_names(tmp_path):
    path = tmp_path / "hands.jsonl"
    settings = {"decode": {}, "tracker": None, "input_hw": [64, 64], "weights": None,
                "keypoints": list(HAND.keypoint_names)}
    sink = JsonLinesSink(path, HAND, settings)
    sink.write(result(0, [(hand_pose(20.0), 4), (hand_pose(40.0, 0.3), None)]))
    sink.write(result(1, []))
    sink.close()

    read = read_pose_file(path)
    assert read.settings == settings and read.keypoint_names == HAND.keypoint_names
    assert [(f.index, f.line, f.width, f.height, f.source_id) for f in read.frames] == [
        (0, 2, 64, 48, "hand.mp4"), (1, 3, 64, 48, "hand.mp4")]
    first, second = read.frames[0].people
    assert (first.track_id, second.track_id) == (4, None)
    # The numbers the file holds: pixels to 0.01, scores and tags to 1e-4.
    np.testing.assert_allclose(first.pose.keypoints, [[20.0, 10.0, 0.8], [23.33, 4.0, 0.5], [18.0, 3.0, 0.0]],
                               atol=1e-6)
    np.testing.assert_allclose(first.pose.tag, [0.1235], atol=1e-6)
    assert first.pose.score == pytest.approx(0.8) and second.pose.score == pytest.approx(0.3)
    # The raw records are the same lines.
    assert read_pose_lines(path) == (settings, [json.loads(line) for line in path.read_text().splitlines()[1:]])


def test_without_a_header_the_names_come_from_the_first_person(tmp_path):
    path = tmp_path / "old.jsonl"
    lines = [json_line(result_record(result(0, []), HAND)),
             json_line(result_record(result(1, [(hand_pose(30.0), 2)]), HAND))]
    path.write_text("".join(lines))
    read = read_pose_file(path)
    assert read.settings is None and read.keypoint_names == HAND.keypoint_names
    assert read.frames[1].people[0].pose.keypoints.shape == (3, 3)


def test_asking_for_joints_the_file_lacks_names_the_line(tmp_path):
    path = tmp_path / "hands.jsonl"
    path.write_text(json_line(result_record(result(0, [(hand_pose(30.0), 2)]), HAND)))
    with pytest.raises(UserFacingError, match=r"hands.jsonl line 1 is not a tagtrack JSON Lines record .*nose"):
        read_pose_file(path, COCO17.keypoint_names)


@pytest.mark.parametrize("line", ["{not json", "[1, 2]", '{"frame_index": 0}'])
def test_a_line_that_is_not_a_record_is_one_error_with_its_number(tmp_path, line):
    path = tmp_path / "bad.jsonl"
    path.write_text(json_line(frame_record(0, 0.0, "a", (4, 4), [])) + "\n" + line + "\n")
    with pytest.raises(UserFacingError, match=r"bad.jsonl line 3 is not a tagtrack JSON Lines record"):
        read_pose_file(path)


def test_a_missing_file_is_one_error(tmp_path):
    with pytest.raises(UserFacingError, match="poses file .*missing.jsonl does not exist"):
        read_pose_file(tmp_path / "missing.jsonl")


def test_numbers_are_rounded_clipped_and_never_nan():
    assert rounded(1.23456) == 1.23 and rounded(1.23456, 4) == 1.2346
    assert rounded(float("nan")) == 0.0 and rounded(float("inf")) == 0.0
    assert unit_score(1.3) == 1.0 and unit_score(-0.2) == 0.0 and unit_score(0.123456) == 0.1235
    pose = hand_pose(10.0)
    pose.keypoints[1, 0] = np.nan
    record = person_record(pose, HAND)
    assert record["track_id"] is None and record["keypoints"]["thumb_tip"]["x"] == 0.0
    json_line(record)  # allow_nan=False: raises if a NaN got through


def test_only_confirmed_people_carry_an_id():
    pose = hand_pose(10.0)
    assert not is_confirmed(untracked(pose)) and untracked(pose).track_id is None
    assert is_confirmed(TrackedPose(pose, 7, 1.0, pose.keypoints))
    # The record of an untracked pose is the record of the bare pose.
    assert person_record(untracked(pose).pose, HAND, untracked(pose).track_id) == person_record(pose, HAND)
