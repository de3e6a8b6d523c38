"""Dataset: targets land where the image content lands, flips swap sides, ignore masks, bad data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tagtrack.model.errors import UserFacingError
from tagtrack.model.schema import COCO17
from tagtrack.training.config import AugmentConfig
from tagtrack.training.dataset import CocoKeypointDataset, TargetConfig, flatten_views
from tagtrack.training.synthetic import generate_clips

NOSE, LEFT_EYE, RIGHT_EYE = 0, 1, 2


def _write_coco(folder: Path, images: list[tuple[str, np.ndarray]], annotations: list[dict]) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for image_id, (name, pixels) in enumerate(images, start=1):
        cv2.imwrite(str(folder / "images" / name), pixels)
        entries.append({"id": image_id, "file_name": name, "height": pixels.shape[0], "width": pixels.shape[1]})
    for index, annotation in enumerate(annotations, start=1):
        annotation.setdefault("id", index)
        annotation.setdefault("image_id", 1)
        annotation.setdefault("category_id", 1)
        annotation.setdefault("iscrowd", 0)
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": entries, "annotations": annotations,
                                "categories": [{"id": 1, "name": "person"}]}))
    return path


def _person(points: dict[int, tuple[float, float]], box: list[float]) -> dict:
    keypoints = [0.0] * 51
    for k, (x, y) in points.items():
        keypoints[3 * k:3 * k + 3] = [x, y, 2]
    return {"keypoints": keypoints, "num_keypoints": len(points), "bbox": box, "area": box[2] * box[3]}


def _peak(heatmap: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(x), int(y)


def _dots_scene(tmp_path: Path) -> Path:
    """A black 128x192 image with a white dot on the nose and a red dot on the left eye."""
    image = np.zeros((128, 192, 3), dtype=np.uint8)
    nose, eye = (81.5, 49.5), (121.5, 65.5)  # x = 4j + 1.5 lands exactly on map pixel j
    cv2.circle(image, (int(nose[0] + 0.5), int(nose[1] + 0.5)), 3, (255, 255, 255), -1)
    cv2.circle(image, (int(eye[0] + 0.5), int(eye[1] + 0.5)), 3, (0, 0, 255), -1)
    return _write_coco(tmp_path, [("dots.png", image)], [_person({NOSE: nose, LEFT_EYE: eye}, [60, 30, 80, 60])])


def test_targets_without_augmentation_sit_at_the_mapped_keypoints(tmp_path: Path) -> None:
    dataset = CocoKeypointDataset(_dots_scene(tmp_path), tmp_path / "images", TargetConfig(128, 192, sigma=1.5),
                                  AugmentConfig.off())
    sample = dataset[0]
    heatmaps = sample["heatmaps"][0].numpy()
    assert heatmaps.shape == (17, 32, 48)
    assert _peak(heatmaps[NOSE]) == (20, 12) and heatmaps[NOSE, 12, 20] == pytest.approx(1.0)
    assert _peak(heatmaps[LEFT_EYE]) == (30, 16)
    assert heatmaps[RIGHT_EYE].max() == 0.0
    joints = sample["joints"][0].numpy()
    assert joints[0, NOSE].tolist() == [12 * 48 + 20, 1]
    assert joints[0, RIGHT_EYE, 1] == 0 and joints[1:, :, 1].sum() == 0
    assert sample["ids"][0, 0] == 2 * 1 + 1 and (sample["ids"][0, 1:] == -1).all()


def test_targets_of_a_stride_2_network_are_twice_as_fine(tmp_path: Path) -> None:
    # Map x = (x_input + 0.5) / 2 - 0.5: nose (81.5, 49.5) -> (40.5, 24.5), eye (121.5, 65.5) -> (60.5, 32.5).
    dataset = CocoKeypointDataset(_dots_scene(tmp_path), tmp_path / "images",
                                  TargetConfig(128, 192, sigma=1.5, stride=2), AugmentConfig.off())
    sample = dataset[0]
    heatmaps = sample["heatmaps"][0].numpy()
    assert heatmaps.shape == (17, 64, 96)
    np.testing.assert_allclose(heatmaps[NOSE, 24:26, 40:42], np.exp(-0.5 / (2 * 1.5 ** 2)), rtol=1e-5)  # 4 equal cells
    assert _peak(heatmaps[LEFT_EYE]) == (60, 32)
    assert sample["joints"][0].numpy()[0, NOSE].tolist() == [25 * 96 + 41, 1]  # the tag is read at the rounded cell


def _with_scale_range(annotations_path: Path, scale_range: list[float]) -> Path:
    data = json.loads(annotations_path.read_text())
    data["images"][0]["scale_range"] = scale_range
    annotations_path.write_text(json.dumps(data))
    return annotations_path


def test_an_images_own_scale_range_replaces_the_augments(tmp_path: Path) -> None:
    # Augment at scale 1 everywhere; the image asks for 2: nose and eye (10 map pixels apart at scale 1,
    # the test above) come out twice as far apart, about the input's centre.
    plain = AugmentConfig(scale_min=1, scale_max=1, rotation_degrees=0, translate=0, flip_probability=0,
                          colour_jitter=0)
    dataset = CocoKeypointDataset(_with_scale_range(_dots_scene(tmp_path), [2.0, 2.0]), tmp_path / "images",
                                  TargetConfig(128, 192, sigma=1.5), plain)
    heatmaps = dataset[0]["heatmaps"][0].numpy()
    (nose_x, nose_y), (eye_x, eye_y) = _peak(heatmaps[NOSE]), _peak(heatmaps[LEFT_EYE])
    # Input nose 95.5 + 2 * (81.5 - 95.5) = 67.5 -> map 16.5; eye 147.5 -> 36.5 (either cell of a tie).
    assert nose_x in (16, 17) and eye_x in (36, 37) and abs((eye_y - nose_y) - 8) <= 1


@pytest.mark.parametrize("scale_range", [[3.0, 1.0], [0.0, 1.0], [1.0], "big", 2.0, [1.0, "x"]])
def test_a_bad_scale_range_is_refused_when_the_data_is_read(tmp_path: Path, scale_range) -> None:
    with pytest.raises(UserFacingError, match=r"dots.png: scale_range must be \[low, high\] with 0 < low <= high"):
        CocoKeypointDataset(_with_scale_range(_dots_scene(tmp_path), scale_range), tmp_path / "images",
                            TargetConfig(128, 192))


def test_flip_mirrors_and_swaps_left_and_right(tmp_path: Path) -> None:
    flip_only = AugmentConfig(scale_min=1, scale_max=1, rotation_degrees=0, translate=0, flip_probability=1.0,
                              colour_jitter=0)
    dataset = CocoKeypointDataset(_dots_scene(tmp_path), tmp_path / "images", TargetConfig(128, 192, sigma=1.5),
                                  flip_only)
    heatmaps = dataset[0]["heatmaps"][0].numpy()
    assert heatmaps[LEFT_EYE].max() == 0.0  # the left eye became the right eye
    # Input x' = 191 - x; map x = (x' + 0.5) / 4 - 0.5: nose 81.5 -> 109.5 -> 27, eye 121.5 -> 69.5 -> 17.
    assert _peak(heatmaps[RIGHT_EYE]) == (17, 16)
    assert _peak(heatmaps[NOSE]) == (27, 12)


@pytest.mark.parametrize("seed", range(6))
def test_random_augmentation_moves_targets_with_the_image(tmp_path: Path, seed: int) -> None:
    augment = AugmentConfig(scale_min=0.7, scale_max=1.3, rotation_degrees=40, translate=0.1, flip_probability=0.5,
                            colour_jitter=0.0)
    dataset = CocoKeypointDataset(_dots_scene(tmp_path), tmp_path / "images", TargetConfig(128, 192, sigma=1.5),
                                  augment, seed=seed)
    sample = dataset[0]
    image = sample["images"][0].numpy()  # RGB
    heatmaps = sample["heatmaps"][0].numpy()
    small = cv2.resize(image.transpose(1, 2, 0), (48, 32), interpolation=cv2.INTER_AREA)
    white = small.min(axis=2)  # high only where all channels are: the white nose dot
    red = small[:, :, 0] - small[:, :, 1]
    eye_channel = LEFT_EYE if heatmaps[LEFT_EYE].max() > 0 else RIGHT_EYE
    for dot, channel in ((white, NOSE), (red, eye_channel)):
        dx, dy = np.subtract(_peak(dot), _peak(heatmaps[channel]))
        assert abs(dx) <= 1 and abs(dy) <= 1, (seed, channel)
    flipped = eye_channel == RIGHT_EYE
    nose_x, eye_x = _peak(heatmaps[NOSE])[0], _peak(heatmaps[eye_channel])[0]
    # The eye is right of the nose in the image; it stays so unless flipped (rotation is at most 40 degrees).
    assert (eye_x < nose_x) == flipped


def test_crowds_and_people_without_keypoints_are_ignored(tmp_path: Path) -> None:
    image = np.full((128, 128, 3), 90, dtype=np.uint8)
    crowd = np.zeros((128, 128), dtype=np.uint8)
    crowd[8:40, 64:120] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    rle["counts"] = rle["counts"].decode("ascii")
    annotations = [
        _person({NOSE: (20.0, 100.0)}, [10, 90, 20, 20]),
        {"iscrowd": 1, "segmentation": rle, "keypoints": [0] * 51, "num_keypoints": 0, "bbox": [64, 8, 56, 32],
         "area": 56 * 32},
        {"segmentation": [[8, 8, 40, 8, 40, 40, 8, 40]], "keypoints": [0] * 51, "num_keypoints": 0,
         "bbox": [8, 8, 32, 32], "area": 1024},
        {"keypoints": [0] * 51, "num_keypoints": 0, "bbox": [80, 80, 32, 32], "area": 1024},  # box only
    ]
    path = _write_coco(tmp_path, [("scene.png", image)], annotations)
    data = json.loads(path.read_text())
    for entry in data["images"]:  # regions are decoded at the real image size even without width/height
        del entry["width"], entry["height"]
    path.write_text(json.dumps(data))
    dataset = CocoKeypointDataset(path, tmp_path / "images", TargetConfig(128, 128), AugmentConfig.off())
    mask = dataset[0]["masks"][0].numpy()  # 32x32, map pixel = 4 image pixels
    assert mask[3:9, 17:29].max() == 0.0  # crowd
    assert mask[3:9, 3:9].max() == 0.0  # person without keypoints (polygon)
    assert mask[21:27, 21:27].max() == 0.0  # person without keypoints (box only)
    assert mask[22:28, 2:8].min() == 1.0  # the person with keypoints stays supervised
    assert mask[14:18, :].min() == 1.0  # background stays supervised
    assert (mask == 0).sum() < (mask == 1).sum()
    # Only the keypointed person is a target.
    assert dataset[0]["joints"][0, :, :, 1].sum() == 1


def test_pairs_of_one_image_are_two_augmentations_with_shared_identities(tmp_path: Path) -> None:
    dataset = CocoKeypointDataset(_dots_scene(tmp_path), tmp_path / "images", TargetConfig(128, 192), views=2)
    sample = dataset[0]
    assert sample["images"].shape == (2, 3, 128, 192)
    assert not np.allclose(sample["images"][0].numpy(), sample["images"][1].numpy())
    assert sample["ids"][0].tolist() == sample["ids"][1].tolist()
    again = dataset[0]
    assert all(np.array_equal(sample[key].numpy(), again[key].numpy()) for key in sample)
    dataset.set_epoch(1)
    assert not np.allclose(dataset[0]["images"].numpy(), sample["images"].numpy())
    flat = flatten_views({key: value[None] for key, value in sample.items()})
    assert flat["images"].shape == (2, 3, 128, 192) and flat["ids"].shape == (2, 30)


def test_pairs_from_clips_are_two_frames_with_track_identities(tmp_path: Path) -> None:
    path = generate_clips(tmp_path, num_clips=2, frames_per_clip=4, seed=3)
    dataset = CocoKeypointDataset(path, tmp_path / "images", TargetConfig(128, 128), AugmentConfig.off(), views=2,
                                  max_frame_gap=2)
    coco = dataset.coco
    for index in range(len(dataset)):
        sample = dataset[index]
        ids = sample["ids"].numpy()
        present = [set(row[row >= 0].tolist()) for row in ids]
        assert present[0] == present[1] and all(i % 2 == 0 for i in present[0])  # track ids, even
        image = coco.imgs[dataset.image_ids[index]]
        tracks = {2 * a["track_id"] for a in coco.imgToAnns[image["id"]]}
        assert present[0] == tracks
        assert not np.allclose(sample["images"][0].numpy(), sample["images"][1].numpy())  # another frame


def test_any_input_size_and_adaptive_sigma(tmp_path: Path) -> None:
    path = _dots_scene(tmp_path)
    fixed = CocoKeypointDataset(path, tmp_path / "images", TargetConfig(64, 256, sigma=2.0), AugmentConfig.off())
    adaptive = CocoKeypointDataset(path, tmp_path / "images", TargetConfig(64, 256, sigma=2.0, sigma_mode="adaptive"),
                                   AugmentConfig.off())
    a, b = fixed[0]["heatmaps"][0].numpy(), adaptive[0]["heatmaps"][0].numpy()
    assert a.shape == b.shape == (17, 16, 64)
    assert _peak(a[NOSE]) == _peak(b[NOSE])
    # The person (80x60 box fitted at scale 0.5 -> ~9 map px across) is small: the adaptive gaussian is narrower.
    assert (b[NOSE] > 0.1).sum() < (a[NOSE] > 0.1).sum()


def test_bad_data_names_the_file(tmp_path: Path) -> None:
    path = _dots_scene(tmp_path)
    targets = TargetConfig(64, 64)
    with pytest.raises(UserFacingError, match="not found.*nope.json"):
        CocoKeypointDataset(tmp_path / "nope.json", tmp_path / "images", targets)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(UserFacingError, match="annotation file .*broken.json is not valid JSON"):
        CocoKeypointDataset(broken, tmp_path / "images", targets)
    data = json.loads(path.read_text())
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({**data, "annotations": []}))
    with pytest.raises(UserFacingError, match="empty.json has no annotations"):
        CocoKeypointDataset(empty, tmp_path / "images", targets)
    no_people = tmp_path / "nopeople.json"
    no_people.write_text(json.dumps({**data, "annotations": [{**data["annotations"][0], "num_keypoints": 0}]}))
    with pytest.raises(UserFacingError, match="nopeople.json has no annotated people"):
        CocoKeypointDataset(no_people, tmp_path / "images", targets)
    (tmp_path / "images" / "dots.png").unlink()
    with pytest.raises(UserFacingError, match="missing .*dots.png"):
        CocoKeypointDataset(path, tmp_path / "images", targets)
    with pytest.raises(UserFacingError, match="image folder not found"):
        CocoKeypointDataset(path, tmp_path / "elsewhere", targets)


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    path = _dots_scene(tmp_path)
    (tmp_path / "images" / "dots.png").write_bytes(b"not a png")
    dataset = CocoKeypointDataset(path, tmp_path / "images", TargetConfig(64, 64))
    with pytest.raises(UserFacingError, match="cannot read image .*dots.png"):
        dataset[0]


def test_flip_index_is_the_schema_permutation() -> None:
    assert [COCO17.keypoint_names[i] for i in COCO17.flip_index][1:3] == ["right_eye", "left_eye"]
