"""The synthetic benchmark: the generator's scenes, the scoring, and ours against the baselines."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tagtrack.main import main
from tagtrack.tracker import PoseTracker, TrackerConfig
from tagtrack.tracker.baselines import GreedyOksTracker, SortTracker
from tagtrack.tracker.benchmark import make_sequences, score
from tagtrack.tracker.synthetic import SceneConfig, generate_sequence

SEEDS = [100, 101, 102]  # not the seeds the defaults were measured on


def test_generator_is_seeded_and_has_what_the_benchmark_needs():
    scene = SceneConfig(duration=6.0)
    a, b = generate_sequence(scene, 5), generate_sequence(scene, 5)
    assert [f.timestamp for f in a.frames] == [f.timestamp for f in b.frames]
    np.testing.assert_array_equal(a.frames[50].poses[0].keypoints, b.frames[50].poses[0].keypoints)
    other = generate_sequence(scene, 6)
    assert [f.timestamp for f in other.frames] != [f.timestamp for f in a.frames]

    intervals = np.diff([f.timestamp for f in a.frames])
    assert intervals.min() < 0.9 / scene.fps and intervals.max() > 1.5 / scene.fps  # irregular, with gaps
    truth = [i for f in a.frames for i in f.truth_ids]
    assert -1 in truth  # false people
    assert set(truth) - {-1} == set(range(scene.num_people))
    missing = [float((p.keypoints[:, 2] == 0).mean()) for f in a.frames for p in f.poses]
    assert 0.0 < np.mean(missing) < 0.6  # missed joints
    scores = [p.score for f in a.frames for p, i in zip(f.poses, f.truth_ids) if i >= 0]
    assert min(scores) < 0.5 < max(scores)  # weak and confident people
    visible_counts = [len(f.gt_ids) for f in a.frames]
    assert min(visible_counts) < scene.num_people  # people hidden or out of the picture at times
    for frame in a.frames:
        assert len(frame.gt_ids) == len(frame.gt_boxes) == sum(i >= 0 for i in frame.truth_ids)


def test_tag_modes():
    consistent = generate_sequence(SceneConfig(duration=2.0, tag_dim=3, false_people=0.0), 1)
    random = generate_sequence(SceneConfig(duration=2.0, tag_dim=3, false_people=0.0, tag_mode="random"), 1)

    def spread_within_person(sequence):
        tags = {}
        for frame in sequence.frames:
            for pose, person in zip(frame.poses, frame.truth_ids):
                tags.setdefault(person, []).append(pose.tag)
        return np.mean([np.std(np.array(t), axis=0).mean() for t in tags.values()])

    assert consistent.frames[0].poses[0].tag.shape == (3,)
    assert spread_within_person(consistent) < 0.2 < spread_within_person(random)
    with pytest.raises(ValueError):
        SceneConfig(tag_mode="other")


def test_perfect_tracker_scores_one():
    sequence = generate_sequence(SceneConfig(duration=3.0), 2)

    class Oracle:
        def update(self, poses, timestamp):
            from tagtrack.tracker.tracker import TrackedPose
            frame = next(f for f in sequence.frames if f.timestamp == timestamp)
            return [TrackedPose(p, i + 1, 0.0, p.keypoints) for p, i in zip(frame.poses, frame.truth_ids) if i >= 0]

    result = score(Oracle, [sequence])
    assert result.idf1 == pytest.approx(1.0) and result.mota == pytest.approx(1.0) and result.id_switches == 0


@pytest.mark.slow
@pytest.mark.parametrize("tag_mode", ["consistent", "random"])
def test_ours_beats_both_baselines(tag_mode):
    sequences = make_sequences(SceneConfig(duration=6.0, tag_mode=tag_mode), SEEDS)
    config = TrackerConfig()  # the same defaults for both modes: with random tags it learns not to trust them
    ours = score(lambda: PoseTracker(config), sequences)
    for baseline in (GreedyOksTracker, SortTracker):
        theirs = score(baseline, sequences)
        assert ours.idf1 > theirs.idf1 + 0.1, (baseline.__name__, ours, theirs)
        assert ours.id_switches < theirs.id_switches, (baseline.__name__, ours, theirs)
    if tag_mode == "consistent":  # tags that mean something help
        geometry = score(lambda: PoseTracker(dataclasses.replace(config, use_tags=False)), sequences)
        assert ours.idf1 >= geometry.idf1 and ours.id_switches <= geometry.id_switches


def test_bench_track_command(capsys):
    assert main(["bench", "track", "--seeds", "3", "--duration", "1.5", "--tag-dims", "2", "--people", "1", "3"]) == 0
    out = capsys.readouterr().out
    assert "greedy OKS" in out and "SORT" in out and "geometry only" in out and "ByteTrack" in out
    assert out.count("random") == 5 and out.count("consistent") == 5
    assert "people" in out
    assert main(["bench", "track", "--tag-dims", "0"]) == 2
