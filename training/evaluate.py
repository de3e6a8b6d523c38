"""COCO keypoint evaluation (pycocotools): annotation and results files, AP/AR, and the runners that score a
checkpoint, a teacher or pseudo-labels on an annotated image folder.

- `evaluate_results`: score a COCO keypoint results file/list against COCO-format annotations.
- `evaluate_checkpoint`: run a checkpoint over an annotated image folder and score it (single scale,
  flip, multi-scale through `model.predict.PredictConfig`); `evaluate_teacher`: the same for an ONNX teacher.
- `pseudo_label_quality`: pseudo-labels (`tagtrack label`) against the ground truth of the same images.

The tag diagnostics (group margins, grouping at the ground-truth joints) are training/tag_diagnostics.py's.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from tagtrack.model.errors import UserFacingError, import_extra
from tagtrack.model.files import read_image, read_json
from tagtrack.model.oks import object_keypoint_similarity
from tagtrack.model.pose import Pose
from tagtrack.model.schema import COCO17, KeypointSchema

log = logging.getLogger(__name__)

EVALUATION = "COCO keypoint evaluation (pycocotools)"  # the `train` extra

# The order of COCOeval.stats for iouType "keypoints".
COCO_KEYPOINT_METRICS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
_METRIC_LABELS = {
    "AP": "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ]",
    "AP50": "Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets= 20 ]",
    "AP75": "Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets= 20 ]",
    "APm": "Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets= 20 ]",
    "APl": "Average Precision  (AP) @[ IoU=0.50:0.95 | area= large | maxDets= 20 ]",
    "AR": "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ]",
    "AR50": "Average Recall     (AR) @[ IoU=0.50      | area=   all | maxDets= 20 ]",
    "AR75": "Average Recall     (AR) @[ IoU=0.75      | area=   all | maxDets= 20 ]",
    "ARm": "Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets= 20 ]",
    "ARl": "Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets= 20 ]",
}


# ---------------------------------------------------------------- annotations and results files


def load_coco_annotations(annotations_json: str | Path | dict):
    """A pycocotools COCO object; UserFacingError naming the file when it is missing or malformed."""
    COCO = import_extra("pycocotools.coco", "train", EVALUATION).COCO

    if isinstance(annotations_json, dict):
        data, name = annotations_json, "<annotations>"
    else:
        name = str(annotations_json)
        data = read_json(annotations_json, "annotation file")
    _check_annotation_structure(data, name)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        try:
            coco.createIndex()
        except (KeyError, TypeError) as error:
            raise UserFacingError(f"annotation file {name} is not COCO format: {error!r}") from None
    return coco


def _check_annotation_structure(data: object, name: str) -> None:
    if not isinstance(data, dict):
        raise UserFacingError(f"annotation file {name} is not COCO format: top level is not an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise UserFacingError(f"annotation file {name} is not COCO format: no '{key}' list")
    for image in data["images"]:
        if not isinstance(image, dict) or not {"id", "file_name"} <= image.keys():
            raise UserFacingError(f"annotation file {name}: an image entry lacks 'id' or 'file_name'")
    for annotation in data["annotations"]:
        if not isinstance(annotation, dict) or not {"id", "image_id", "category_id"} <= annotation.keys():
            raise UserFacingError(f"annotation file {name}: an annotation lacks 'id', 'image_id' or 'category_id'")
    if not data["categories"]:
        raise UserFacingError(f"annotation file {name} has no categories")


def person_category_id(coco) -> int:
    """The category whose instances carry keypoints (COCO: 1, 'person')."""
    for category in coco.dataset["categories"]:
        if category.get("keypoints"):
            return int(category["id"])
    return int(coco.dataset["categories"][0]["id"])


def labelled_people(coco, image_id: int) -> list[dict]:
    """The image's annotations that COCO scores: people, not crowds, with at least one labelled keypoint."""
    return [a for a in coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0]


def poses_to_coco_results(poses: Iterable[Pose], image_id: int, category_id: int = 1) -> list[dict]:
    """COCO keypoint results for one image. COCOeval reads only x, y of each joint and the person score."""
    results = []
    for pose in poses:
        keypoints = np.asarray(pose.keypoints, dtype=np.float64)
        results.append({
            "image_id": int(image_id),
            "category_id": int(category_id),
            "keypoints": [round(float(v), 2) for v in keypoints.reshape(-1)],
            "score": float(pose.score),
        })
    return results


def perfect_results_from_annotations(coco_or_json, score: float = 1.0) -> list[dict]:
    """Results that copy the ground truth (every non-crowd person with keypoints): they score AP 1.0."""
    coco = coco_or_json if hasattr(coco_or_json, "dataset") else load_coco_annotations(coco_or_json)
    results = []
    for annotation in coco.dataset["annotations"]:
        if annotation.get("iscrowd", 0) or annotation.get("num_keypoints", 0) == 0:
            continue
        results.append({
            "image_id": annotation["image_id"],
            "category_id": annotation["category_id"],
            "keypoints": [float(v) for v in annotation["keypoints"]],
            "score": float(score),
        })
    return results


def _load_results(results: str | Path | list[dict]) -> list[dict]:
    if isinstance(results, (str, Path)):
        path = results
        results = read_json(path, "results file")
        if not isinstance(results, list) or not all(
            isinstance(r, dict) and {"image_id", "keypoints", "score"} <= r.keys() for r in results
        ):
            raise UserFacingError(f"results file {path} is not a list of COCO keypoint results")
    return list(results)


def evaluate_results(
    results: str | Path | list[dict],
    annotations_json,
    image_ids: Sequence[int] | None = None,
) -> dict:
    """COCO keypoint AP/AR (pycocotools COCOeval, iouType 'keypoints') of a results file or list.

    image_ids restricts the evaluation to those images (default: every image of the annotations).
    Returns {"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl",
    "num_images", "num_results"}. Empty results score 0 everywhere.
    """
    COCOeval = import_extra("pycocotools.cocoeval", "train", EVALUATION).COCOeval

    coco = annotations_json if hasattr(annotations_json, "dataset") else load_coco_annotations(annotations_json)
    results = _load_results(results)
    ids = sorted(coco.getImgIds()) if image_ids is None else sorted(int(i) for i in image_ids)
    category_id = person_category_id(coco)
    wanted = set(ids)
    results = [dict(r) for r in results if int(r["image_id"]) in wanted]
    for r in results:
        r.setdefault("category_id", category_id)
    metrics = {name: 0.0 for name in COCO_KEYPOINT_METRICS}
    metrics.update(num_images=len(ids), num_results=len(results))
    if not results:
        return metrics
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        # loadRes mutates what it is given (adds area, bbox, id): give it copies.
        detections = coco.loadRes([dict(r, keypoints=list(r["keypoints"])) for r in results])
        evaluator = COCOeval(coco, detections, iouType="keypoints")
        evaluator.params.imgIds = ids
        evaluator.params.catIds = [category_id]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    for name, value in zip(COCO_KEYPOINT_METRICS, evaluator.stats):
        # COCOeval reports -1 where a metric has no ground truth (e.g. no medium people): keep it visible.
        metrics[name] = float(value)
    return metrics


def format_metrics(metrics: dict) -> str:
    """The COCO summary table, one metric a line, as pycocotools prints it."""
    lines = [f" {_METRIC_LABELS[name]} = {metrics[name]:.3f}" for name in COCO_KEYPOINT_METRICS if name in metrics]
    if "num_images" in metrics:
        lines.append(f" images: {metrics['num_images']}, detections: {metrics.get('num_results', 0)}")
    return "\n".join(lines)


def write_results(results: list[dict], path: str | Path) -> Path:
    """Write COCO results JSON atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(results), encoding="utf-8")
    temporary.replace(path)
    return path


# ---------------------------------------------------------------- running a predictor over an annotated folder


def annotated_images(coco, images_dir: str | Path, max_images: int | None = None) -> list[tuple[int, Path]]:
    """(image id, file path) of the annotation file's images in id order, the first max_images of them.
    Every file is checked before any work starts, so a missing image fails at once, by name."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise UserFacingError(f"image folder not found: {images_dir}")
    ids = sorted(coco.getImgIds())
    if max_images is not None:
        ids = ids[: max(0, int(max_images))]
    if not ids:
        raise UserFacingError("the annotation file lists no images to evaluate")
    pairs = []
    for image_id in ids:
        path = images_dir / coco.imgs[image_id]["file_name"]
        if not path.is_file():
            raise UserFacingError(f"image {path} listed in the annotations is missing")
        pairs.append((image_id, path))
    return pairs




def evaluate_teacher(
    teacher_path: str | Path,
    annotations_json,
    images_dir: str | Path,
    teacher_config=None,
    max_images: int | None = None,
    results_json: str | Path | None = None,
) -> dict:
    """COCO keypoint AP of a MoveNet-MultiPose-format ONNX teacher (scales, flip, tiles, OKS-NMS merge as
    `training.teacher.TeacherConfig` says) on an annotated image folder."""
    from tqdm import tqdm

    from tagtrack.training.teacher import MoveNetTeacher, TeacherConfig, predict_teacher

    teacher_config = teacher_config or TeacherConfig()
    coco = load_coco_annotations(annotations_json)
    images = annotated_images(coco, images_dir, max_images)
    teacher = MoveNetTeacher(teacher_path)
    category_id = person_category_id(coco)
    results: list[dict] = []
    for image_id, path in tqdm(images, desc="teacher", unit="img"):
        results.extend(poses_to_coco_results(predict_teacher(teacher, read_image(path), teacher_config), image_id,
                                             category_id))
    if results_json:
        write_results(results, results_json)
    return evaluate_results(results, coco, image_ids=[i for i, _ in images])


# ---------------------------------------------------------------- a checkpoint over an annotated folder


def load_network(weights: str | Path, device: str):
    from tagtrack.model.checkpoint import load_checkpoint
    from tagtrack.model.predict import torch_infer_fn

    loaded = load_checkpoint(weights, device=device)
    return loaded, torch_infer_fn(loaded.model, device)


def evaluate_checkpoint(
    weights: str | Path,
    annotations_json,
    images_dir: str | Path,
    predict_config=None,
    input_hw: tuple[int, int] | None = None,
    max_images: int | None = None,
    results_json: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """COCO keypoint AP/AR of a checkpoint on an annotated image folder.

    predict_config (`model.predict.PredictConfig`) selects single scale, flip and multi-scale testing;
    input_hw is the network input at scale 1; by default each image gets the checkpoint's input pixels in
    the shape that covers it best (`transforms.choose_input_hw`), as `tagtrack predict` does.
    results_json, when given, receives the COCO results file. Returns the `evaluate_results` dict.
    """
    from tqdm import tqdm

    from tagtrack.model.predict import PredictConfig, predict_image
    from tagtrack.model.transforms import choose_input_hw

    coco = load_coco_annotations(annotations_json)
    images = annotated_images(coco, images_dir, max_images)
    loaded, infer = load_network(weights, device)
    predict_config = predict_config or PredictConfig()
    checkpoint_hw = (loaded.config.input_height, loaded.config.input_width)
    category_id = person_category_id(coco)
    results: list[dict] = []
    for image_id, path in tqdm(images, desc="eval", unit="img", disable=not progress):
        image = read_image(path)
        poses = predict_image(infer, image, choose_input_hw(checkpoint_hw, input_hw, image.shape[:2]),
                              loaded.schema, predict_config)
        results.extend(poses_to_coco_results(poses, image_id, category_id))
    if results_json:
        write_results(results, results_json)
    metrics = evaluate_results(results, coco, image_ids=[i for i, _ in images])
    log.info("evaluated %s on %d images: AP %.3f", weights, len(images), metrics["AP"])
    return metrics


# ---------------------------------------------------------------- pseudo-labels against ground truth


def oks_against_annotation(truth: dict, keypoints: np.ndarray, sigmas: np.ndarray, area: float) -> float:
    """COCO's OKS of keypoints [K,3] (found: score or v > 0) against one annotated person's labelled joints, at
    the given object area (at least 1)."""
    gt = np.asarray(truth["keypoints"], dtype=np.float64).reshape(-1, 3)
    visible = gt[:, 2] > 0
    # an unlabelled joint matches nothing
    found = visible & (keypoints[:, 2] > 0)
    return float(object_keypoint_similarity(gt[:, :2], keypoints[:, :2].astype(np.float64), visible, found,
                                            max(area, 1.0), sigmas))


def annotation_area(annotation: dict) -> float:
    """The annotation's segment area (COCO's OKS scale)."""
    return float(annotation.get("area") or 0.0)


def box_area(annotation: dict) -> float:
    """The annotation's box area: the scale for labels without a segment area (the teacher's)."""
    return float(annotation["bbox"][2] * annotation["bbox"][3])


def inside_box(point: np.ndarray, bbox: Sequence[float]) -> bool:
    x, y, w, h = bbox
    return bool(x <= point[0] <= x + w and y <= point[1] <= y + h)


def pseudo_label_quality(labels_json, truth_json, oks_threshold: float = 0.5,
                         schema: KeypointSchema = COCO17) -> dict:
    """How pseudo-labels (`main.py label` output over annotated images) compare with the ground truth.

    Images are matched by file name (the label file's `source_file`, else `file_name`). Every ground-truth
    person with keypoints is 'labelled' (a pseudo-labelled person has OKS >= oks_threshold with them),
    'ignored' (else the centre of their box lies in an ignore region: no harm done), or 'missed' (taught
    as background: the harm pseudo-labels can do). Pseudo-labelled people matching no ground-truth person
    count as 'false_labels'. Also the COCO AP of the labelled people scored by the teacher's score.
    """
    labels = load_coco_annotations(labels_json)
    truth = load_coco_annotations(truth_json)
    truth_by_name = {Path(im["file_name"]).name: im["id"] for im in truth.dataset["images"]}
    sigmas = schema.sigmas_array().astype(np.float64)
    counts = {"truth_people": 0, "labelled": 0, "ignored": 0, "missed": 0, "labels": 0, "false_labels": 0,
              "ignore_regions": 0}
    results, image_ids = [], []
    for image in labels.dataset["images"]:
        name = Path(image.get("source_file") or image["file_name"]).name
        if name not in truth_by_name:
            continue
        truth_id = truth_by_name[name]
        image_ids.append(truth_id)
        annotations = labels.imgToAnns.get(image["id"], [])
        labelled = [a for a in annotations if a.get("num_keypoints", 0) > 0]
        ignore = [a for a in annotations if a.get("num_keypoints", 0) == 0]
        counts["labels"] += len(labelled)
        counts["ignore_regions"] += len(ignore)
        people = labelled_people(truth, truth_id)
        label_keypoints = [np.asarray(a["keypoints"], np.float64).reshape(-1, 3) for a in labelled]
        oks = np.array([[oks_against_annotation(p, k, sigmas, annotation_area(p)) for k in label_keypoints] for p in people]).reshape(
            len(people), len(labelled))
        for i, person in enumerate(people):
            counts["truth_people"] += 1
            x, y, w, h = person["bbox"]
            centre = np.array([x + w / 2, y + h / 2])
            if labelled and oks[i].max() >= oks_threshold:
                counts["labelled"] += 1
            elif any(inside_box(centre, a["bbox"]) for a in ignore):
                counts["ignored"] += 1
            else:
                counts["missed"] += 1
        counts["false_labels"] += int(sum(1 for j in range(len(labelled))
                                          if not len(people) or oks[:, j].max() < oks_threshold))
        for annotation in labelled:
            results.append({"image_id": truth_id, "category_id": person_category_id(truth),
                            "keypoints": annotation["keypoints"], "score": float(annotation.get("score", 1.0))})
    if not image_ids:
        raise UserFacingError("no image of the pseudo-labels is in the ground-truth file (matched by file name)")
    metrics = evaluate_results(results, truth, image_ids=image_ids)
    return {**counts, "AP": metrics["AP"], "AP50": metrics["AP50"], "AR": metrics["AR"], "images": len(image_ids)}
