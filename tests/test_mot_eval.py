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
    evaluate_file,
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
    """A thin pose (joints on one column, as the default model gives small walkers) centred at (x, y), with
    the whole-body box the pipeline gives it: 40 x 100 about (x, y), the ground truth's boxes here."""
    keypoints = np.zeros((17, 3), dtype=np.float32)
    keypoints[:, 0] = x
    keypoints[:, 1] = np.linspace(y - 40, y + 40, 17)
    keypoints[:, 2] = 0.9
    return Pose(keypoints=keypoints, score=score, box=np.array([x - 20, y - 50, x + 20, y + 50], np.float32),
                tag=np.zeros(1, np.float32))


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
    assert main.main(["eval-track", poses, "--gt", gt]) == 0  # TrackEval on the people's boxes
    out = capsys.readouterr().out
    assert "HOTA 100.0 (DetA 100.0, AssA 100.0, LocA 100.0)  MOTA 100.0  IDF1 100.0  ID switches 0" in out
    assert "TrackEval MOT15 protocol" in out
    assert main.main(["eval-track", poses, "--gt", gt, "--match", "centroid"]) == 0  # ours, py-motmetrics
    assert "MOTA 100.0  IDF1 100.0  ID switches 0" in capsys.readouterr().out
    # Re-tracked over every person: our tracker needs confirm_hits frames before it reports anyone.
    assert main.main(["eval-track", poses, "--gt", gt, "--retrack", "--match", "centroid"]) == 0
    assert "misses 4" in capsys.readouterr().out
    assert main.main(["eval-track", poses, "--gt", gt, "--retrack"]) == 0
    assert "misses 4" in capsys.readouterr().out


def one_error_line(capsys) -> str:
    """The command's stderr, checked to be exactly one `error:` line (no traceback)."""
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    return err.strip()


def test_eval_track_refuses_bad_input_with_one_line(tmp_path, capsys):
    gt = write(tmp_path / "gt.txt", truth_rows())
    assert main.main(["eval-track", str(tmp_path / "missing.jsonl"), "--gt", gt]) == 2
    assert one_error_line(capsys) == f"error: poses file {tmp_path / 'missing.jsonl'} does not exist"
    broken = write(tmp_path / "broken.jsonl", ["{not json"])
    assert main.main(["eval-track", broken, "--gt", gt]) == 2
    assert "line 1 is not a tagtrack JSON Lines record" in one_error_line(capsys)
    boxes = write(tmp_path / "boxes.txt", ["1,4,110,100,40,100,0.9,-1,-1,-1"])
    assert main.main(["eval-track", boxes, "--gt", gt, "--retrack"]) == 2
    one_error_line(capsys)
    assert main.main(["eval-track", boxes, "--gt", gt, "--frames", "5", "2"]) == 2
    one_error_line(capsys)


def test_ground_truth_that_is_not_motchallenge_csv_names_file_and_line(tmp_path, capsys):
    boxes = write(tmp_path / "boxes.txt", ["1,4,110,100,40,100,0.9,-1,-1,-1"])
    for rows, said in ((["a,b,c"], "line 1 ('a,b,c') is not frame,id,left,top,width,height"),
                       (["1,1,80,200,40,100,1,-1,-1,-1", "1 1 80 200 40 100 1"], "line 2"),  # not CSV
                       (["1,1,80,200,40,100,1,-1,-1,-1", "", "2.5,1,80,200,40,100,1"], "line 3: the frame (2.5)"),
                       (["1,1,80,200,40,100", "1,1,90,200,40,100"], "line 2: id 1 appears twice in frame 1"),
                       (["1,1,80,200,-40,100"], "line 1: negative box width")):
        gt = write(tmp_path / "bad.txt", rows)
        for match in ("trackeval", "centroid"):
            assert main.main(["eval-track", boxes, "--gt", gt, "--match", match]) == 2
            line = one_error_line(capsys)
            assert str(tmp_path / "bad.txt") in line and said in line, line


def test_results_for_another_sequence_length_name_file_and_line(tmp_path, capsys):
    # JSON Lines hold a record per frame: 3 frames scored against 5 frames of truth is another video.
    gt = write(tmp_path / "gt.txt", truth_rows())
    short = write(tmp_path / "short.jsonl", [jsonl_record(i, [(1, pose_at(100.0, 250.0))]) for i in range(3)])
    assert main.main(["eval-track", short, "--gt", gt]) == 2
    line = one_error_line(capsys)
    assert f"{tmp_path / 'short.jsonl'} line 3: its frames run from 1 to 3" in line and "frames 1-5" in line
    assert main.main(["eval-track", short, "--gt", gt, "--frames", "1", "3"]) == 0  # that part of it: fine
    capsys.readouterr()
    # A MOTChallenge layout (SEQ/gt/gt.txt beside SEQ/seqinfo.ini): box rows past seqLength are refused.
    (tmp_path / "SEQ" / "gt").mkdir(parents=True)
    (tmp_path / "SEQ" / "seqinfo.ini").write_text("[Sequence]\nname=SEQ\nseqLength=5\n")
    gt = write(tmp_path / "SEQ" / "gt" / "gt.txt", truth_rows())
    long = write(tmp_path / "long.txt", ["5,1,80,200,40,100,1,-1,-1,-1", "7,1,80,200,40,100,1,-1,-1,-1"])
    assert main.main(["eval-track", long, "--gt", gt]) == 2
    assert f"{tmp_path / 'long.txt'} line 2: frame 7 is past the sequence's 5 frames" in one_error_line(capsys)


def test_frame_range_outside_the_ground_truth_names_file_and_line(tmp_path, capsys):
    gt = write(tmp_path / "gt.txt", truth_rows())
    boxes = write(tmp_path / "boxes.txt", ["1,4,110,100,40,100,0.9,-1,-1,-1"])
    for first, last in ((3, 9), (6, 8)):
        assert main.main(["eval-track", boxes, "--gt", gt, "--frames", str(first), str(last)]) == 2
        line = one_error_line(capsys)
        assert f"frames {first}-{last} lie outside {gt}: its rows cover frames 1 (line 1) to 5 (line 10)" in line


def box_rows(people: dict[int, list[tuple[int, int]]]) -> list[str]:
    """MOT rows {frame: [(id, ground-truth person)]}: each result exactly on that person's ground-truth box
    (person 0: where `truth_rows(dont_care=True)` has its don't-care person, else nobody)."""
    rows = []
    for frame, found in people.items():
        for track_id, person in found:
            left = (100 if person == 1 else 400) + (10 if person == 1 else -10) * (frame - 1) - 20
            rows.append(f"{frame},{track_id},{left if person else 600},200,40,100,0.9,-1,-1,-1")
    return rows


def test_trackeval_scores_of_hand_made_sequences(tmp_path):
    """HOTA, MOTA, IDF1 worked out by hand. Boxes sit exactly on the truth (IoU 1: DetA is the same at every
    IoU threshold alpha of HOTA, LocA 1). HOTA = sqrt(DetA * AssA); DetA = TP / (TP + FN + FP); AssA = mean over
    true positives c of TPA(c) / (TPA(c) + FNA(c) + FPA(c)), where TPA counts the frames in which c's person and
    c's track id are matched, FNA the person's other frames, FPA the track id's other frames."""
    gt = write(tmp_path / "gt.txt", truth_rows())

    def score(people):
        return evaluate_file(write(tmp_path / "result.txt", box_rows(people)), gt)

    perfect = score({frame: [(7, 1), (8, 2)] for frame in FRAMES})
    assert (perfect.hota, perfect.deta, perfect.assa, perfect.loca, perfect.mota, perfect.idf1) == pytest.approx(
        (1.0, 1.0, 1.0, 1.0, 1.0, 1.0))
    assert (perfect.id_switches, perfect.num_objects, perfect.num_track_ids, perfect.frames) == (0, 2, 2, 5)

    # Ids swapped from frame 4: 10 true positives, 2 switches. Person 1 with id 7 for 3 frames, id 8 for 2:
    # A = 3 / (3 + 2 + 2) for 3 matches and 2 / (2 + 3 + 3) for 2, the same for person 2, so
    # AssA = (2 * 3 * 3/7 + 2 * 2 * 2/8) / 10 = 5/14. MOTA = 1 - 2/10; IDF1 = 2 * 6 / (10 + 10).
    swapped = score({frame: [(7 if frame < 4 else 8, 1), (8 if frame < 4 else 7, 2)] for frame in FRAMES})
    assert swapped.deta == pytest.approx(1.0) and swapped.assa == pytest.approx(5 / 14)
    assert swapped.hota == pytest.approx(np.sqrt(5 / 14))  # 0.5976
    assert (swapped.mota, swapped.idf1, swapped.id_switches) == (pytest.approx(0.8), pytest.approx(0.6), 2)

    # Person 2 missed in frame 5 (1 FN) and a false person in frame 1 (1 FP): DetA = 9 / 11; person 1's
    # 5 matches have A = 1, person 2's 4 matches A = 4 / (4 + 1 + 0); AssA = (5 + 4 * 0.8) / 9;
    # MOTA = 1 - (1 + 1) / 10; IDF1 = 2 * 9 / (10 + 10).
    people = {frame: [(7, 1)] + ([(8, 2)] if frame < 5 else []) for frame in FRAMES}
    people[1].append((9, 0))
    missed = score(people)
    assert (missed.deta, missed.assa) == (pytest.approx(9 / 11), pytest.approx(8.2 / 9))
    assert missed.hota == pytest.approx(np.sqrt(8.2 / 11))  # 0.8634
    assert (missed.mota, missed.idf1, missed.false_positives, missed.misses) == (
        pytest.approx(0.8), pytest.approx(0.9), 1, 1)


def test_trackeval_protocol_follows_the_ground_truth(tmp_path):
    """MOT15 ground truth (no classes; a don't-care row is left out, a result on it stays a false positive);
    MOT17 ground truth (column 8: classes; results on a distractor class, 8, are removed)."""
    result = write(tmp_path / "result.txt", box_rows({frame: [(7, 1), (8, 2), (9, 0)] for frame in FRAMES}))
    mot15 = write(tmp_path / "gt15.txt", truth_rows(dont_care=True))
    scores = evaluate_file(result, mot15)
    assert (scores.protocol, scores.false_positives, scores.num_objects) == ("MOT15", 5, 2)
    mot17 = write(tmp_path / "gt17.txt", [row.replace(",1,-1,-1,-1", ",1,1,1,-1").replace(",0,-1,-1,-1", ",0,8,1,-1")
                                          for row in truth_rows(dont_care=True)])
    scores = evaluate_file(result, mot17)
    assert (scores.protocol, scores.false_positives, scores.mota) == ("MOT17", 0, pytest.approx(1.0))


def test_missing_trackeval_is_one_line_saying_how_to_install_it(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "trackeval", None)  # `import trackeval` raises ImportError
    gt = write(tmp_path / "gt.txt", truth_rows())
    assert main.main(["eval-track", write(tmp_path / "r.txt", box_rows({1: [(7, 1)]})), "--gt", gt]) == 2
    assert "pip install --no-deps 'trackeval>=1.3,<2'" in one_error_line(capsys)


def test_real_ground_truth_reads_as_mot15(shared_data):
    """The PETS09-S2L1 ground truth of ../shared/data (skipped without it): 400 frames, MOT15 columns."""
    from tagtrack.tracker.mot_eval import read_mot_rows, scored_frames
    from tagtrack.tracker.trackeval_scores import protocol_of

    path = shared_data / "tracking" / "pets09_s2l1_gt_frames_1-400.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    rows = read_mot_rows(path)
    assert scored_frames(rows, None) == range(1, 401) and protocol_of(rows) == "MOT15"
    assert (rows.values[:, 6] == 0).any()  # don't-care rows


def test_mot_export_writes_one_based_rows_of_tracked_people(tmp_path):
    from types import SimpleNamespace

    from tagtrack.realtime.exports import export_sinks
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
    np.testing.assert_allclose(rows[0, 2:6], [80.0, 200.0, 40.0, 100.0])  # the pose's (whole-body) box
    gt = write(tmp_path / "gt.txt", ["1,1,80,200,40,100,1,-1,-1,-1", "2,1,80,200,40,100,1,-1,-1,-1"])
    assert score_tracks(read_mot_file(gt), read_mot_file(path), rule=MatchRule(mode="iou")).mota == pytest.approx(1.0)
    assert evaluate_file(path, gt).hota == pytest.approx(1.0)


def test_bench_track_on_real_detections_prints_every_tracker(tmp_path, capsys):
    gt = write(tmp_path / "gt.txt", truth_rows())
    lines = [jsonl_record(frame - 1, [(None, pose_at(100 + 10 * (frame - 1), 250.0)),
                                      (None, pose_at(400 - 10 * (frame - 1), 250.0))]) for frame in FRAMES]
    poses = write(tmp_path / "poses.jsonl", lines)
    for match, header in (("trackeval", " HOTA  DetA  AssA  MOTA  IDF1"), ("centroid", " MOTA  IDF1 ID sw")):
        assert main.main(["bench", "track", "--poses", poses, "--gt", gt, "--match", match]) == 0
        out = capsys.readouterr().out
        assert header in out
        for name in ("ours", "ours, geometry only", "greedy OKS (mmpose)", "SORT", "ByteTrack (boxes)"):
            assert f"\n{name} " in out
    assert main.main(["bench", "track", "--poses", poses]) == 2


def test_poses_of_another_keypoint_set_are_read_with_their_own_joints(tmp_path):
    """The reader is model/records.py's: a file of three hand joints (not COCO-17, which the reader once
    assumed and so refused the file) gives poses of its own joints and their centroids."""
    from tagtrack.model.records import frame_record, header_record, json_line, person_record
    from tagtrack.model.schema import KeypointSchema
    from tagtrack.tracker.mot_eval import pose_results

    hand = KeypointSchema(name="hand3", keypoint_names=("wrist", "thumb_tip", "index_tip"), flip_index=(0, 1, 2),
                          skeleton=((0, 1), (0, 2)), oks_sigmas=(0.05, 0.03, 0.03), grouping_order=(0, 1, 2))
    lines = [json_line(header_record({"keypoints": list(hand.keypoint_names)}))]
    for index in range(3):
        keypoints = np.array([[30.0 + index, 10.0, 0.8], [34.0 + index, 4.0, 0.5], [99.0, 99.0, 0.1]], np.float32)
        pose = Pose(keypoints=keypoints, score=0.8, box=Pose.box_from_keypoints(keypoints), tag=np.zeros(1, np.float32))
        lines.append(json_line(frame_record(index, index / 10.0, "hand", (64, 128), [person_record(pose, hand, 5)])))
    path = tmp_path / "hands.jsonl"
    path.write_text("".join(lines))
    frames = read_pose_frames(path)
    assert [f.frame for f in frames] == [1, 2, 3] and frames[0].track_ids == [5]
    assert frames[0].poses[0].keypoints.shape == (3, 3)
    objects = pose_results(frames, min_joint_score=0.2)  # the third joint is below 0.2: not in the centroid
    np.testing.assert_allclose(objects[2].points, [[(31.0 + 35.0) / 2, 7.0]])
    assert objects[3].ids.tolist() == [5]


def test_mota_breakdown_gives_each_false_positive_and_miss_its_cause(tmp_path):
    """bench.track.mota_breakdown on a hand-made sequence: TrackEval's FP, FN and IDSW exactly, each with the
    cause built into it (the true boxes: person 1 at x 80 + 10 (f - 1), person 2 at 380 - 10 (f - 1), 40 x 100,
    a don't-care person at x 600)."""
    from tagtrack.bench.track import Detection, mota_breakdown
    from tagtrack.tracker.config import TrackerConfig
    from tagtrack.tracker.mot_eval import read_mot_rows
    from tagtrack.tracker.trackeval_scores import score_with_trackeval

    gt = write(tmp_path / "gt.txt", truth_rows(dont_care=True))

    def person(frame: int, who: int, shift: float = 0.0) -> np.ndarray:
        left = {1: 80 + 10 * (frame - 1), 2: 380 - 10 * (frame - 1), 0: 600}[who] + shift
        return np.array([left, 200.0, left + 40.0, 300.0])

    def found(box, track_id, score=0.9, state=None):
        return Detection(box, score, track_id, state if state or track_id is None else "confirmed",
                         0.5 * (box[:2] + box[2:]))

    people = {
        1: [found(person(1, 1), 7), found(person(1, 2, 25), 8),       # person 2's box 25 px off: IoU 0.23
            found(person(1, 0), 9), found(np.array([200.0, 400, 240, 500]), 10)],   # on don't care; nobody
        2: [found(person(2, 1), 7), found(person(2, 1, 15), 11),      # a second box on person 1 (IoU 0.45)
            found(person(2, 2), None, state="tentative")],            # person 2 in a tentative track
        3: [found(person(3, 1), 8), found(person(3, 2), None, score=0.05)],   # person 1 switches to id 8
        4: [found(person(4, 2), 12)],                                 # person 1 not detected
        5: [found(person(5, 1), 8), found(person(5, 2), None, score=0.3)],    # person 2 weak, left alone
    }
    breakdown = mota_breakdown(read_mot_file(gt), list(people.items()), FRAMES, TrackerConfig())
    assert breakdown.truth == 10 and breakdown.id_switches == 1
    assert {k: v for k, v in breakdown.false_positives.items() if v} == {
        "on a don't-care person": 1, "loose box, person alone": 1, "duplicate": 1, "nobody near, confident": 1}
    assert {k: v for k, v in breakdown.misses.items() if v} == {
        "loose box, person alone": 1, "held back (tentative track)": 1, "detection under low_score": 1,
        "not detected": 1, "weak detection no track took": 1}
    assert breakdown.mota == pytest.approx(0.0)
    reported = {frame: FrameObjects(np.array([d.track_id for d in found_ if d.track_id is not None], dtype=np.int64),
                                    np.array([d.box for d in found_ if d.track_id is not None]).reshape(-1, 4),
                                    np.zeros((0, 2)), np.zeros(0, dtype=bool)) for frame, found_ in people.items()}
    scores = score_with_trackeval(read_mot_rows(gt), {"r": reported}, FRAMES)["r"]
    assert (scores.false_positives, scores.misses, scores.id_switches) == (4, 5, 1)


def test_bench_track_over_several_detection_sets_prints_each_and_the_mean(tmp_path, capsys):
    from tagtrack.bench import track

    gt = write(tmp_path / "gt.txt", truth_rows())
    both = write(tmp_path / "both.jsonl", [jsonl_record(frame - 1, [
        (None, pose_at(100 + 10 * (frame - 1), 250.0)), (None, pose_at(400 - 10 * (frame - 1), 250.0))])
        for frame in FRAMES])
    one = write(tmp_path / "one.jsonl", [jsonl_record(frame - 1, [(None, pose_at(100 + 10 * (frame - 1), 250.0))])
                                         for frame in FRAMES])
    assert track.main(["--poses", both, one, "--gt", gt]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["detections", "HOTA", "DetA", "AssA", "MOTA", "IDF1", "IDsw"]
    mota = {line.rsplit(maxsplit=6)[0]: line.split()[-3] for line in lines[2:]}
    # Our tracker reports a person from their third frame (confirm_hits 3): 4 of 10 true boxes missed with both
    # people detected (MOTA 60), 7 with one (30); the last row is their mean.
    assert mota == {both: "60.0", one: "30.0", "mean of 2": "45.0"}
