"""Synthetic stick-figure data: valid COCO keypoint files, seeded, with the cases training must handle."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO

from tagtrack.model.schema import COCO17
from tagtrack.training.synthetic import OVERFIT_SCENE, SceneConfig, StickPose, generate_clips, generate_dataset


def test_dataset_is_valid_coco_and_seeded(tmp_path: Path) -> None:
    config = SceneConfig(width=160, height=96, crowd_probability=0.5, unlabelled_probability=0.5,
                         occluder_probability=0.5, out_of_frame_probability=0.5)
    path = generate_dataset(tmp_path / "a", num_images=12, config=config, seed=3)
    again = generate_dataset(tmp_path / "b", num_images=12, config=config, seed=3)
    other = generate_dataset(tmp_path / "c", num_images=12, config=config, seed=4)
    assert path.read_text() == again.read_text() and path.read_text() != other.read_text()
    assert np.array_equal(cv2.imread(str(tmp_path / "a/images/000001.png")),
                          cv2.imread(str(tmp_path / "b/images/000001.png")))
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == 12
    assert coco.loadCats(1)[0]["keypoints"] == list(COCO17.keypoint_names)
    annotations = coco.dataset["annotations"]
    assert len({a["id"] for a in annotations}) == len(annotations)
    crowds = [a for a in annotations if a["iscrowd"]]
    people = [a for a in annotations if not a["iscrowd"] and a["num_keypoints"] > 0]
    unlabelled = [a for a in annotations if not a["iscrowd"] and a["num_keypoints"] == 0]
    assert crowds and people and unlabelled
    assert all(coco.annToMask(a).sum() == a["area"] for a in crowds)
    for a in people:
        kp = np.array(a["keypoints"]).reshape(17, 3)
        assert a["num_keypoints"] == (kp[:, 2] > 0).sum()
        labelled = kp[kp[:, 2] > 0]
        assert (labelled[:, 0] >= 0).all() and (labelled[:, 0] < 160).all()
        assert (labelled[:, 1] >= 0).all() and (labelled[:, 1] < 96).all()
        x, y, w, h = a["bbox"]
        assert (labelled[:, 0] >= x).all() and (labelled[:, 0] <= x + w).all() and a["area"] > 0
    visibility = np.concatenate([np.array(a["keypoints"]).reshape(17, 3)[:, 2] for a in people])
    assert {0, 1, 2} <= set(visibility.tolist())  # out of frame, occluded, visible all happen


def test_people_are_drawn_where_annotated(tmp_path: Path) -> None:
    config = replace(OVERFIT_SCENE, max_people=1)
    path = generate_dataset(tmp_path, num_images=3, config=config, seed=1)
    data = json.loads(path.read_text())
    for image, annotation in zip(data["images"], data["annotations"]):
        pixels = cv2.imread(str(tmp_path / "images" / image["file_name"])).astype(int)
        kp = np.array(annotation["keypoints"]).reshape(17, 3)
        # The left eye is drawn red, the right eye blue (BGR), so left and right are visible.
        lx, ly = np.round(kp[1, :2]).astype(int)
        rx, ry = np.round(kp[2, :2]).astype(int)
        assert pixels[ly, lx, 2] > 200 and pixels[ly, lx, 0] < 60
        assert pixels[ry, rx, 0] > 200 and pixels[ry, rx, 2] < 60


def test_stick_pose_left_joints_on_image_right() -> None:
    pose = StickPose(centre_x=50, centre_y=50, height=80, torso_angle=0.0, limb_angles=np.zeros(8), head_turn=0.0)
    points = pose.keypoints()
    for left, right in [(1, 2), (5, 6), (11, 12), (15, 16)]:
        assert points[left, 0] > points[right, 0]
    assert points[0, 1] < points[5, 1] < points[11, 1] < points[13, 1] < points[15, 1]
    assert abs((points[15, 1] - points[1, 1]) - 0.96 * 80) < 0.1 * 80  # about the requested height


def test_clips_carry_tracks_and_frames(tmp_path: Path) -> None:
    path = generate_clips(tmp_path, num_clips=2, frames_per_clip=5, config=SceneConfig(width=128, height=96), seed=2)
    data = json.loads(path.read_text())
    assert len(data["images"]) == 10
    by_video: dict[int, list[dict]] = {}
    for image in data["images"]:
        by_video.setdefault(image["video_id"], []).append(image)
    assert sorted(by_video) == [1, 2] and all(len(v) == 5 for v in by_video.values())
    tracks_of = {}
    for annotation in data["annotations"]:
        tracks_of.setdefault(annotation["image_id"], set()).add(annotation["track_id"])
    first, last = by_video[1][0]["id"], by_video[1][-1]["id"]
    assert tracks_of[first] == tracks_of[last]  # the same people throughout the clip
    assert not tracks_of[first] & tracks_of[by_video[2][0]["id"]]  # and others in the next clip
    # People move between frames.
    def nose(image_id: int, track: int) -> np.ndarray:
        a = next(a for a in data["annotations"] if a["image_id"] == image_id and a["track_id"] == track)
        return np.array(a["keypoints"][:2])
    track = min(tracks_of[first])
    assert np.linalg.norm(nose(first, track) - nose(last, track)) > 0.5
