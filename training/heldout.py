"""Held-out measures of the default-model recipe (training/recipes/default_model.py), usable on any checkpoint:
people the teacher is confident of that a model finds, skeletons drawn as lines, and PCK on LSPET's human labels.
The COCO AP of the same models is training/evaluate.py's; the OKS and box tests are shared with it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tagtrack.training.evaluate import box_area, inside_box, oks_against_annotation


# ---------------------------------------------------------------- recall against the teacher


def collapsed_skeleton(keypoints: np.ndarray, schema, tolerance: float = 2.0) -> bool:
    """A skeleton drawn as a line: every left/right joint pair found on both sides (at least 3 pairs) lies
    within tolerance image pixels of each other."""
    pairs = [(k, m) for k, m in enumerate(schema.flip_index) if k < m and keypoints[k, 2] > 0 and keypoints[m, 2] > 0]
    if len(pairs) < 3:
        return False
    return all(np.linalg.norm(keypoints[k, :2] - keypoints[m, :2]) <= tolerance for k, m in pairs)


def teacher_recall(weights: Path, annotations: Path, images: Path, confident_score: float = 0.5,
                   person_score: float = 0.2, input_hw: tuple[int, int] | None = None, every: int = 1,
                   assignments: Sequence[str] = ()) -> dict:
    """Per source: teacher-confident people (label score >= confident_score) found by the model at OKS >= 0.5
    (one-to-one, greedy by OKS), and model people (score >= person_score) matching no teacher label at
    OKS >= 0.5 and whose box centre lies in no ignore region ('extra': people the teacher may miss, or
    false alarms; look at the frames)."""
    from tagtrack.model.predict import read_image

    predict, schema = checkpoint_poses(weights, input_hw, assignments)
    sigmas = schema.sigmas_array()
    data = json.loads(annotations.read_text())
    by_image: dict[int, list[dict]] = {}
    for annotation in data["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    stats: dict[str, dict[str, int]] = {}
    for index, image in enumerate(data["images"]):
        if index % every:
            continue
        source = image["file_name"].split("/")[0]
        s = stats.setdefault(source, {"frames": 0, "confident": 0, "found": 0, "model_people": 0, "extra": 0,
                                      "collapsed": 0})
        poses = [p for p in predict(read_image(images / image["file_name"])) if p.score >= person_score]
        people = [a for a in by_image.get(image["id"], []) if a.get("num_keypoints", 0) > 0]
        ignores = [a["bbox"] for a in by_image.get(image["id"], []) if a.get("num_keypoints", 0) == 0]
        matrix = np.array([[oks_against_annotation(t, p.keypoints, sigmas, box_area(t)) for p in poses]
                           for t in people]).reshape(len(people), len(poses))
        matched_people, matched_poses = set(), set()
        for t, p in sorted(np.argwhere(matrix >= 0.5).tolist(), key=lambda tp: -matrix[tp[0], tp[1]]):
            if t not in matched_people and p not in matched_poses:
                matched_people.add(t)
                matched_poses.add(p)
        s["frames"] += 1
        confident = [t for t, a in enumerate(people) if a.get("score", 1.0) >= confident_score]
        s["confident"] += len(confident)
        s["found"] += sum(1 for t in confident if t in matched_people)
        s["model_people"] += len(poses)
        s["collapsed"] += sum(1 for pose in poses if collapsed_skeleton(pose.keypoints, schema))
        for p, pose in enumerate(poses):
            centre = (pose.box[:2] + pose.box[2:]) / 2
            if p not in matched_poses and not (matrix[:, p] >= 0.5).any() and not any(inside_box(centre, box) for box in ignores):
                s["extra"] += 1
    return stats


# ---------------------------------------------------------------- LSPET held-out PCK

# The 12 labelled COCO joints of LSP and the torso size used by PCK: left shoulder to right hip (the usual
# LSP "torso diameter").
LSP_COCO_JOINTS = (5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)
TORSO = (5, 12)


def torso_size(truth: np.ndarray) -> float | None:
    """Left shoulder to right hip, or None when either is unlabelled (the person is not scored)."""
    if truth[TORSO[0], 2] <= 0 or truth[TORSO[1], 2] <= 0:
        return None
    torso = float(np.linalg.norm(truth[TORSO[0], :2] - truth[TORSO[1], :2]))
    return torso if torso >= 1.0 else None


def pck_correct(predicted: np.ndarray, truth: np.ndarray, torso: float, threshold: float) -> int:
    """Labelled LSP joints found (score > 0) within threshold x torso of their label."""
    return sum(1 for k in LSP_COCO_JOINTS if truth[k, 2] > 0 and predicted[k, 2] > 0
               and np.linalg.norm(predicted[k, :2] - truth[k, :2]) <= threshold * torso)


def lspet_pck(annotations: Path, images: Path, predict, threshold: float = 0.2, every: int = 1) -> dict:
    """PCK@threshold on held-out LSPET people (images whose labelled torso is known). `predict(image_bgr)`
    returns people as [K,3] arrays; the one scoring the most correct joints is the labelled person's (the
    same rule for every model); no person found counts every joint wrong."""
    from tagtrack.model.predict import read_image

    data = json.loads(annotations.read_text())
    by_image = {a["image_id"]: a for a in data["annotations"] if a.get("source") == "human"}
    correct = labelled = people = 0
    for index, image in enumerate(data["images"]):
        if index % every or image["id"] not in by_image:
            continue
        truth = np.asarray(by_image[image["id"]]["keypoints"], dtype=np.float64).reshape(-1, 3)
        torso = torso_size(truth)
        if torso is None:
            continue
        candidates = predict(read_image(images / image["file_name"]))
        correct += max((pck_correct(keypoints, truth, torso, threshold) for keypoints in candidates), default=0)
        labelled += sum(1 for k in LSP_COCO_JOINTS if truth[k, 2] > 0)
        people += 1
    return {"people": people, "joints": labelled, "correct": correct, "pck": correct / max(labelled, 1)}


def checkpoint_poses(weights: Path, input_hw: tuple[int, int] | None = None, assignments: Sequence[str] = ()):
    """(image -> list[Pose] in image pixels, the checkpoint's schema), at input_hw or the checkpoint's size, with
    the decoder settings the app would use: the checkpoint's stored ones, then ASSIGNMENTS (`--set` style)."""
    from tagtrack.model.checkpoint import load_checkpoint, read_checkpoint_settings
    from tagtrack.model.predict import PredictConfig, predict_image, torch_infer_fn
    from tagtrack.model.settings import parse_assignments, resolve_settings

    loaded = load_checkpoint(weights)
    settings = resolve_settings(read_checkpoint_settings(weights), [("--set", parse_assignments(assignments))],
                                stored_origin="checkpoint")
    config = PredictConfig(decode=settings.decode)
    infer = torch_infer_fn(loaded.model)
    hw = input_hw or (loaded.config.input_height, loaded.config.input_width)
    return (lambda image: predict_image(infer, image, hw, loaded.schema, config)), loaded.schema


def model_predictor(weights: Path, input_hw: tuple[int, int] | None = None, assignments: Sequence[str] = ()):
    predict, _ = checkpoint_poses(weights, input_hw, assignments)
    return lambda image: [pose.keypoints for pose in predict(image)]


def teacher_predictor(teacher_path: Path, long_side: int, joint_score: float = 0.3):
    from tagtrack.training.teacher import MoveNetTeacher, TeacherConfig, predict_teacher

    teacher = MoveNetTeacher(teacher_path, threads=1)
    config = TeacherConfig(scales=(long_side,))

    def predict(image):
        people = []
        for person in predict_teacher(teacher, image, config):
            keypoints = person.keypoints.astype(np.float64).copy()
            keypoints[:, 2] = (keypoints[:, 2] >= joint_score).astype(np.float64)  # only its confident joints
            people.append(keypoints)
        return people

    return predict
