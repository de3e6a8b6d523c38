"""Tracks scored against MOTChallenge ground truth (tracker/mot_eval.py), on hand-made sequences with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tagtrack import main
from tagtrack.model.pose import Pose
from tagtrack.model.schema import COCO17
from tagtrack.tracker.mot_eval import (
    FrameObjects,
    MatchRule,
    pose_centroids,
    read_mot_file,
    read_pose_frames,
    score_tracks,
    tracked_objects,
)

# Two walkers, 5 frames: person 1 at x 100 -> 140, person 2 at x 400 -> 360; boxes 40 x 100.
FRAMES = range(1, 6)


def truth_rows(dont_care: bool = False) -> list[str]:
    rows = []
    for frame in FRAMES:
        rows.append(f"{frame},1,{100 + 10 * (frame - 1) - 20},200,40,100,1,-1,-1,-1")
        rows.append(f"{frame},2,{400 - 10 * (frame - 1) - 20},200,40,100,1,-1,-1,-1")
        if dont_care:
            rows.append(f"{frame},3,600,200,40,100,0,-1,-1,-1")
    return rows


def write(path, lines) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def pose_at(x: float, y: float, score: float = 0.9) -> Pose:
    """A thin pose (joints on one column, as the default model gives small walkers) centred at (x, y)."""
    keypoints = np.zeros((17, 3), dtype=np.float32)
    keypoints[:, 0] = x
    keypoints[:, 1] = np.linspace(y - 40, y + 40, 17)
    keypoints[:, 2] = 0.9
    return Pose(keypoints=keypoints, score=score, box=Pose.box_from_keypoints(keypoints), tag=np.zeros(1, np.float32))


def results(ids_per_frame: dict[int, list[tuple[int, float, float]]]) -> dict[int, FrameObjects]:
    return {frame: tracked_objects([pose_at(x, y) for _, x, y in people], [i for i, _, _ in people], 0.2)
            for frame, people in ids_per_frame.items()}


def walkers(swap_from: int | None = None) -> dict[int, FrameObjects]:
    out = {}
    for frame in FRAMES:
        a, b = 7, 8
        if swap_from is not None and frame >= swap_from:
            a, b = b, a
        out[frame] = [(a, 100 + 10 * (frame - 1), 250.0), (b, 400 - 10 * (frame - 1), 250.0)]
    return results(out)


def test_perfect_tracks_score_one(tmp_path):
    truth = read_mot_file(write(tmp_path / "gt.txt", truth_rows()))
    scores = score_tracks(truth, walkers())
    assert scores.mota == pytest.approx(1.0) and scores.idf1 == pytest.approx(1.0)
    assert (scores.id_switches, scores.false_positives, scores.misses, scores.mostly_tracked) == (0, 0, 0, 2)
    assert (scores.num_track_ids, scores.max_track_id, scores.frames) == (2, 8, 5)


def test_swapped_ids_count_as_switches(tmp_path):
    truth = read_mot_file(write(tmp_path / "gt.txt", truth_rows()))
    scores = score_tracks(truth, walkers(swap_from=4))
    assert scores.id_switches == 2
    assert scores.mota == pytest.approx(1.0 - 2 / 10)
    assert scores.idf1 == pytest.approx(0.6)  # each person keeps its first id for 3 of 5 frames


def test_centroid_rule_matches_within_half_a_box_height(tmp_path):
    truth = read_mot_file(write(tmp_path / "gt.txt", ["1,1,80,200,40,100,1,-1,-1,-1"]))
    near = results({1: [(5, 100.0, 250.0 + 45.0)]})   # 0.45 box heights from the centre
    far = results({1: [(5, 100.0, 250.0 + 55.0)]})    # 0.55
    assert score_tracks(truth, near).mota == pytest.approx(1.0)
    scores = score_tracks(truth, far)
    assert (scores.misses, scores.false_positives) == (1, 1)
    assert score_tracks(truth, far, rule=MatchRule(max_distance=0.6)).mota == pytest.approx(1.0)


def test_centroid_uses_the_confident_joints_only():
    keypoints = np.zeros((1, 17, 3))
    keypoints[0, :, :2] = [10.0, 20.0]
    keypoints[0, :, 2] = 0.9
    keypoints[0, 0] = [500.0, 500.0, 0.1]  # one unsure joint far away
    np.testing.assert_allclose(pose_centroids(keypoints, 0.2), [[10.0, 20.0]])
    keypoints[0, :, 2] = 0.1  # nothing confident: all found joints
    assert pose_centroids(keypoints, 0.2)[0, 0] > 10.0


def test_results_on_dont_care_people_are_neither_hits_nor_false_positives(tmp_path):
    truth = read_mot_file(write(tmp_path / "gt.txt", truth_rows(dont_care=True)))
    found = walkers()
    for frame in FRAMES:  # a tracked pose on the don't-care person (x 620, box 600..640)
        extra = tracked_objects([pose_at(620.0, 250.0)], [9], 0.2)
        found[frame] = FrameObjects(*(np.concatenate([a, b]) for a, b in zip(
            (found[frame].ids, found[frame].boxes, found[frame].points, found[frame].scored),
            (extra.ids, extra.boxes, extra.points, extra.scored))))
    scores = score_tracks(truth, found)
    assert scores.mota == pytest.approx(1.0) and scores.false_positives == 0 and scores.num_objects == 2


def test_box_results_match_by_iou(tmp_path):
    truth = read_mot_file(write(tmp_path / "gt.txt", ["1,1,100,100,40,100,1,-1,-1,-1"]))
    shifted = read_mot_file(write(tmp_path / "a.txt", ["1,4,110,100,40,100,0.9,-1,-1,-1"]))  # IoU 0.6
    far = read_mot_file(write(tmp_path / "b.txt", ["1,4,125,100,40,100,0.9,-1,-1,-1"]))      # IoU 0.23
    assert score_tracks(truth, shifted, rule=MatchRule(mode="iou")).mota == pytest.approx(1.0)
    assert score_tracks(truth, far, rule=MatchRule(mode="iou")).misses == 1
    with pytest.raises(ValueError):
        MatchRule(mode="oks")


def jsonl_record(frame_index: int, people: list[tuple[int | None, Pose]]) -> str:
    return json.dumps({
        "schema_version": 1, "frame_index": frame_index, "timestamp": frame_index / 10.0, "source_id": "test",
        "image": {"width": 768, "height": 576}, "dropped": 0,
        "people": [{
            "track_id": track_id, "score": pose.score, "box": pose.box.tolist(), "tag": pose.tag.tolist(),
            "keypoints": {name: {"x": float(k[0]), "y": float(k[1]), "score": float(k[2])}
                          for name, k in zip(COCO17.keypoint_names, pose.keypoints)},
        } for track_id, pose in people],
    })


def test_eval_track_command_on_json_lines(tmp_path, capsys):
    gt = write(tmp_path / "gt.txt", truth_rows())
    lines = [jsonl_record(frame - 1, [(1, pose_at(100 + 10 * (frame - 1), 250.0)),
                                      (2, pose_at(400 - 10 * (frame - 1), 250.0))]) for frame in FRAMES]
    header = '{"schema_version":3,"settings":{"decode":{},"tracker":null}}'  # a run's first line: skipped
    poses = write(tmp_path / "poses.jsonl", [header, *lines])
    frames = read_pose_frames(poses)
    assert [f.frame for f in frames] == list(FRAMES) and frames[0].track_ids == [1, 2]
    assert main.main(["eval-track", poses, "--gt", gt]) == 0
    out = capsys.readouterr().out
    assert "MOTA 100.0  IDF1 100.0  ID switches 0" in out
    # Re-tracked over every person: our tracker needs confirm_hits frames before it reports anyone.
    assert main.main(["eval-track", poses, "--gt", gt, "--retrack"]) == 0
    assert "misses 4" in capsys.readouterr().out


def test_eval_track_refuses_bad_input_with_one_line(tmp_path, capsys):
    gt = write(tmp_path / "gt.txt", truth_rows())
    assert main.main(["eval-track", str(tmp_path / "missing.jsonl"), "--gt", gt]) == 2
    assert capsys.readouterr().err.strip() == f"error: poses file {tmp_path / 'missing.jsonl'} does not exist"
    broken = write(tmp_path / "broken.jsonl", ["{not json"])
    assert main.main(["eval-track", broken, "--gt", gt]) == 2
    assert "line 1 is not a tagtrack JSON Lines record" in capsys.readouterr().err
    assert main.main(["eval-track", broken, "--gt", write(tmp_path / "bad.txt", ["a,b,c"])]) == 2
    assert "is not a MOTChallenge file" in capsys.readouterr().err
    boxes = write(tmp_path / "boxes.txt", ["1,4,110,100,40,100,0.9,-1,-1,-1"])
    assert main.main(["eval-track", boxes, "--gt", gt, "--retrack"]) == 2
    assert main.main(["eval-track", boxes, "--gt", gt, "--frames", "5", "2"]) == 2


def test_mot_export_writes_one_based_rows_of_tracked_people(tmp_path):
    from types import SimpleNamespace

    from tagtrack.realtime.sinks import export_sinks
    from tagtrack.tracker.tracker import TrackedPose

    (sink,) = export_sinks(["mot"], tmp_path / "run")
    pose = pose_at(100.0, 250.0)
    for index in range(2):
        frame = SimpleNamespace(index=index, image=np.zeros((576, 768, 3), np.uint8))
        tracked = [TrackedPose(pose, 3, 0.0, pose.keypoints), TrackedPose(pose, None, 0.0, pose.keypoints)]
        sink.write(SimpleNamespace(frame=frame, tracked=tracked))
    sink.close()
    path = tmp_path / "run.mot.txt"
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    assert rows[:, 0].tolist() == [1, 2] and rows[:, 1].tolist() == [3, 3]
    np.testing.assert_allclose(rows[0, 2:6], [84.0, 210.0, 32.0, 80.0])  # 80 px tall, widened to 0.4
    truth = read_mot_file(write(tmp_path / "gt.txt", ["1,1,84,210,32,80,1,-1,-1,-1", "2,1,84,210,32,80,1,-1,-1,-1"]))
    assert score_tracks(truth, read_mot_file(path), rule=MatchRule(mode="iou")).mota == pytest.approx(1.0)


def test_bench_track_on_real_detections_prints_every_tracker(tmp_path, capsys):
    gt = write(tmp_path / "gt.txt", truth_rows())
    lines = [jsonl_record(frame - 1, [(None, pose_at(100 + 10 * (frame - 1), 250.0)),
                                      (None, pose_at(400 - 10 * (frame - 1), 250.0))]) for frame in FRAMES]
    poses = write(tmp_path / "poses.jsonl", lines)
    assert main.main(["bench", "track", "--poses", poses, "--gt", gt]) == 0
    out = capsys.readouterr().out
    for name in ("ours", "ours, geometry only", "greedy OKS (mmpose)", "SORT", "ByteTrack (boxes)"):
        assert f"\n{name} " in out
    assert main.main(["bench", "track", "--poses", poses]) == 2
