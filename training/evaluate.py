"""COCO keypoint evaluation (pycocotools), grouping quality with ground-truth locations, and group margins.

- `evaluate_results`: score a COCO keypoint results file/list against COCO-format annotations.
- `evaluate_checkpoint`: run a checkpoint over an annotated image folder and score it (single scale,
  flip, multi-scale through `model.predict.PredictConfig`).
- `evaluate_grouping_with_gt_locations`: the network's tags read at the ground-truth joint locations and
  grouped by the decoder's grouping (Newell et al.'s "ground-truth detections" experiment), scored beside
  the network's own detections from the same forward pass.
- `group_margin` / `temporal_group_margin`: how far apart different people's reference tags are
  (Wang et al.'s group margin), inside one image and across two views of one scene.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from tagtrack.model.errors import UserFacingError, import_extra
from tagtrack.model.files import read_image
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
        path = Path(annotations_json)
        name = str(path)
        if not path.is_file():
            raise UserFacingError(f"annotation file not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserFacingError(f"annotation file {path} is not valid JSON: {error}") from None
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
        path = Path(results)
        if not path.is_file():
            raise UserFacingError(f"results file not found: {path}")
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserFacingError(f"results file {path} is not valid JSON: {error}") from None
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


# ---------------------------------------------------------------- group margins


def reference_tags(tags: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Each person's reference tag: the mean of the tags read at their visible joints.

    tags: [K, L, h, w] tag maps; joints: [N, K, 3] (x, y, visible) in map pixels (rounded to the nearest
    pixel; joints outside the map count as not visible). Returns [N, L]; a person without a visible
    joint gets NaN.
    """
    tags = np.asarray(tags, dtype=np.float64)
    if tags.ndim == 3:  # [K, h, w]: L = 1
        tags = tags[:, None]
    joints = np.asarray(joints, dtype=np.float64)
    num_keypoints, tag_dim, height, width = tags.shape
    references = np.full((len(joints), tag_dim), np.nan)
    for n, person in enumerate(joints):
        values = []
        for k in range(min(num_keypoints, len(person))):
            x, y, visible = person[k]
            xi, yi = int(round(x)), int(round(y))
            if visible > 0 and 0 <= xi < width and 0 <= yi < height:
                values.append(tags[k, :, yi, xi])
        if values:
            references[n] = np.mean(values, axis=0)
    return references


def group_margin(tags: np.ndarray, joints: np.ndarray, tag_threshold: float) -> float | None:
    """Smallest distance between two different people's reference tags minus the tag threshold.

    Positive: every pair of people is further apart than the decoder's grouping threshold. None when the
    image has fewer than two people with a visible joint.
    """
    references = reference_tags(tags, joints)
    references = references[~np.isnan(references).any(axis=1)]
    if len(references) < 2:
        return None
    distances = np.linalg.norm(references[:, None] - references[None], axis=-1)
    distances[np.diag_indices(len(references))] = np.inf
    return float(distances.min() - tag_threshold)


def summarize_margins(margins: Iterable[float | None]) -> dict:
    """Mean, median, min and the fraction of positive margins over images (None entries skipped)."""
    values = np.array([m for m in margins if m is not None], dtype=np.float64)
    if values.size == 0:
        return {"count": 0, "mean": float("nan"), "median": float("nan"), "min": float("nan"),
                "fraction_positive": float("nan")}
    return {"count": int(values.size), "mean": float(values.mean()), "median": float(np.median(values)),
            "min": float(values.min()), "fraction_positive": float((values > 0).mean())}


@dataclass
class TemporalMargin:
    """Reference-tag distances across two views of one scene (people matched by identity).

    same: per person present in both views, distance of their reference tags across the views.
    different: every distance between one person's reference in one view and another person's in the
    other view. margin = min(different) - max(same): positive means one threshold separates them.
    match_accuracy: fraction of shared people whose nearest reference in the other view (both directions)
    is their own.
    """

    same: np.ndarray
    different: np.ndarray
    match_accuracy: float

    @property
    def margin(self) -> float:
        if self.same.size == 0 or self.different.size == 0:
            return float("nan")
        return float(self.different.min() - self.same.max())


def temporal_group_margin(
    tags_a: np.ndarray, joints_a: np.ndarray, ids_a: Sequence[int],
    tags_b: np.ndarray, joints_b: np.ndarray, ids_b: Sequence[int],
) -> TemporalMargin:
    """Same-person vs different-person reference-tag distances across two views (tags [K,L,h,w], joints
    [N,K,3] in map pixels, ids: each person's identity, shared between the views)."""
    ref_a, ref_b = reference_tags(tags_a, joints_a), reference_tags(tags_b, joints_b)
    keep_a = ~np.isnan(ref_a).any(axis=1)
    keep_b = ~np.isnan(ref_b).any(axis=1)
    ref_a, ids_a = ref_a[keep_a], np.asarray(ids_a)[keep_a]
    ref_b, ids_b = ref_b[keep_b], np.asarray(ids_b)[keep_b]
    if len(ref_a) == 0 or len(ref_b) == 0:
        return TemporalMargin(np.zeros(0), np.zeros(0), float("nan"))
    distances = np.linalg.norm(ref_a[:, None] - ref_b[None], axis=-1)  # [Na, Nb]
    same_identity = ids_a[:, None] == ids_b[None]
    same = distances[same_identity]
    different = distances[~same_identity]
    correct, shared = 0, 0
    for i, j in zip(*np.nonzero(same_identity)):
        shared += 1
        correct += int(np.argmin(distances[i]) == j and np.argmin(distances[:, j]) == i)
    accuracy = correct / shared if shared else float("nan")
    return TemporalMargin(same=same, different=different, match_accuracy=accuracy)


def summarize_temporal_margins(pairs: Iterable[TemporalMargin]) -> dict:
    """Over many held-out pairs: mean same-person distance, mean and min different-person distance,
    margin (min different - max same over all pairs), mean per-pair margin, fraction of pairs with a
    positive margin, and the nearest-reference match accuracy."""
    pairs = list(pairs)
    same = np.concatenate([p.same for p in pairs]) if pairs else np.zeros(0)
    different = np.concatenate([p.different for p in pairs]) if pairs else np.zeros(0)
    per_pair = np.array([p.margin for p in pairs], dtype=np.float64)
    per_pair = per_pair[~np.isnan(per_pair)]
    accuracies = np.array([p.match_accuracy for p in pairs], dtype=np.float64)
    accuracies = accuracies[~np.isnan(accuracies)]
    nan = float("nan")
    return {
        "pairs": len(pairs),
        "same_mean": float(same.mean()) if same.size else nan,
        "same_max": float(same.max()) if same.size else nan,
        "different_mean": float(different.mean()) if different.size else nan,
        "different_min": float(different.min()) if different.size else nan,
        "margin": float(different.min() - same.max()) if same.size and different.size else nan,
        "pair_margin_mean": float(per_pair.mean()) if per_pair.size else nan,
        "pair_margin_positive": float((per_pair > 0).mean()) if per_pair.size else nan,
        "match_accuracy": float(accuracies.mean()) if accuracies.size else nan,
    }


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
        for person in predict_teacher(teacher, read_image(path), teacher_config):
            results.append({"image_id": image_id, "category_id": category_id,
                            "keypoints": [round(float(v), 2) for v in person.keypoints.reshape(-1)],
                            "score": float(person.score)})
    if results_json:
        write_results(results, results_json)
    return evaluate_results(results, coco, image_ids=[i for i, _ in images])


# ---------------------------------------------------------------- a checkpoint over an annotated folder


def _load_network(weights: str | Path, device: str):
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
    loaded, infer = _load_network(weights, device)
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


def _ground_truth_people(coco, image_id: int, num_keypoints: int) -> np.ndarray:
    """[N, K, 3] (x, y, v) image-pixel keypoints of the image's non-crowd people with keypoints."""
    people = [a for a in coco.imgToAnns.get(image_id, [])
              if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0]
    if not people:
        return np.zeros((0, num_keypoints, 3))
    return np.array([a["keypoints"] for a in people], dtype=np.float64).reshape(len(people), -1, 3)


def _image_to_map_joints(letterbox, people: np.ndarray) -> np.ndarray:
    """Image-pixel keypoints [N,K,3] -> map pixels, visibility kept (0 for unlabelled joints)."""
    mapped = people.copy()
    if len(people):
        mapped[..., :2] = letterbox.image_to_map(people[..., :2])
    return mapped


def group_ground_truth_joints(heatmaps_shape: tuple[int, int, int], tags: np.ndarray, joints_map: np.ndarray,
                              joints_image: np.ndarray, schema: KeypointSchema, tag_threshold: float) -> list[Pose]:
    """Group ground-truth joint locations by the network's tags with the decoder's own grouping.

    The decoder gets heatmaps that are 1 exactly at each labelled joint's map pixel and 0 elsewhere (no
    peak suppression, no refinement), so it groups exactly the true joints by their tags. Each grouped
    joint is then put back at its exact image location. joints_map / joints_image: [N,K,3] (x, y, v).
    """
    from tagtrack.model.codec import DecodeConfig, decode

    num_joints, height, width = heatmaps_shape
    heatmaps = np.zeros((num_joints, height, width), dtype=np.float32)
    exact: dict[tuple[int, int, int], np.ndarray] = {}
    for person_map, person_image in zip(joints_map, joints_image):
        for k in range(num_joints):
            x, y, visible = person_map[k]
            xi, yi = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
            if visible > 0 and 0 <= xi < width and 0 <= yi < height:
                heatmaps[k, yi, xi] = 1.0
                exact.setdefault((k, yi, xi), person_image[k, :2])  # two people on one pixel: one joint
    # spatial_weight 0: the tags alone decide, as in Newell et al.'s experiment; this measures the tag
    # space, not the decoder's tie-break by position.
    config = DecodeConfig(detection_threshold=0.5, tag_threshold=tag_threshold, nms_kernel=1, adjust=False,
                          refine=False, spatial_weight=0.0, top_k=max(30, len(joints_map)),
                          max_people=max(30, len(joints_map)), duplicate_oks_threshold=2.0)
    poses = decode(heatmaps, tags, schema, config)
    for pose in poses:
        for k in range(num_joints):
            if pose.keypoints[k, 2] > 0:
                key = (k, int(round(pose.keypoints[k, 1])), int(round(pose.keypoints[k, 0])))
                pose.keypoints[k, :2] = exact[key]
        pose.box = Pose.box_from_keypoints(pose.keypoints)
    return poses


def evaluate_grouping_with_gt_locations(
    weights: str | Path,
    annotations_json,
    images_dir: str | Path,
    input_hw: tuple[int, int] | None = None,
    max_images: int | None = None,
    decode_config=None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """How good the network's grouping is once detection is perfect (Newell et al.: 59.2 -> 94.0 AP).

    One single-scale forward pass per image; from it (a) the network's own poses and (b) the ground-truth
    joint locations grouped by the network's tags (`group_ground_truth_joints`) are scored with COCO AP,
    and the image's group margin (smallest distance between different people's reference tags at the
    true joints, minus the tag threshold) is measured. Returns {"predicted": metrics, "gt_locations":
    metrics, "group_margin": summary}.
    """
    from tqdm import tqdm

    from tagtrack.model.codec import DecodeConfig
    from tagtrack.model.predict import poses_from_maps
    from tagtrack.model.transforms import Letterbox, to_network_input

    decode_config = decode_config or DecodeConfig()
    coco = load_coco_annotations(annotations_json)
    images = annotated_images(coco, images_dir, max_images)
    loaded, infer = _load_network(weights, device)
    schema = loaded.schema
    input_hw = tuple(input_hw) if input_hw else (loaded.config.input_height, loaded.config.input_width)
    category_id = person_category_id(coco)
    predicted, grouped, margins = [], [], []
    for image_id, path in tqdm(images, desc="grouping", unit="img", disable=not progress):
        image = read_image(path)
        letterbox = Letterbox.fit(image.shape[:2], input_hw)
        heatmaps, tags = infer(to_network_input(letterbox.apply(image))[None])
        heatmaps, tags = np.asarray(heatmaps[0], np.float32), np.asarray(tags[0], np.float32)
        if tags.ndim == 3:
            tags = tags[:, None]
        poses = poses_from_maps(heatmaps, tags, letterbox, schema, decode_config)
        predicted.extend(poses_to_coco_results(poses, image_id, category_id))
        people = _ground_truth_people(coco, image_id, schema.num_keypoints)
        if len(people) == 0:
            continue
        people_map = _image_to_map_joints(letterbox, people)
        poses = group_ground_truth_joints(heatmaps.shape, tags, people_map, people, schema,
                                          decode_config.tag_threshold)
        grouped.extend(poses_to_coco_results(poses, image_id, category_id))
        margins.append(group_margin(tags, people_map, decode_config.tag_threshold))
    ids = [i for i, _ in images]
    return {
        "predicted": evaluate_results(predicted, coco, image_ids=ids),
        "gt_locations": evaluate_results(grouped, coco, image_ids=ids),
        "group_margin": summarize_margins(margins),
    }


def track_pairs(coco, max_gap: int = 1) -> list[tuple[int, int]]:
    """Pairs of images of one video (`video_id`, ordered by `frame_id`) at most max_gap images apart that
    share at least one tracked person with keypoints (`track_id`), as `main.py label` and
    `training.synthetic.generate_clips` write them."""
    by_video: dict[int, list[dict]] = {}
    for image in coco.dataset["images"]:
        if "video_id" in image and "frame_id" in image:
            by_video.setdefault(image["video_id"], []).append(image)
    pairs = []
    for images in by_video.values():
        images.sort(key=lambda im: im["frame_id"])
        tracks = [{a["track_id"] for a in coco.imgToAnns.get(im["id"], [])
                   if "track_id" in a and a.get("num_keypoints", 0) > 0} for im in images]
        for i in range(len(images)):
            for j in range(i + 1, min(len(images), i + 1 + max_gap)):
                if tracks[i] & tracks[j]:
                    pairs.append((images[i]["id"], images[j]["id"]))
    return pairs


def evaluate_temporal_margin(
    weights: str | Path,
    annotations_json,
    images_dir: str | Path,
    input_hw: tuple[int, int] | None = None,
    max_pairs: int | None = None,
    max_gap: int = 1,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """The temporal group margin of a checkpoint on held-out pairs of frames with identities (a labelled
    clip: images with video_id/frame_id, annotations with track_id). See `summarize_temporal_margins`."""
    from tqdm import tqdm

    from tagtrack.model.transforms import Letterbox, to_network_input

    coco = load_coco_annotations(annotations_json)
    pairs = track_pairs(coco, max_gap)
    if max_pairs is not None:
        pairs = pairs[:max_pairs]
    if not pairs:
        raise UserFacingError("the annotation file has no pairs of frames with shared track ids")
    images_dir = Path(images_dir)
    loaded, infer = _load_network(weights, device)
    input_hw = tuple(input_hw) if input_hw else (loaded.config.input_height, loaded.config.input_width)
    cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def view(image_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if image_id not in cache:
            path = images_dir / coco.imgs[image_id]["file_name"]
            if not path.is_file():
                raise UserFacingError(f"image {path} listed in the annotations is missing")
            image = read_image(path)
            letterbox = Letterbox.fit(image.shape[:2], input_hw)
            _, tags = infer(to_network_input(letterbox.apply(image))[None])
            tags = np.asarray(tags[0], np.float32)
            people = [a for a in coco.imgToAnns.get(image_id, [])
                      if "track_id" in a and a.get("num_keypoints", 0) > 0]
            joints = np.array([a["keypoints"] for a in people], np.float64).reshape(len(people), -1, 3)
            cache.clear()  # pairs come in frame order: only the latest view is reused
            cache[image_id] = (tags, _image_to_map_joints(letterbox, joints),
                               np.array([a["track_id"] for a in people]))
        return cache[image_id]

    margins = []
    for a, b in tqdm(pairs, desc="temporal margin", unit="pair", disable=not progress):
        tags_a, joints_a, ids_a = view(a)
        tags_b, joints_b, ids_b = view(b)
        margins.append(temporal_group_margin(tags_a, joints_a, ids_a, tags_b, joints_b, ids_b))
    return summarize_temporal_margins(margins)


# ---------------------------------------------------------------- pseudo-labels against ground truth


def _oks_against_truth(truth: dict, keypoints: np.ndarray, sigmas: np.ndarray) -> float:
    """COCO's OKS of labelled keypoints [K,3] (v > 0 = labelled) against one ground-truth person."""
    gt = np.asarray(truth["keypoints"], dtype=np.float64).reshape(-1, 3)
    visible = gt[:, 2] > 0
    area = max(float(truth.get("area") or 0.0), 1.0)
    # an unlabelled joint matches nothing
    found = visible & (keypoints[:, 2] > 0)
    return float(object_keypoint_similarity(gt[:, :2], keypoints[:, :2], visible, found, area, sigmas))


def _inside_box(point: np.ndarray, bbox: Sequence[float]) -> bool:
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
        people = [a for a in truth.imgToAnns.get(truth_id, [])
                  if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0]
        label_keypoints = [np.asarray(a["keypoints"], np.float64).reshape(-1, 3) for a in labelled]
        oks = np.array([[_oks_against_truth(p, k, sigmas) for k in label_keypoints] for p in people]).reshape(
            len(people), len(labelled))
        for i, person in enumerate(people):
            counts["truth_people"] += 1
            x, y, w, h = person["bbox"]
            centre = np.array([x + w / 2, y + h / 2])
            if labelled and oks[i].max() >= oks_threshold:
                counts["labelled"] += 1
            elif any(_inside_box(centre, a["bbox"]) for a in ignore):
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
