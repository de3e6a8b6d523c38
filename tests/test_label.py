"""Pseudo-labelling with a teacher: a fake MoveNet-format ONNX teacher built here (no shared data needed),
and the real MoveNet MultiPose teacher on shared footage when present."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tagtrack.model.errors import UserFacingError
from tagtrack.model.schema import COCO17
from tagtrack.training.evaluate import load_coco_annotations
from tagtrack.training.label import LabelConfig, TrackLinker, label_inputs, person_annotation
from tagtrack.training.teacher import (
    MoveNetTeacher,
    TeacherConfig,
    TeacherPerson,
    oks_nms_merge,
    predict_teacher,
    teacher_candidates,
    tile_regions,
)

# The fake teacher finds one "person" per colour channel: the pixels of that channel above 128 (R: slot 0,
# G: slot 1, B: slot 2 of the RGB input). Its 17 joints are laid out around their centroid, in units of
# the blob's side, left/right mirror images of each other (so a correct flip + swap reproduces them).
_DX = np.array([0, 0.3, -0.3, 0.5, -0.5, 1.0, -1.0, 1.3, -1.3, 1.5, -1.5, 0.7, -0.7, 0.8, -0.8, 0.9, -0.9])
_DY = np.array([-2, -2.2, -2.2, -2.0, -2.0, -1, -1, 0, 0, 0.8, 0.8, 1, 1, 2, 2, 3, 3], dtype=np.float64)
# Per slot: person score and joint scores. R: confident; G: low person score (an ignore region);
# B: high person score but only two confident joints (partly confident: an ignore region too).
_PERSON_SCORES = np.array([0.9, 0.2, 0.8])
_JOINT_SCORES = np.stack([np.full(17, 0.9), np.full(17, 0.6), np.r_[0.9, 0.9, np.full(15, 0.05)]])


def build_fake_teacher(path: Path, input_hw: tuple[int, int] | None = None) -> Path:
    """A tiny ONNX graph with MoveNet MultiPose's I/O: uint8 [1,H,W,3] RGB -> float [1,6,56]
    (H, W symbolic, or fixed to input_hw)."""
    f = TensorProto.FLOAT

    def const(name, values, dtype=np.float32):
        return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(values, dtype), name))

    nodes = [
        const("thr", 128.0), const("one", 1.0), const("half", 0.5), const("zero", 0.0),
        const("idx1", [1], np.int64), const("idx2", [2], np.int64), const("axes12", [1, 2], np.int64),
        const("shape_y", [1, -1, 1, 1], np.int64), const("shape_x", [1, 1, -1, 1], np.int64),
        const("dx", _DX.reshape(1, 1, 17)), const("dy", _DY.reshape(1, 1, 17)),
        const("jscores", _JOINT_SCORES.reshape(1, 3, 17)), const("pscores", _PERSON_SCORES.reshape(1, 3, 1)),
        const("pad", np.zeros((1, 3, 56))), const("shape_kp", [1, 3, 51], np.int64),
        helper.make_node("Cast", ["image"], ["xf"], to=f),
        helper.make_node("Greater", ["xf", "thr"], ["mb"]),
        helper.make_node("Cast", ["mb"], ["m"], to=f),                       # [1,H,W,3]
        helper.make_node("Shape", ["image"], ["shp"]),
        helper.make_node("Gather", ["shp", "idx1"], ["h_i"]),
        helper.make_node("Gather", ["shp", "idx2"], ["w_i"]),
        helper.make_node("Cast", ["h_i"], ["h1"], to=f),
        helper.make_node("Cast", ["w_i"], ["w1"], to=f),
        helper.make_node("Squeeze", ["h1"], ["h"]),
        helper.make_node("Squeeze", ["w1"], ["w"]),
        helper.make_node("Range", ["zero", "h", "one"], ["ys0"]),
        helper.make_node("Range", ["zero", "w", "one"], ["xs0"]),
        helper.make_node("Reshape", ["ys0", "shape_y"], ["ys"]),
        helper.make_node("Reshape", ["xs0", "shape_x"], ["xs"]),
        helper.make_node("ReduceSum", ["m", "axes12"], ["count"], keepdims=0),   # [1,3]
        helper.make_node("Mul", ["m", "ys"], ["my"]),
        helper.make_node("Mul", ["m", "xs"], ["mx"]),
        helper.make_node("ReduceSum", ["my", "axes12"], ["sy"], keepdims=0),
        helper.make_node("ReduceSum", ["mx", "axes12"], ["sx"], keepdims=0),
        helper.make_node("Max", ["count", "one"], ["safe"]),
        helper.make_node("Div", ["sy", "safe"], ["cy0"]),
        helper.make_node("Div", ["sx", "safe"], ["cx0"]),
        helper.make_node("Add", ["cy0", "half"], ["cy1"]),
        helper.make_node("Add", ["cx0", "half"], ["cx1"]),
        helper.make_node("Div", ["cy1", "h"], ["cy2"]),
        helper.make_node("Div", ["cx1", "w"], ["cx2"]),
        helper.make_node("Sqrt", ["count"], ["side"]),
        helper.make_node("Div", ["side", "h"], ["side_y2"]),
        helper.make_node("Div", ["side", "w"], ["side_x2"]),
        helper.make_node("Unsqueeze", ["cy2", "idx2"], ["cy"]),            # [1,3,1]
        helper.make_node("Unsqueeze", ["cx2", "idx2"], ["cx"]),
        helper.make_node("Unsqueeze", ["side_y2", "idx2"], ["side_y"]),
        helper.make_node("Unsqueeze", ["side_x2", "idx2"], ["side_x"]),
        helper.make_node("Unsqueeze", ["count", "idx2"], ["count3"]),
        helper.make_node("Greater", ["count3", "zero"], ["present_b"]),
        helper.make_node("Cast", ["present_b"], ["present"], to=f),
        helper.make_node("Mul", ["dy", "side_y"], ["offy"]),
        helper.make_node("Mul", ["dx", "side_x"], ["offx"]),
        helper.make_node("Add", ["cy", "offy"], ["kpy"]),                    # [1,3,17]
        helper.make_node("Add", ["cx", "offx"], ["kpx"]),
        helper.make_node("Mul", ["jscores", "present"], ["kps"]),
        helper.make_node("Unsqueeze", ["kpy", "shape_kp_axis"], ["kpy4"]),
        helper.make_node("Unsqueeze", ["kpx", "shape_kp_axis"], ["kpx4"]),
        helper.make_node("Unsqueeze", ["kps", "shape_kp_axis"], ["kps4"]),
        helper.make_node("Concat", ["kpy4", "kpx4", "kps4"], ["kp4"], axis=3),   # [1,3,17,3]
        helper.make_node("Reshape", ["kp4", "shape_kp"], ["kp"]),
        helper.make_node("ReduceMin", ["kpy"], ["ymin"], axes=[2], keepdims=1),
        helper.make_node("ReduceMin", ["kpx"], ["xmin"], axes=[2], keepdims=1),
        helper.make_node("ReduceMax", ["kpy"], ["ymax"], axes=[2], keepdims=1),
        helper.make_node("ReduceMax", ["kpx"], ["xmax"], axes=[2], keepdims=1),
        helper.make_node("Mul", ["pscores", "present"], ["ps"]),
        helper.make_node("Concat", ["kp", "ymin", "xmin", "ymax", "xmax", "ps"], ["people"], axis=2),
        helper.make_node("Concat", ["people", "pad"], ["output"], axis=1),   # [1,6,56]
    ]
    nodes.insert(0, const("shape_kp_axis", [3], np.int64))
    if input_hw:  # fixed size: pixel grids as constants (ONNX Runtime refuses Range over folded shapes)
        nodes = [n for n in nodes if n.op_type != "Range"]
        nodes = [const("ys0", np.arange(input_hw[0])), const("xs0", np.arange(input_hw[1]))] + nodes
    graph = helper.make_graph(
        nodes, "fake_movenet",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, *(input_hw or ("H", "W")), 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 6, 56])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_wrong_teacher(path: Path) -> Path:
    """A valid ONNX model with the wrong I/O: float input, [1,10] output."""
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["y"], axis=1)],
        "wrong", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def fake_teacher(tmp_path_factory) -> Path:
    return build_fake_teacher(tmp_path_factory.mktemp("teacher") / "fake_movenet.onnx")


def _scene(height: int, width: int, blobs: dict[str, tuple[int, int, int]]) -> np.ndarray:
    """A dark BGR image with solid squares: blobs maps 'red'/'green'/'blue' to (x, y, side)."""
    image = np.full((height, width, 3), 30, np.uint8)
    channel = {"blue": 0, "green": 1, "red": 2}
    for colour, (x, y, side) in blobs.items():
        image[y:y + side, x:x + side, channel[colour]] = 255
    return image


# ---------------------------------------------------------------- the teacher wrapper


def test_fake_teacher_finds_red_blob_in_rgb_order(fake_teacher):
    teacher = MoveNetTeacher(fake_teacher)
    image = _scene(240, 320, {"red": (100, 80, 20)})
    people = [p for p in teacher.run(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), 256) if p.score > 0]
    assert len(people) == 1 and people[0].score == pytest.approx(0.9)
    nose = people[0].keypoints[0]
    # Nose: blob centre (110, 90) shifted up by 2 sides (40 px); the stretched 256-input keeps pixels.
    assert nose[0] == pytest.approx(110, abs=2) and nose[1] == pytest.approx(50, abs=2)


def test_fixed_size_teacher_gets_its_size_and_outputs_map_back(tmp_path):
    teacher = MoveNetTeacher(build_fake_teacher(tmp_path / "fixed.onnx", (192, 192)))
    assert teacher.input_hw((240, 320), 512) == (192, 192)
    image = _scene(240, 320, {"red": (100, 80, 20)})
    people = predict_teacher(teacher, image, TeacherConfig(scales=(512,)))
    assert len(people) == 1
    # The frame is stretched to 192x192; normalised outputs put the blob centre back at (110, 90).
    assert people[0].keypoints[[11, 12], 0].mean() == pytest.approx(110, abs=2)


def test_flip_run_swaps_left_and_right_back(fake_teacher):
    teacher = MoveNetTeacher(fake_teacher)
    image = _scene(240, 320, {"red": (60, 90, 20)})  # off centre, so an unflipped x would be far off
    candidates = teacher_candidates(teacher, image, TeacherConfig(scales=(256,), flip=True))
    assert len(candidates) == 2
    straight, flipped = candidates
    np.testing.assert_allclose(flipped.keypoints[:, :2], straight.keypoints[:, :2], atol=1.5)
    # The left shoulder lies right of the nose in image x (dx +1.0 side): a missed swap would invert it.
    assert flipped.keypoints[5, 0] > flipped.keypoints[0, 0] > flipped.keypoints[6, 0]


def test_scales_and_flips_merge_into_one_person(fake_teacher):
    teacher = MoveNetTeacher(fake_teacher)
    image = _scene(240, 320, {"red": (100, 80, 20)})
    config = TeacherConfig(scales=(128, 256, 320), flip=True)
    assert len(teacher_candidates(teacher, image, config)) == 6
    people = predict_teacher(teacher, image, config)
    assert len(people) == 1 and people[0].votes == 6


def test_tiles_find_a_person_too_small_for_the_full_frame(fake_teacher):
    teacher = MoveNetTeacher(fake_teacher)
    image = _scene(720, 1280, {"red": (637, 357, 6)})  # in the overlap of all four tiles
    base = TeacherConfig(scales=(128,))
    assert predict_teacher(teacher, image, base) == []
    tiled = TeacherConfig(scales=(128,), tiles=True, tile_scale=640)
    people = predict_teacher(teacher, image, tiled)
    assert len(people) == 1 and people[0].votes == 4
    centre = people[0].keypoints[[11, 12], :2].mean(axis=0)  # hips: one side below the blob centre
    assert centre == pytest.approx((640, 366), abs=2)


def test_tile_regions_cover_with_overlap():
    tiles = tile_regions(720, 1280, grid=2, overlap=0.25)
    assert len(tiles) == 4
    xs = sorted({(x0, x1) for x0, _, x1, _ in tiles})
    assert xs[0][0] == 0 and xs[-1][1] == 1280 and xs[0][1] > xs[1][0]  # covered and overlapping
    width = xs[0][1] - xs[0][0]
    assert (xs[0][1] - xs[1][0]) == pytest.approx(0.25 * width, abs=2)


def test_oks_nms_merges_close_candidates_and_keeps_distant_ones():
    rng = np.random.default_rng(0)
    base = np.c_[rng.uniform(100, 200, (17, 2)), np.full(17, 0.8)].astype(np.float32)
    box = np.array([100, 100, 200, 200], np.float32)
    a = TeacherPerson(base.copy(), 0.9, box.copy())
    b_kp = base.copy()
    b_kp[:, :2] += 2.0
    b = TeacherPerson(b_kp, 0.5, box + 2)
    far_kp = base.copy()
    far_kp[:, 0] += 300
    far = TeacherPerson(far_kp, 0.7, box + np.array([300, 0, 300, 0], np.float32))
    merged = oks_nms_merge([b, far, a], COCO17, threshold=0.5)
    assert len(merged) == 2
    first = merged[0]
    assert first.score == pytest.approx(0.9) and first.votes == 2
    np.testing.assert_allclose(first.keypoints[:, :2], base[:, :2] + 1.0, atol=1e-4)  # equal weights
    assert merged[1].votes == 1 and merged[1].keypoints[0, 0] == pytest.approx(far_kp[0, 0])


# ---------------------------------------------------------------- people -> annotations, linking


def test_person_annotation_confident_doubtful_and_dropped():
    keypoints = np.c_[np.linspace(10, 90, 17), np.linspace(10, 90, 17), np.full(17, 0.9)].astype(np.float32)
    keypoints[3, 2] = 0.1  # one doubtful joint
    box = np.array([10, 10, 90, 90], np.float32)
    config = LabelConfig()
    confident = person_annotation(TeacherPerson(keypoints, 0.8, box), (100, 100), config)
    assert confident["num_keypoints"] == 16
    assert confident["keypoints"][3 * 3: 3 * 3 + 3] == [0, 0, 0]
    assert confident["keypoints"][2] == 2
    doubtful = person_annotation(TeacherPerson(keypoints, 0.2, box), (100, 100), config)
    assert doubtful["num_keypoints"] == 0 and not any(doubtful["keypoints"])
    assert doubtful["bbox"][2] > 80 and len(doubtful["segmentation"][0]) == 8
    few = keypoints.copy()
    few[3:, 2] = 0.05
    partly = person_annotation(TeacherPerson(few, 0.8, box), (100, 100), config)
    assert partly["num_keypoints"] == 0
    assert person_annotation(TeacherPerson(keypoints, 0.05, box), (100, 100), config) is None


def test_linker_keeps_identities_of_crossing_walkers():
    def person(x: float, y: float) -> TeacherPerson:
        kp = np.c_[x + _DX * 10, y + _DY * 10, np.full(17, 0.9)].astype(np.float32)
        return TeacherPerson(kp, 0.9, np.array([x - 15, y - 22, x + 15, y + 30], np.float32))

    linker = TrackLinker(COCO17, threshold=0.2, max_gap=2)
    ids = []
    for step in range(8):  # two people walk towards each other along different rows
        ids.append(linker.update([person(50 + 12 * step, 100), person(200 - 12 * step, 160)]))
    assert all(frame == ids[0] for frame in ids) and ids[0][0] != ids[0][1]
    # A person missing for one frame keeps their id; a newcomer far away gets a new one.
    assert linker.update([person(50 + 12 * 9, 100)]) == [ids[0][0]]
    assert linker.update([person(600, 400)]) == [3]


# ---------------------------------------------------------------- the whole labelling run


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def test_label_video_writes_coco_with_tracks_and_ignore_regions(fake_teacher, tmp_path):
    frames = [_scene(240, 320, {"red": (60 + 8 * i, 90, 20), "green": (250, 40, 16), "blue": (250, 170, 16)})
              for i in range(8)]
    video = _write_video(tmp_path / "walk.avi", frames)
    config = LabelConfig(teacher=TeacherConfig(scales=(160, 256), flip=True), every=2)
    summary = label_inputs(fake_teacher, [video], tmp_path / "out", config, progress=False)
    assert summary.images == 4 and summary.people == 4 and summary.ignore_regions == 8
    data = json.loads(summary.annotations_path.read_text())
    coco = load_coco_annotations(summary.annotations_path)  # loads as COCO
    assert [im["source_frame"] for im in data["images"]] == [0, 2, 4, 6]
    assert [im["frame_id"] for im in data["images"]] == [0, 1, 2, 3]
    for image in data["images"]:
        assert (tmp_path / "out" / "images" / image["file_name"]).is_file()
        annotations = coco.imgToAnns[image["id"]]
        people = [a for a in annotations if a["num_keypoints"] > 0]
        ignored = [a for a in annotations if a["num_keypoints"] == 0]
        assert len(people) == 1 and people[0]["num_keypoints"] == 17 and people[0]["teacher_votes"] == 4
        assert len(ignored) == 2
        # The red walker's nose is 2 sides above its blob centre, wherever it has walked.
        x = 60 + 8 * image["source_frame"] + 10
        assert people[0]["keypoints"][0] == pytest.approx(x, abs=2.5)
    red_tracks = {a["track_id"] for a in data["annotations"] if a["num_keypoints"] > 0}
    all_tracks = {a["track_id"] for a in data["annotations"]}
    assert len(red_tracks) == 1 and len(all_tracks) == 3 and summary.tracks == 3


def test_label_image_folder_without_tracks(fake_teacher, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"f{i}.png"), _scene(128, 160, {"red": (40 + 10 * i, 50, 14)}))
    summary = label_inputs(fake_teacher, [folder], tmp_path / "out", progress=False)
    data = json.loads(summary.annotations_path.read_text())
    assert summary.images == 3 and summary.people == 3
    assert all("track_id" not in a for a in data["annotations"])
    sequence = label_inputs(fake_teacher, [folder], tmp_path / "out2", LabelConfig(folder_is_sequence=True),
                            progress=False)
    data = json.loads(sequence.annotations_path.read_text())
    assert len({a["track_id"] for a in data["annotations"]}) == 1


# ---------------------------------------------------------------- bad inputs


def test_missing_teacher_names_the_file(tmp_path):
    with pytest.raises(UserFacingError, match="nope.onnx"):
        MoveNetTeacher(tmp_path / "nope.onnx")


def test_wrong_teacher_format_names_the_file(tmp_path):
    path = build_wrong_teacher(tmp_path / "wrong.onnx")
    with pytest.raises(UserFacingError, match="wrong.onnx.*MoveNet"):
        MoveNetTeacher(path)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(UserFacingError, match="garbage.onnx"):
        MoveNetTeacher(garbage)


def test_unreadable_video_and_missing_inputs_name_the_file(fake_teacher, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(UserFacingError, match="broken.mp4"):
        label_inputs(fake_teacher, [broken], tmp_path / "out", progress=False)
    with pytest.raises(UserFacingError, match="missing.avi"):
        label_inputs(fake_teacher, [tmp_path / "missing.avi"], tmp_path / "out", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserFacingError, match="empty"):
        label_inputs(fake_teacher, [empty], tmp_path / "out", progress=False)


def test_stopped_run_keeps_what_was_labelled(fake_teacher, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), _scene(128, 160, {"red": (40, 50, 14)}))
    (folder / "b.png").write_bytes(b"corrupt")
    with pytest.raises(UserFacingError, match="b.png"):
        label_inputs(fake_teacher, [folder], tmp_path / "out", progress=False)
    data = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert len(data["images"]) == 1 and len(data["annotations"]) == 1


# ---------------------------------------------------------------- the real teacher on shared footage


@pytest.mark.slow
def test_real_teacher_labels_shared_video(shared_data, tmp_path):
    teacher = shared_data / "teachers" / "movenet_multipose" / "movenet_multipose_lightning_fp32.onnx"
    video = shared_data / "videos" / "opencv_vtest_pets2009.avi"
    if not teacher.is_file() or not video.is_file():
        pytest.skip("MoveNet teacher or PETS video not in shared data")
    config = LabelConfig(teacher=TeacherConfig(scales=(384,), flip=True), max_frames=3)
    summary = label_inputs(teacher, [video], tmp_path / "out", config, progress=False)
    assert summary.images == 3
    assert summary.people >= 3  # 3-8 pedestrians a frame; the teacher finds at least one per frame
    data = json.loads(summary.annotations_path.read_text())
    tracks_per_image = {}
    for a in data["annotations"]:
        tracks_per_image.setdefault(a["image_id"], set()).add(a["track_id"])
    # Consecutive frames at 10 fps: most people keep their identity from frame to frame.
    shared_ids = tracks_per_image[1] & tracks_per_image[2]
    assert len(shared_ids) >= 2


def test_label_output_trains_as_pairs_of_views(fake_teacher, tmp_path):
    """The training dataset reads the labels: pairs of frames share the walker's identity, and the
    doubtful people are masked out of the loss."""
    from tagtrack.training.config import AugmentConfig
    from tagtrack.training.dataset import CocoKeypointDataset, TargetConfig

    frames = [_scene(128, 128, {"red": (30 + 4 * i, 50, 12), "green": (100, 10, 12)}) for i in range(4)]
    video = _write_video(tmp_path / "clip.avi", frames)
    summary = label_inputs(fake_teacher, [video], tmp_path / "out", progress=False)
    dataset = CocoKeypointDataset(summary.annotations_path, tmp_path / "out" / "images",
                                  TargetConfig(input_height=128, input_width=128), AugmentConfig.off(), views=2)
    item = dataset[0]
    ids = item["ids"].numpy()
    assert ids.shape[0] == 2
    shared = set(ids[0][ids[0] >= 0]) & set(ids[1][ids[1] >= 0])
    assert len(shared) == 1  # the red walker, by track id, in both views
    masks = item["masks"].numpy()  # [2, 32, 32] at stride 4: 0 inside the green square's ignore box
    assert masks[0, 2:7, 25:31].max() == 0.0 and masks[0, 16, 16] == 1.0


def test_main_label_command(fake_teacher, tmp_path, capsys):
    from tagtrack import main

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"f{i}.jpg"), _scene(128, 160, {"red": (40 + 10 * i, 50, 14)}))
    code = main.main(["label", "--teacher", str(fake_teacher), "--input", str(folder), "--out", str(tmp_path / "o"),
                      "--scales", "128", "256", "--flip", "--sequence"])
    assert code == 0 and "2 images, 2 people with keypoints" in capsys.readouterr().out
    data = json.loads((tmp_path / "o" / "annotations.json").read_text())
    assert data["images"][0]["source_file"].endswith("f0.jpg")
    code = main.main(["label", "--teacher", str(tmp_path / "absent.onnx"), "--input", str(folder),
                      "--out", str(tmp_path / "o2")])
    assert code == 2 and "absent.onnx" in capsys.readouterr().err


@pytest.mark.slow
def test_real_teacher_scores_on_shared_coco(shared_data):
    """The wrapper reads MoveNet's (y, x) order and normalisation right: its COCO AP is far above zero
    (about 0.2-0.3 on the whole mini set; a swapped axis or a wrong scale scores about 0)."""
    from tagtrack.training.evaluate import evaluate_teacher

    teacher = shared_data / "teachers" / "movenet_multipose" / "movenet_multipose_lightning_fp32.onnx"
    annotations = shared_data / "annotations" / "coco_mini" / "person_keypoints_train2017.json"
    images = shared_data / "images" / "coco_mini" / "train2017"
    if not teacher.is_file() or not annotations.is_file():
        pytest.skip("MoveNet teacher or COCO mini not in shared data")
    metrics = evaluate_teacher(teacher, annotations, images, TeacherConfig(scales=(384,)), max_images=20)
    assert metrics["num_images"] == 20 and metrics["AP"] > 0.1
