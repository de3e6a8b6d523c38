"""Dense distillation targets and close-up views: teacher maps follow the view's affine like the labels do."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tagtrack import main
from tagtrack.model.errors import UserFacingError
from tagtrack.training.config import AugmentConfig
from tagtrack.training.dataset import CocoKeypointDataset, TargetConfig, closeup_affine, upper_body
from tagtrack.training.distill import (dense_targets, suppress_mirror_peaks, teacher_to_image_matrix, warp_teacher_maps,
                                      write_teacher_maps)

NOSE, LEFT_EYE, RIGHT_EYE, LEFT_HIP, RIGHT_HIP, LEFT_SHOULDER = 0, 1, 2, 11, 12, 5


def _peak(heatmap: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(x), int(y)


def _scene(tmp_path: Path, teacher_maps: np.ndarray | None, repeat: int = 1) -> Path:
    """A 128x192 image with one person labelled at the nose only; teacher maps (if any) stored beside it."""
    (tmp_path / "images").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((128, 192, 3), np.uint8))
    keypoints = [0.0] * 51
    keypoints[0:3] = [81.5, 49.5, 2]
    data = {"images": [{"id": 1, "file_name": "a.png", "height": 128, "width": 192, "repeat": repeat}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "keypoints": keypoints,
                             "num_keypoints": 1, "bbox": [60, 30, 80, 90], "area": 7200}],
            "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    if teacher_maps is not None:
        (tmp_path / "maps").mkdir(exist_ok=True)
        np.save(tmp_path / "maps" / "a.png.npy", teacher_maps)
    return tmp_path / "ann.json"


def test_teacher_map_pixel_centres_map_to_image_pixels():
    matrix = teacher_to_image_matrix((32, 48), (128, 192))  # stride 4 both ways
    np.testing.assert_allclose(matrix @ [0, 0, 1], [1.5, 1.5, 1])  # map pixel 0 covers image pixels 0..3
    np.testing.assert_allclose(matrix @ [47, 31, 1], [189.5, 125.5, 1])


def test_dense_target_keeps_labels_and_adds_the_teacher(tmp_path):
    teacher = np.zeros((18, 32, 48), np.uint8)
    teacher[LEFT_EYE, 10, 30] = 255  # an unlabelled joint the teacher believes in
    teacher[NOSE, 12, 20] = 128  # the teacher's nose (weaker, elsewhere) does not erase the label's
    dataset = CocoKeypointDataset(_scene(tmp_path, teacher), tmp_path / "images", TargetConfig(128, 192),
                                  AugmentConfig.off(), teacher_maps=tmp_path / "maps")
    heatmaps = dataset[0]["heatmaps"][0].numpy()
    assert heatmaps[NOSE][12, 20] == pytest.approx(1.0)  # label peak at x = 4j + 1.5 = 81.5 -> j = 20
    assert _peak(heatmaps[LEFT_EYE]) == (30, 10) and heatmaps[LEFT_EYE].max() == pytest.approx(1.0)
    assert heatmaps[RIGHT_EYE].max() == 0.0
    without = CocoKeypointDataset(_scene(tmp_path, None), tmp_path / "images", TargetConfig(128, 192), AugmentConfig.off())
    assert without[0]["heatmaps"][0].numpy()[LEFT_EYE].max() == 0.0


def test_mirrored_view_swaps_teacher_channels_like_labels():
    maps = np.zeros((17, 32, 48), np.float32)
    maps[LEFT_EYE, 10, 5] = 1.0
    mirror = np.array([[-1.0, 0, 47], [0, 1, 0], [0, 0, 1]])  # image (= map grid here) mirrored
    image_to_map = mirror @ np.linalg.inv(teacher_to_image_matrix((32, 48), (32, 48)))
    warped = warp_teacher_maps(maps, (32, 48), image_to_map, (32, 48), flip=True)
    assert warped[LEFT_EYE].max() == 0.0
    assert _peak(warped[RIGHT_EYE]) == (42, 10)


def _hedged_shoulders() -> tuple[np.ndarray, np.ndarray]:
    """Teacher maps whose left- and right-shoulder channels both peak on both shoulders, and the person."""
    from tagtrack.model.codec import render_heatmaps

    keypoints = np.zeros((1, 17, 3))
    keypoints[0, LEFT_SHOULDER] = [10, 8, 1]
    keypoints[0, LEFT_SHOULDER + 1] = [20, 8, 1]
    both = render_heatmaps(keypoints, 24, 32, 2.0).max(axis=0)
    maps = np.zeros((17, 24, 32), np.float32)
    maps[LEFT_SHOULDER] = maps[LEFT_SHOULDER + 1] = 0.6 * both
    return maps, keypoints


def test_mirror_peaks_are_cleared_and_own_peaks_kept():
    maps, keypoints = _hedged_shoulders()
    cleared = suppress_mirror_peaks(maps, keypoints, 2.0)
    assert cleared[LEFT_SHOULDER, 8, 20] == 0.0 and cleared[LEFT_SHOULDER + 1, 8, 10] == 0.0
    assert cleared[LEFT_SHOULDER, 8, 10] == pytest.approx(0.6) and cleared[LEFT_SHOULDER + 1, 8, 20] == pytest.approx(0.6)
    assert np.array_equal(cleared[NOSE], maps[NOSE])


def test_mirror_peaks_of_close_or_unlabelled_pairs_are_kept():
    maps, keypoints = _hedged_shoulders()
    close = keypoints.copy()
    close[0, LEFT_SHOULDER + 1, :2] = [12, 8]  # one sigma apart: one blob, nothing to tell apart
    assert np.array_equal(suppress_mirror_peaks(maps, close, 2.0), maps)
    one_side = keypoints.copy()
    one_side[0, LEFT_SHOULDER + 1, 2] = 0
    assert np.array_equal(suppress_mirror_peaks(maps, one_side, 2.0), maps)
    assert np.array_equal(suppress_mirror_peaks(maps, np.zeros((0, 17, 3)), 2.0), maps)


def test_dataset_clears_mirror_peaks_only_when_asked(tmp_path):
    maps, _ = _hedged_shoulders()
    annotations = _scene(tmp_path, None)
    data = json.loads(annotations.read_text())
    keypoints = [0.0] * 51
    # image x = 4j + 1.5 for map pixel j: the shoulders at map (10, 8) and (20, 8), as in the maps
    keypoints[3 * LEFT_SHOULDER: 3 * LEFT_SHOULDER + 6] = [41.5, 33.5, 2, 81.5, 33.5, 2]
    data["annotations"][0]["keypoints"] = keypoints
    data["annotations"][0]["num_keypoints"] = 2
    annotations.write_text(json.dumps(data))
    stored = np.zeros((18, 32, 48), np.float32)  # the whole 128x192 image at the teacher's stride 4
    stored[:17, :24, :32] = maps
    (tmp_path / "maps").mkdir()
    np.save(tmp_path / "maps" / "a.png.npy", (stored * 255).astype(np.uint8))
    targets = TargetConfig(128, 192, 2.0)
    plain = CocoKeypointDataset(annotations, tmp_path / "images", targets, AugmentConfig.off(),
                                teacher_maps=tmp_path / "maps").make_view(1, np.random.default_rng(0))["heatmaps"]
    cleared = CocoKeypointDataset(annotations, tmp_path / "images", targets, AugmentConfig.off(),
                                  teacher_maps=tmp_path / "maps", suppress_mirror_peaks=True
                                  ).make_view(1, np.random.default_rng(0))["heatmaps"]
    assert plain[LEFT_SHOULDER, 8, 20] > 0.5 and plain[LEFT_SHOULDER + 1, 8, 10] > 0.5
    assert cleared[LEFT_SHOULDER, 8, 20] < 0.01 and cleared[LEFT_SHOULDER + 1, 8, 10] < 0.01
    assert cleared[LEFT_SHOULDER, 8, 10] == pytest.approx(1.0) and cleared[LEFT_SHOULDER + 1, 8, 20] == pytest.approx(1.0)


def test_dense_targets_without_teacher_are_the_labels():
    labels = np.random.default_rng(0).random((17, 4, 4)).astype(np.float32)
    assert dense_targets(labels, None) is labels
    np.testing.assert_array_equal(dense_targets(labels, np.ones_like(labels)), np.ones_like(labels))


def test_closeup_view_frames_the_person_at_the_asked_height():
    augment = AugmentConfig(rotation_degrees=0.0, flip_probability=0.0, closeup_min=0.8, closeup_max=0.8)
    matrix, _ = closeup_affine(np.random.default_rng(1), (100, 200, 50, 300), (192, 192), augment)
    top, bottom = matrix @ [125, 200, 1], matrix @ [125, 500, 1]
    assert bottom[1] - top[1] == pytest.approx(0.8 * 192)
    assert abs((top[1] + bottom[1]) / 2 - 95.5) <= 0.15 * 192 + 1e-6  # centred, within the jitter


def test_upper_body_reaches_from_the_box_top_to_the_hips():
    keypoints = [0.0] * 51
    for k, (x, y) in {LEFT_SHOULDER: (50, 40), LEFT_HIP: (50, 100), RIGHT_HIP: (70, 110)}.items():
        keypoints[3 * k:3 * k + 3] = [x, y, 2]
    from tagtrack.model.schema import COCO17
    region = upper_body({"keypoints": keypoints, "bbox": [30, 10, 60, 200]}, 17, COCO17)
    assert region == (30.0, 10.0, 60.0, 95.0)
    assert upper_body({"keypoints": [0.0] * 51, "bbox": [30, 10, 60, 200]}, 17, COCO17) is None


def test_closeup_views_make_people_large(tmp_path):
    plain = CocoKeypointDataset(_scene(tmp_path, None), tmp_path / "images", TargetConfig(64, 64),
                                AugmentConfig(scale_min=0.5, scale_max=0.5, rotation_degrees=0, flip_probability=0))
    closeup = CocoKeypointDataset(_scene(tmp_path, None), tmp_path / "images", TargetConfig(64, 64),
                                  AugmentConfig(rotation_degrees=0, flip_probability=0, closeup_probability=1.0,
                                                closeup_min=1.0, closeup_max=1.0))
    # Person box 90 px tall in a 128x192 image: plain view at half the fit (64/192) -> 15 px; close-up -> 64 px.
    assert plain[0]["scales"][0, 0] < 0.5 * closeup[0]["scales"][0, 0]


def test_repeat_samples_an_image_several_times(tmp_path):
    dataset = CocoKeypointDataset(_scene(tmp_path, None, repeat=3), tmp_path / "images", TargetConfig(64, 64))
    assert len(dataset) == 3


def test_missing_maps_folder_is_refused(tmp_path):
    with pytest.raises(UserFacingError, match="teacher maps folder not found"):
        CocoKeypointDataset(_scene(tmp_path, None), tmp_path / "images", TargetConfig(64, 64),
                            teacher_maps=tmp_path / "absent")


def test_teacher_maps_command_with_the_real_teacher(shared_data, tmp_path, capsys):
    teacher = shared_data / "teachers" / "movenet_multipose" / "movenet_multipose_lightning_fp32.onnx"
    source = shared_data / "images" / "coco_mini" / "train2017"
    name = sorted(p.name for p in source.glob("*.jpg"))[0]
    (tmp_path / "ann.json").write_text(json.dumps({"images": [{"id": 1, "file_name": name}], "annotations": []}))
    code = main.main(["teacher-maps", "--teacher", str(teacher), "--data", str(tmp_path / "ann.json"),
                      "--images", str(source), "--out", str(tmp_path / "maps"), "--long-side", "256"])
    assert code == 0 and "wrote 1 teacher map files" in capsys.readouterr().out
    maps = np.load(tmp_path / "maps" / f"{name}.npy")
    assert maps.shape[0] == 18 and maps.dtype == np.uint8
    assert write_teacher_maps(teacher, tmp_path / "ann.json", source, tmp_path / "maps", 256, progress=False) == 0


def test_embedding_sigma_and_teacher_maps_are_refused_together():
    from tagtrack.training.config import preset

    with pytest.raises(UserFacingError, match="cannot be combined"):
        preset("tiny", sigma_mode="embedding", model=preset("small").model, train_teacher_maps="maps")


def test_a_failed_write_keeps_the_previous_file_and_names_it(tmp_path):
    from tagtrack.model.files import write_atomically

    target = tmp_path / "maps.npy"
    target.write_bytes(b"previous")

    def failing(temporary: Path) -> None:
        temporary.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(UserFacingError, match="cannot write .*maps.npy: No space left on device"):
        write_atomically(target, failing)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.npy"]  # no temporary left behind


class _BlockMean(torch.nn.Module):
    """A stand-in network of stride 4: its one heatmap is each 4x4 block's mean of the red channel, squashed so
    that a block only fires when it is mostly covered (small things show only once they are zoomed)."""

    def forward_stacks(self, images):
        heatmaps = torch.nn.functional.avg_pool2d(images[:, :1], 4)
        return [(torch.clamp(heatmaps * 2.0 - 1.0, 0.0, 1.0), None)]


def test_zoomed_self_targets_at_1x_are_the_networks_own_maps():
    from tagtrack.training.distill import zoomed_self_targets

    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(zoomed_self_targets(_BlockMean(), images, 1), _BlockMean().forward_stacks(images)[0][0])


def test_zoomed_self_targets_show_a_small_thing_in_its_own_cell_and_keep_large_ones():
    from tagtrack.training.distill import zoomed_self_targets

    images = torch.zeros(1, 3, 32, 32)
    images[0, 0, 8:10, 20:22] = 1.0   # 2x2 pixels: a quarter of block (2, 5) at 1x, most of a 4x4 block zoomed 2x
    images[0, 0, 20:28, 0:8] = 1.0    # large: blocks (5, 0), (5, 1), (6, 0), (6, 1) full at 1x
    own = _BlockMean().forward_stacks(images)[0][0][0, 0]
    assert own[2, 5] == 0.0 and own[5:7, 0:2].min() == 1.0
    targets = zoomed_self_targets(_BlockMean(), images, 2)[0, 0]
    assert targets.shape == own.shape
    assert targets[2, 5] > 0.5                           # the small thing peaks in the cell that holds it
    assert targets[5:7, 0:2].min() == 1.0                # the large one keeps its 1x peaks
    assert (targets >= own).all()                        # never below the 1x maps
    assert torch.nonzero((targets > 0) & (own == 0)).tolist() == [[2, 5]]  # and nothing new anywhere else
    with pytest.raises(ValueError):
        zoomed_self_targets(_BlockMean(), images, 0)
