"""Tag diagnostics: how well the network's tags separate people, apart from how well it finds joints.

- `reference_tags` / `group_margin` / `summarize_margins`: how far apart different people's reference tags are
  inside one image (Wang et al.'s group margin).
- `temporal_group_margin` / `summarize_temporal_margins` / `evaluate_temporal_margin`: the same across two views
  of one scene, people matched by identity (labelled clips).
- `group_ground_truth_joints` / `evaluate_grouping_with_gt_locations`: the network's tags read at the
  ground-truth joint locations and grouped by the decoder's grouping (Newell et al.'s "ground-truth detections"
  experiment), scored with COCO AP beside the network's own detections from the same forward pass.

COCO AP itself, the annotation files and the runners over an annotated folder are training/evaluate.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from tagtrack.model.errors import UserFacingError
from tagtrack.model.files import read_image
from tagtrack.model.pose import Pose
from tagtrack.model.schema import KeypointSchema
from tagtrack.training.evaluate import (
    annotated_images,
    evaluate_results,
    labelled_people,
    load_coco_annotations,
    load_network,
    person_category_id,
    poses_to_coco_results,
)


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



def _ground_truth_people(coco, image_id: int, num_keypoints: int) -> np.ndarray:
    """[N, K, 3] (x, y, v) image-pixel keypoints of the image's non-crowd people with keypoints."""
    people = labelled_people(coco, image_id)
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


def _input_hw(loaded, input_hw: tuple[int, int] | None) -> tuple[int, int]:
    """The network input the diagnostics run at: the one asked for, else the checkpoint's (single scale)."""
    return tuple(input_hw) if input_hw else (loaded.config.input_height, loaded.config.input_width)


def _network_maps(infer, image: np.ndarray, input_hw: tuple[int, int]):
    """One forward pass over a letterboxed image: (letterbox, heatmaps [K,h,w], tags [K,L,h,w]), float32."""
    from tagtrack.model.transforms import Letterbox, to_network_input

    letterbox = Letterbox.fit(image.shape[:2], input_hw)
    heatmaps, tags = infer(to_network_input(letterbox.apply(image))[None])
    heatmaps, tags = np.asarray(heatmaps[0], np.float32), np.asarray(tags[0], np.float32)
    if tags.ndim == 3:  # a network with one tag dimension may give [K,h,w]
        tags = tags[:, None]
    return letterbox.for_maps(heatmaps.shape[-2:]), heatmaps, tags


def _tracked_people(coco, image_id: int) -> list[dict]:
    """The image's annotations with an identity across frames (`track_id`) and labelled keypoints."""
    return [a for a in coco.imgToAnns.get(image_id, []) if "track_id" in a and a.get("num_keypoints", 0) > 0]


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

    decode_config = decode_config or DecodeConfig()
    coco = load_coco_annotations(annotations_json)
    images = annotated_images(coco, images_dir, max_images)
    loaded, infer = load_network(weights, device)
    schema = loaded.schema
    input_hw = _input_hw(loaded, input_hw)
    category_id = person_category_id(coco)
    predicted, grouped, margins = [], [], []
    for image_id, path in tqdm(images, desc="grouping", unit="img", disable=not progress):
        letterbox, heatmaps, tags = _network_maps(infer, read_image(path), input_hw)
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
        tracks = [{a["track_id"] for a in _tracked_people(coco, im["id"])} for im in images]
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

    coco = load_coco_annotations(annotations_json)
    pairs = track_pairs(coco, max_gap)
    if max_pairs is not None:
        pairs = pairs[:max_pairs]
    if not pairs:
        raise UserFacingError("the annotation file has no pairs of frames with shared track ids")
    images_dir = Path(images_dir)
    loaded, infer = load_network(weights, device)
    input_hw = _input_hw(loaded, input_hw)
    cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def view(image_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if image_id not in cache:
            path = images_dir / coco.imgs[image_id]["file_name"]
            if not path.is_file():
                raise UserFacingError(f"image {path} listed in the annotations is missing")
            letterbox, _, tags = _network_maps(infer, read_image(path), input_hw)
            people = _tracked_people(coco, image_id)
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

