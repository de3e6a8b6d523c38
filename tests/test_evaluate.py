"""COCO evaluation (training/evaluate.py), and the tag diagnostics (training/tag_diagnostics.py): grouping with
ground-truth locations, and group margins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tagtrack.model.codec import render_tag_maps
from tagtrack.model.errors import UserFacingError
from tagtrack.model.predict import PredictConfig
from tagtrack.model.schema import COCO17
from tagtrack.training.evaluate import (
    COCO_KEYPOINT_METRICS,
    evaluate_checkpoint,
    evaluate_results,
    format_metrics,
    load_coco_annotations,
    perfect_results_from_annotations,
    poses_to_coco_results,
    pseudo_label_quality,
    write_results,
)
from tagtrack.training.tag_diagnostics import (
    evaluate_grouping_with_gt_locations,
    evaluate_temporal_margin,
    group_ground_truth_joints,
    group_margin,
    reference_tags,
    summarize_margins,
    summarize_temporal_margins,
    temporal_group_margin,
)
from tagtrack.training.synthetic import SceneConfig, generate_clips, generate_dataset
from tests.conftest import save_tiny_checkpoint

SCENE = SceneConfig(width=128, height=128, min_people=2, max_people=3)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """Four generated scenes (stick people, some ignore regions and crowds) with COCO annotations."""
    return generate_dataset(tmp_path_factory.mktemp("synthetic"), 4, SCENE, seed=3)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def _jitter(results: list[dict], pixels: float, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    noisy = []
    for result in results:
        keypoints = np.array(result["keypoints"], dtype=np.float64).reshape(-1, 3)
        keypoints[:, :2] += rng.normal(0, pixels, (len(keypoints), 2))
        noisy.append(dict(result, keypoints=keypoints.reshape(-1).tolist()))
    return noisy


# ---------------------------------------------------------------- results files


def test_perfect_results_score_one_and_degraded_lower(generated, tmp_path):
    perfect = perfect_results_from_annotations(generated)
    assert perfect, "the generated scenes have people with keypoints"
    metrics = evaluate_results(perfect, generated)
    assert set(COCO_KEYPOINT_METRICS) <= metrics.keys()
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)
    noisy = evaluate_results(_jitter(perfect, 4.0), generated)
    assert noisy["AP"] < 0.9
    assert evaluate_results(perfect[: len(perfect) // 2], generated)["AR"] < 0.75  # half the people missed
    # A results file on disk scores the same as the list.
    path = write_results(perfect, tmp_path / "results.json")
    assert evaluate_results(path, generated)["AP"] == pytest.approx(1.0)
    assert "Average Precision" in format_metrics(metrics)


def test_empty_results_score_zero(generated):
    metrics = evaluate_results([], generated)
    assert metrics["AP"] == 0.0 and metrics["num_results"] == 0


def test_perfect_results_on_shared_coco_mini(shared_data):
    annotations = shared_data / "annotations" / "coco_mini" / "person_keypoints_train2017.json"
    if not annotations.is_file():
        pytest.skip("COCO mini annotations not in shared data")
    perfect = perfect_results_from_annotations(annotations)
    assert evaluate_results(perfect, annotations)["AP"] == pytest.approx(1.0)
    assert evaluate_results(_jitter(perfect, 6.0), annotations)["AP"] < 0.7


# ---------------------------------------------------------------- a checkpoint end to end


def test_evaluate_checkpoint_random_weights_runs(tiny_checkpoint, generated, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "results.json"
    metrics = evaluate_checkpoint(tiny_checkpoint, generated, generated.parent / "images", results_json=out,
                                  progress=False)
    assert set(COCO_KEYPOINT_METRICS) <= metrics.keys() and metrics["num_images"] == 4
    assert 0.0 <= metrics["AP"] < 0.2  # random weights
    assert isinstance(json.loads(out.read_text()), list)
    # Flip and two scales, with a decoder that accepts weak peaks so that poses are really produced.
    config = PredictConfig(flip=True, scales=(1.0, 2.0))
    config.decode.detection_threshold = 0.0
    metrics = evaluate_checkpoint(tiny_checkpoint, generated, generated.parent / "images", predict_config=config,
                                  max_images=2, progress=False)
    assert metrics["num_images"] == 2 and metrics["num_results"] > 0 and metrics["AP"] < 0.2


@pytest.mark.slow
def test_evaluate_checkpoint_on_shared_coco_images(tiny_checkpoint, shared_data):
    annotations = shared_data / "annotations" / "coco_mini" / "person_keypoints_train2017.json"
    images = shared_data / "images" / "coco_mini" / "train2017"
    if not annotations.is_file() or not images.is_dir():
        pytest.skip("COCO mini not in shared data")
    metrics = evaluate_checkpoint(tiny_checkpoint, annotations, images, input_hw=(128, 192), max_images=3,
                                  progress=False)
    assert metrics["num_images"] == 3 and 0.0 <= metrics["AP"] <= 1.0


# ---------------------------------------------------------------- grouping with ground-truth locations


def _two_people_scene():
    """Two people side by side on a 32x48 map; image pixels are map pixels x 4 (stride) + offsets."""
    rng = np.random.default_rng(5)
    people_map = np.zeros((2, 17, 3))
    people_map[0, :, 0] = rng.uniform(4, 18, 17)
    people_map[1, :, 0] = rng.uniform(28, 44, 17)
    people_map[:, :, 1] = rng.uniform(2, 30, (2, 17))
    people_map[:, :, 2] = 2
    people_map[1, 3, 2] = 0  # one unlabelled joint
    people_image = people_map.copy()
    people_image[..., :2] = people_map[..., :2] * 4 + 1.5
    return people_map, people_image


def test_grouping_gt_locations_perfect_tags_score_one():
    people_map, people_image = _two_people_scene()
    annotations = {
        "images": [{"id": 1, "file_name": "x.jpg", "width": 200, "height": 130}],
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.keypoint_names)}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 2000.0,
             "num_keypoints": int((p[:, 2] > 0).sum()), "bbox": [0, 0, 60, 120],
             "keypoints": [float(v) for v in p.reshape(-1)]}
            for i, p in enumerate(people_image)],
    }
    tags = render_tag_maps(people_map, np.array([[0.0], [3.0]]), 32, 48, sigma=1.5)
    poses = group_ground_truth_joints((17, 32, 48), tags, people_map, people_image, COCO17, tag_threshold=1.0)
    assert len(poses) == 2
    assert evaluate_results(poses_to_coco_results(poses, 1), annotations)["AP"] == pytest.approx(1.0)
    # Tags that do not tell the people apart group some of the left person's joints with the right one.
    confused = render_tag_maps(people_map, np.array([[0.0], [0.3]]), 32, 48, sigma=1.5)
    confused[:, :, :, 24:] = 0.0
    poses = group_ground_truth_joints((17, 32, 48), confused, people_map, people_image, COCO17, tag_threshold=1.0)
    assert evaluate_results(poses_to_coco_results(poses, 1), annotations)["AP"] < 0.5


def test_the_diagnostics_place_true_joints_on_the_maps_at_the_networks_stride():
    from tagtrack.training.tag_diagnostics import _network_maps

    def stride_2_network(batch):  # maps at half the input size, as a network with the finer heatmap head gives
        height, width = batch.shape[2] // 2, batch.shape[3] // 2
        return np.zeros((1, 17, height, width), np.float32), np.zeros((1, 17, 1, height, width), np.float32)

    letterbox, heatmaps, _ = _network_maps(stride_2_network, np.zeros((128, 192, 3), np.uint8), (128, 192))
    assert heatmaps.shape == (17, 64, 96) and letterbox.stride == 2
    np.testing.assert_allclose(letterbox.image_to_map(np.array([[81.5, 49.5]])), [[40.5, 24.5]])


def test_grouping_with_gt_locations_runs_on_a_checkpoint(tiny_checkpoint, generated):
    torch.set_num_threads(1)
    result = evaluate_grouping_with_gt_locations(tiny_checkpoint, generated, generated.parent / "images",
                                                 progress=False)
    assert {"predicted", "gt_locations", "group_margin"} <= result.keys()
    # Ground-truth joints are always found, so every labelled person yields a candidate pose.
    assert result["gt_locations"]["num_results"] >= 4
    assert result["group_margin"]["count"] >= 1


# ---------------------------------------------------------------- group margins on hand-built maps


def _tag_maps(people: list[tuple[list[tuple[int, int]], list[float]]], tag_dim: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Maps [17,L,16,16] holding each person's tag at their joints; joints [N,17,3] with the first
    len(points) joints visible."""
    tags = np.full((17, tag_dim, 16, 16), -9.0)
    joints = np.zeros((len(people), 17, 3))
    for n, (points, tag) in enumerate(people):
        for k, (x, y) in enumerate(points):
            tags[k, :, y, x] = tag
            joints[n, k] = (x, y, 2)
    return tags, joints


def test_group_margin_known_answers():
    tags, joints = _tag_maps([([(1, 1), (2, 2)], [0.0]), ([(8, 8), (9, 9)], [3.0]), ([(4, 12)], [1.5])])
    assert group_margin(tags, joints, tag_threshold=1.0) == pytest.approx(0.5)  # 1.5 - 1.0
    assert group_margin(tags, joints[:2], tag_threshold=1.0) == pytest.approx(2.0)  # 3.0 - 1.0
    assert group_margin(tags, joints[:1], tag_threshold=1.0) is None
    # A person's reference tag is the mean over their joints; joints off the map are skipped.
    tags[1, 0, 2, 2] = 1.0
    joints[0, 2] = (40, 40, 2)
    assert reference_tags(tags, joints)[0, 0] == pytest.approx(0.5)
    vectors, vjoints = _tag_maps([([(1, 1)], [0.0, 0.0]), ([(5, 5)], [3.0, 4.0])], tag_dim=2)
    assert group_margin(vectors, vjoints, tag_threshold=1.0) == pytest.approx(4.0)  # |(3,4)| - 1
    summary = summarize_margins([0.5, -0.5, None, 1.0])
    assert summary["count"] == 3 and summary["min"] == -0.5 and summary["fraction_positive"] == pytest.approx(2 / 3)


def test_temporal_group_margin_known_answers():
    tags_a, joints_a = _tag_maps([([(1, 1)], [0.0]), ([(8, 8)], [2.0])])
    tags_b, joints_b = _tag_maps([([(9, 9)], [2.5]), ([(2, 1)], [0.2])])
    good = temporal_group_margin(tags_a, joints_a, [7, 9], tags_b, joints_b, [9, 7])
    np.testing.assert_allclose(sorted(good.same), [0.2, 0.5])
    np.testing.assert_allclose(sorted(good.different), [1.8, 2.5])
    assert good.margin == pytest.approx(1.3) and good.match_accuracy == 1.0
    # Identities swapped between the views: the nearest reference is always the other person.
    swapped = temporal_group_margin(tags_a, joints_a, [7, 9], tags_b, joints_b, [7, 9])
    assert swapped.margin == pytest.approx(0.2 - 2.5) and swapped.match_accuracy == 0.0
    # A person seen in one view only adds only different-person distances.
    tags_c, joints_c = _tag_maps([([(9, 9)], [2.5]), ([(2, 1)], [0.2]), ([(5, 5)], [6.0])])
    extra = temporal_group_margin(tags_a, joints_a, [7, 9], tags_c, joints_c, [9, 7, 11])
    assert len(extra.same) == 2 and len(extra.different) == 4
    summary = summarize_temporal_margins([good, swapped])
    assert summary["pairs"] == 2
    assert summary["same_mean"] == pytest.approx(np.mean([0.2, 0.5, 1.8, 2.5]))
    assert summary["different_min"] == pytest.approx(0.2)
    assert summary["margin"] == pytest.approx(0.2 - 2.5)
    assert summary["match_accuracy"] == pytest.approx(0.5)
    assert summary["pair_margin_positive"] == pytest.approx(0.5)


def test_temporal_margin_on_generated_clip(tiny_checkpoint, tmp_path):
    torch.set_num_threads(1)
    clips = generate_clips(tmp_path / "clips", 1, 3, SceneConfig(width=128, height=128, min_people=2, max_people=2))
    summary = evaluate_temporal_margin(tiny_checkpoint, clips, tmp_path / "clips" / "images", progress=False)
    assert summary["pairs"] == 2
    assert np.isfinite(summary["same_mean"]) and np.isfinite(summary["different_min"])


# ---------------------------------------------------------------- bad inputs


def test_bad_annotation_files_name_the_file(tmp_path, tiny_checkpoint):
    with pytest.raises(UserFacingError, match="missing.json"):
        load_coco_annotations(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserFacingError, match="broken.json"):
        evaluate_results([], broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"images": []}))
    with pytest.raises(UserFacingError, match="wrong.json"):
        evaluate_checkpoint(tiny_checkpoint, wrong, tmp_path, progress=False)
    bad_results = tmp_path / "results.json"
    bad_results.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(UserFacingError, match="results.json"):
        evaluate_results(bad_results, {"images": [], "annotations": [], "categories": [{"id": 1}]})


def test_missing_images_and_checkpoint_name_the_file(generated, tmp_path, tiny_checkpoint):
    data = json.loads(generated.read_text())
    data["images"][0]["file_name"] = "gone.png"
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserFacingError, match="gone.png"):
        evaluate_checkpoint(tiny_checkpoint, path, generated.parent / "images", progress=False)
    with pytest.raises(UserFacingError, match="nothere.safetensors"):
        evaluate_checkpoint(tmp_path / "nothere.safetensors", generated, generated.parent / "images", progress=False)
    with pytest.raises(UserFacingError, match="no_folder"):
        evaluate_checkpoint(tiny_checkpoint, generated, tmp_path / "no_folder", progress=False)


# ---------------------------------------------------------------- pseudo-labels against ground truth


def test_pseudo_label_quality_counts():
    sigmas_area = 2000.0

    def person(x: float, y: float) -> list[float]:
        points = np.c_[x + np.arange(17) * 2.0, y + np.arange(17) * 5.0, np.full(17, 2)]
        return points.reshape(-1).tolist()

    categories = [{"id": 1, "name": "person", "keypoints": list(COCO17.keypoint_names)}]
    truth = {
        "images": [{"id": 5, "file_name": "a.jpg", "width": 640, "height": 480}],
        "categories": categories,
        "annotations": [
            {"id": i + 1, "image_id": 5, "category_id": 1, "iscrowd": 0, "num_keypoints": 17, "area": sigmas_area,
             "bbox": [x, y, 32, 80], "keypoints": person(x, y)}
            for i, (x, y) in enumerate([(10, 10), (200, 10), (400, 10)])],
    }
    labels = {
        "images": [{"id": 1, "file_name": "src_000000.jpg", "source_file": "/data/a.jpg", "width": 640, "height": 480}],
        "categories": categories,
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 17, "score": 0.8,
             "bbox": [10, 10, 32, 80], "keypoints": person(10, 10)},                        # person 1
            {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 0, "score": 0.2,
             "bbox": [190, 0, 60, 110], "keypoints": [0] * 51},                              # covers person 2
            {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 17, "score": 0.5,
             "bbox": [500, 300, 32, 80], "keypoints": person(500, 300)},                     # nobody there
        ],
    }
    quality = pseudo_label_quality(labels, truth)
    assert (quality["truth_people"], quality["labelled"], quality["ignored"], quality["missed"]) == (3, 1, 1, 1)
    assert quality["labels"] == 2 and quality["false_labels"] == 1 and quality["ignore_regions"] == 1
    assert 0.0 < quality["AP"] < 1.0  # one of three found, ranked above the false label


# ---------------------------------------------------------------- the command line


def test_main_eval_prints_the_table_and_fails_cleanly(tiny_checkpoint, generated, tmp_path, capsys):
    from tagtrack import main

    out = tmp_path / "results.json"
    code = main.main(["eval", "--weights", str(tiny_checkpoint), "--data", str(generated),
                      "--images", str(generated.parent / "images"), "--max-images", "2", "--json-out", str(out),
                      "--set", "decode.top_k=7"])
    printed = capsys.readouterr().out
    assert code == 0 and "Average Precision  (AP) @[ IoU=0.50:0.95" in printed and out.is_file()
    # COCO results stay a bare list; the settings that made them are beside them
    settings = json.loads((tmp_path / "results.settings.json").read_text())
    assert settings["decode"]["top_k"] == 7 and settings["weights"] == str(tiny_checkpoint)
    code = main.main(["eval", "--weights", str(tiny_checkpoint), "--data", str(generated),
                      "--images", str(generated.parent / "images"), "--set", "decode.top_k=many"])
    assert code == 2 and "decode.top_k: expected int" in capsys.readouterr().err
    code = main.main(["eval", "--weights", str(tiny_checkpoint), "--data", str(tmp_path / "none.json"),
                      "--images", str(tmp_path)])
    assert code == 2 and "none.json" in capsys.readouterr().err
    code = main.main(["eval", "--weights", str(tiny_checkpoint), "--data", str(generated),
                      "--images", str(generated.parent / "images"), "--input-size", "100", "64"])
    assert code == 2 and "multiples of 64" in capsys.readouterr().err
