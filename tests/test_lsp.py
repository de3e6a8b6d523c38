"""LSP-format import: tiny .mat files and images made here; the real LSP Extended set and teacher when present."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from tagtrack import main
from tagtrack.model.errors import UserFacingError
from tagtrack.training.label import LabelConfig
from tagtrack.training.lsp import (
    LspImportConfig,
    LspImportSummary,
    _image_annotations,
    fix_swaps,
    import_lsp,
    lsp_to_coco,
    read_lsp_joints,
)
from tagtrack.training.teacher import TeacherPerson

# One standing person, LSP order: r ankle, r knee, r hip, l hip, l knee, l ankle, r wrist, r elbow,
# r shoulder, l shoulder, l elbow, l wrist, neck, head top. The person faces the camera: its right is at
# smaller x.
PERSON = np.array([
    [40, 190], [42, 150], [45, 110], [75, 110], [78, 150], [80, 190],
    [25, 100], [30, 75], [40, 50], [80, 50], [90, 75], [95, 100],
    [60, 45], [60, 10],
], dtype=np.float64)
# COCO index of each LSP joint (neck and head top have none).
COCO_OF = [16, 14, 12, 11, 13, 15, 10, 8, 6, 5, 7, 9]


def lsp_array(people: list[np.ndarray], flags: list[np.ndarray] | None = None) -> np.ndarray:
    """14 x 3 x N, as LSP Extended stores it."""
    flags = flags or [np.ones(14) for _ in people]
    return np.stack([np.concatenate([p, f[:, None]], axis=1) for p, f in zip(people, flags)], axis=2)


@pytest.fixture
def lsp_set(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"im{i + 1:05d}.jpg"), np.full((200, 120, 3), 40 * i, np.uint8))
    flags = [np.ones(14), np.r_[0, np.ones(13)], np.ones(14)]  # image 2: right ankle unlabelled
    joints = lsp_array([PERSON, PERSON, PERSON + 1], flags)
    joints[:, :, 1][0] = 0  # image 2's unlabelled right ankle sits at (0, 0), as in LSP Extended
    path = tmp_path / "joints.mat"
    savemat(str(path), {"joints": joints})
    return path, images


def test_reads_both_layouts(tmp_path):
    joints = lsp_array([PERSON, PERSON + 5])
    savemat(str(tmp_path / "a.mat"), {"joints": joints})
    savemat(str(tmp_path / "b.mat"), {"joints": joints.transpose(2, 0, 1)})
    a, b = read_lsp_joints(tmp_path / "a.mat"), read_lsp_joints(tmp_path / "b.mat")
    assert a.shape == (2, 14, 3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[1, :, :2], PERSON + 5)


@pytest.mark.parametrize("contents, message", [
    ({"joints": np.zeros((3, 14, 5))}, "expected 14 x 3 x N or N x 14 x 3"),
    ({"joints": np.zeros((14, 2, 5))}, "expected 14 x 3 x N or N x 14 x 3"),
    ({"labels": np.zeros((14, 3, 5))}, "no 'joints' array"),
])
def test_malformed_label_files_are_refused(tmp_path, contents, message):
    savemat(str(tmp_path / "bad.mat"), contents)
    with pytest.raises(UserFacingError, match=message):
        read_lsp_joints(tmp_path / "bad.mat")


def test_missing_and_non_matlab_files_are_refused(tmp_path):
    with pytest.raises(UserFacingError, match="not found"):
        read_lsp_joints(tmp_path / "absent.mat")
    (tmp_path / "text.mat").write_text("not a MATLAB file")
    with pytest.raises(UserFacingError, match="not a readable MATLAB file"):
        read_lsp_joints(tmp_path / "text.mat")


def test_joints_map_to_coco_and_face_points_are_unknown():
    keypoints = lsp_to_coco(np.concatenate([PERSON, np.ones((14, 1))], axis=1), (200, 120))
    for lsp_index, coco_index in enumerate(COCO_OF):
        np.testing.assert_array_equal(keypoints[coco_index], [*PERSON[lsp_index], 2])
    assert (keypoints[:5, 2] == 0).all()  # nose, eyes, ears: no label
    # left shoulder (COCO 5) is the person's left: LSP joint 9, at larger x than the right shoulder.
    assert keypoints[5, 0] > keypoints[6, 0]


def test_import_without_teacher(lsp_set, tmp_path):
    joints, images = lsp_set
    summary = import_lsp(joints, images, tmp_path / "out" / "lsp.json", progress=False)
    data = json.loads((tmp_path / "out" / "lsp.json").read_text())
    assert summary.images == 3 and summary.labelled_people == 3
    assert [image["file_name"] for image in data["images"]] == ["im00001.jpg", "im00002.jpg", "im00003.jpg"]
    first, second = data["annotations"][0], data["annotations"][1]
    assert first["num_keypoints"] == 12 and second["num_keypoints"] == 11
    second_keypoints = np.asarray(second["keypoints"]).reshape(17, 3)
    assert second_keypoints[16, 2] == 0  # the unlabelled right ankle
    x, y, w, h = first["bbox"]
    assert y < 10 and y + h > 190  # the box reaches the head top (not a COCO joint) and the ankles
    assert data["categories"][0]["keypoints"][0] == "nose"


def test_image_list_naming_a_missing_image_is_refused_and_nothing_is_truncated(lsp_set, tmp_path):
    joints, images = lsp_set
    out = tmp_path / "lsp.json"
    out.write_text("previous labels")
    listing = tmp_path / "list.txt"
    listing.write_text("im00001.jpg\nim00009.jpg\n")
    with pytest.raises(UserFacingError, match="missing"):
        import_lsp(joints, images, out, image_list=listing, progress=False)
    assert out.read_text() == "previous labels"


def test_cli_bad_input_is_one_error_line(lsp_set, tmp_path, capsys):
    joints, images = lsp_set
    bad = tmp_path / "bad.mat"
    savemat(str(bad), {"joints": np.zeros((5, 5, 5))})
    code = main.main(["import-lsp", "--joints", str(bad), "--images", str(images), "--out", str(tmp_path / "o.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:")
    code = main.main(["import-lsp", "--joints", str(joints), "--images", str(images), "--out", str(tmp_path / "o.json")])
    assert code == 0 and "3 images, 3 labelled people" in capsys.readouterr().out


def _teacher_from(keypoints: np.ndarray, score: float = 0.9, joint_score: float = 0.9) -> TeacherPerson:
    points = np.concatenate([keypoints[:, :2], np.full((len(keypoints), 1), joint_score)], axis=1).astype(np.float32)
    xy = points[:, :2]
    return TeacherPerson(points, score, np.array([*xy.min(axis=0), *xy.max(axis=0)], dtype=np.float32))


def _coco_person() -> np.ndarray:
    keypoints = lsp_to_coco(np.concatenate([PERSON, np.ones((14, 1))], axis=1), (200, 120))
    keypoints[:5] = [(60, 25, 2), (65, 22, 2), (55, 22, 2), (70, 25, 2), (50, 25, 2)]  # a face, for the teacher
    return keypoints


def test_swapped_arms_are_fixed_and_straight_legs_kept():
    truth = _coco_person()
    teacher = _teacher_from(truth)
    labels = truth.copy()
    labels[[5, 7, 9, 6, 8, 10]] = truth[[6, 8, 10, 5, 7, 9]]  # the annotator swapped the arms
    arms, legs = fix_swaps(labels, teacher, 180.0, LspImportConfig())
    assert (arms, legs) == (True, False)
    np.testing.assert_array_equal(labels, truth)
    # An unswapped person stays as it is.
    assert fix_swaps(truth.copy(), teacher, 180.0, LspImportConfig()) == (False, False)


def test_teacher_fills_face_points_and_adds_other_people():
    truth = _coco_person()
    lsp = np.concatenate([PERSON, np.ones((14, 1))], axis=1)
    lsp[[0, 1, 2, 3, 4, 5]] = lsp[[5, 4, 3, 2, 1, 0]]  # legs swapped in the labels (LSP: right joints first)
    other = truth.copy()
    other[:, 0] += 300  # someone else, further right, confident
    doubtful = _teacher_from(truth + [150, 0, 0], score=0.2)
    people = [_teacher_from(other), _teacher_from(truth), doubtful]
    summary = LspImportSummary(Path("x.json"))
    annotations = _image_annotations(lsp, (200, 500), people, LspImportConfig(label=LabelConfig()), summary)
    labelled = np.asarray(annotations[0]["keypoints"]).reshape(17, 3)
    np.testing.assert_allclose(labelled[:5, :2], truth[:5, :2], atol=1e-4)  # face from the teacher
    np.testing.assert_allclose(labelled[11:, :2], truth[11:, :2])  # legs swapped back
    assert annotations[0]["num_keypoints"] == 17
    assert (summary.teacher_matched, summary.leg_swaps_fixed, summary.arm_swaps_fixed) == (1, 1, 0)
    assert summary.face_points_filled == 5
    assert summary.other_people == 1 and summary.ignore_regions == 1
    assert [a["num_keypoints"] > 0 for a in annotations] == [True, True, False]


def test_real_lspet_with_teacher_and_dense_maps(shared_data, tmp_path):
    teacher = shared_data / "teachers" / "movenet_multipose" / "movenet_multipose_lightning_fp32.onnx"
    lspet = shared_data / "lspet"
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join((lspet / "images.txt").read_text().split()[:4]))
    summary = import_lsp(lspet / "joints.mat", lspet / "images", tmp_path / "lsp.json", image_list=listing,
                         teacher_path=teacher, maps_dir=tmp_path / "maps", progress=False)
    assert summary.images == 4 and summary.maps_written == 4
    assert summary.teacher_matched >= 3  # clear single athletes: the teacher finds the labelled person
    first = json.loads((tmp_path / "lsp.json").read_text())["images"][0]
    maps = np.load(tmp_path / "maps" / f"{first['file_name']}.npy")
    assert maps.dtype == np.uint8 and maps.shape[0] == 18  # 17 keypoint heatmaps + the person centre
    assert maps[:17].max() > 100  # the labelled athlete's joints light up


def test_teacher_duplicates_of_the_labelled_person_are_dropped():
    truth = _coco_person()
    lsp = np.concatenate([PERSON, np.ones((14, 1))], axis=1)
    duplicate_region = _teacher_from(truth + [5, 5, 0], score=0.2)  # a doubtful second candidate on the athlete
    far_region = _teacher_from(truth + [300, 0, 0], score=0.2)
    summary = LspImportSummary(Path("x.json"))
    annotations = _image_annotations(lsp, (200, 500), [_teacher_from(truth), duplicate_region, far_region],
                                     LspImportConfig(), summary)
    assert len(annotations) == 2 and summary.ignore_regions == 1
    assert annotations[1]["bbox"][0] > 300  # only the far region is kept
