"""Today's (2026-12-01, before issue 17) preprocessing and decoder, kept only as the reference that
`bench decode --compare` and `bench run`'s preprocessing check time the current code against on the
same frames in one run, and that the tests compare the current code's outputs with.

Not used by the application. A copy of `model/transforms.py` (`Letterbox.apply` + `to_network_input`),
of `model/codec.py`'s `decode` with the helpers issue 17 rewrote (candidates, grouping, refinement) as they were,
and of `model/predict.py`'s `poses_from_maps`. Delete this module once nobody needs the comparison.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

# Unchanged by issue 17, so shared rather than copied: the candidates' sort and top-k, quarter-pixel offsets, OKS.
from tagtrack.model.body_box import body_boxes
from tagtrack.model.codec import DecodeConfig, _Candidates, _peak_offsets, pairwise_oks, top_k_candidates
from tagtrack.model.pose import Pose
from tagtrack.model.schema import KeypointSchema
from tagtrack.model.transforms import PAD_VALUE, Letterbox

_MATMUL_COLUMNS = 2048


def baseline_preprocess(letterbox: Letterbox, image_bgr: np.ndarray) -> np.ndarray:
    """The network input [3,H,W] float32 as made before issue 17: resize, a fresh padded image, then a copy."""
    resized_h, resized_w = letterbox.resized_hw
    shrinking = resized_h < letterbox.image_hw[0]
    resized = cv2.resize(
        image_bgr, (resized_w, resized_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )
    output = np.full((letterbox.input_hw[0], letterbox.input_hw[1], 3), PAD_VALUE, dtype=image_bgr.dtype)
    output[letterbox.pad_y:letterbox.pad_y + resized_h, letterbox.pad_x:letterbox.pad_x + resized_w] = resized
    rgb = output[:, :, ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(rgb, dtype=np.float32) * np.float32(1.0 / 255.0)


def baseline_poses_from_maps(
    heatmaps: np.ndarray, tags: np.ndarray, letterbox: Letterbox, schema: KeypointSchema, decode_config: DecodeConfig
) -> list[Pose]:
    """`poses_from_maps` before issue 17: decode, then each pose mapped to image pixels on its own. (Its box is
    today's whole-body box from the joints, `model.body_box`, so that the people compare to the bit.)"""
    poses = baseline_decode(heatmaps, tags, schema, decode_config)
    for pose in poses:
        found = pose.keypoints[:, 2] > 0
        image_xy = letterbox.map_to_image(pose.keypoints[:, :2].astype(np.float64))
        pose.keypoints[:, :2] = np.where(found[:, None], image_xy, 0.0)
        pose.box = body_boxes(pose.keypoints[None], schema.keypoint_names, letterbox.image_hw)[0]
    return poses


def _find_candidates(heatmaps: np.ndarray, tags: np.ndarray, config: DecodeConfig) -> _Candidates:
    """NMS peaks above the detection threshold, the top_k best of each joint type (17-channel dilation of a
    channels-last copy, flat indices over [h,w,K])."""
    num_joints = heatmaps.shape[0]
    channels_last = np.ascontiguousarray(heatmaps.transpose(1, 2, 0))
    mask = channels_last > config.detection_threshold
    if config.nms_kernel > 1:
        pooled = cv2.dilate(channels_last, np.ones((config.nms_kernel, config.nms_kernel), np.uint8))
        mask &= channels_last == pooled.reshape(channels_last.shape)
    flat = np.flatnonzero(mask)
    pixel, joint = np.divmod(flat, num_joints)
    return top_k_candidates(joint, pixel, channels_last.reshape(-1)[flat], tags, config.top_k)


def _nearest_joint_gap(xy: np.ndarray, all_xy: np.ndarray, person_of: np.ndarray, num_people: int) -> np.ndarray:
    """[n, P]: distance from each of n candidates to the nearest joint already given to each person."""
    assigned = np.flatnonzero(person_of >= 0)
    assigned = assigned[np.argsort(person_of[assigned], kind="stable")]  # grouped by person, each has >= 1
    starts = np.searchsorted(person_of[assigned], np.arange(num_people))
    squared = ((xy[:, None, :] - all_xy[None, assigned, :]) ** 2).sum(axis=2)  # [n, A]
    return np.sqrt(np.minimum.reduceat(squared, starts, axis=1))


def _group(
    candidates: _Candidates, schema: KeypointSchema, config: DecodeConfig, map_long_side: int
) -> tuple[np.ndarray, np.ndarray]:
    """Assign candidates to people joint type by joint type. Returns person of each candidate [C], people count."""
    person_of = np.full(candidates.joint.size, -1, dtype=np.int64)
    xy = np.stack([candidates.x, candidates.y], axis=1).astype(np.float64)
    tag_dim = candidates.tag.shape[1]
    tag_sum = np.zeros((candidates.joint.size, tag_dim), dtype=np.float64)
    tag_count = np.zeros(candidates.joint.size, dtype=np.int64)
    num_people = 0
    for joint in schema.grouping_order:
        start, stop = candidates.starts[joint], candidates.starts[joint + 1]
        if start == stop:
            continue
        rows = np.arange(start, stop)
        joint_tags = candidates.tag[start:stop].astype(np.float64)
        new_rows = rows
        if num_people > 0:
            mean_tags = tag_sum[:num_people] / tag_count[:num_people, None]
            distance = np.sqrt(((joint_tags[:, None, :] - mean_tags[None, :, :]) ** 2).sum(axis=2))
            if config.use_detection_val:
                cost = np.round(distance) * 100.0 - candidates.score[start:stop, None]
                if config.spatial_weight > 0:
                    gap = _nearest_joint_gap(xy[start:stop], xy, person_of, num_people) / map_long_side
                    cost += config.spatial_weight * np.minimum(gap, 1.0)
            else:
                cost = distance
            matched_rows, matched_people = linear_sum_assignment(cost)
            close = distance[matched_rows, matched_people] < config.tag_threshold
            matched_rows, matched_people = matched_rows[close], matched_people[close]
            person_of[start + matched_rows] = matched_people
            tag_sum[matched_people] += joint_tags[matched_rows]
            tag_count[matched_people] += 1
            new_rows = rows[person_of[start:stop] < 0]
        new_people = np.arange(num_people, num_people + new_rows.size)
        person_of[new_rows] = new_people
        tag_sum[new_people] = candidates.tag[new_rows]
        tag_count[new_people] = 1
        num_people += new_rows.size
    return person_of, num_people


def _refine(
    heatmaps: np.ndarray,
    tags: np.ndarray,
    keypoints: np.ndarray,
    person_tags: np.ndarray,
    peak_fit: str | None,
    max_tag_distance: float | None,
    reach: float | None = None,
) -> None:
    """Fill missing joints (score 0) in place: argmax of heatmap - round(|tag - person tag|) over the whole map,
    or with ``reach`` over the person's window (see ``DecodeConfig.refine_reach``).

    Done joint type by joint type for all people missing it at once. The squared tag distance is
    expanded as |t|^2 - 2 t.m + |m|^2, so the L-dimensional part is one matrix product, and every
    step works in place in one buffer: on small maps allocation, not arithmetic, is the cost.
    """
    num_joints, height, width = heatmaps.shape
    tag_dim = tags.shape[1]
    flat_heatmaps = heatmaps.reshape(num_joints, -1)
    flat_tags = tags.reshape(num_joints, tag_dim, -1)
    missing = keypoints[:, :, 2] <= 0
    buffer = np.empty((keypoints.shape[0], height * width), dtype=np.float32)
    tag_norms = np.empty(height * width, dtype=np.float32)
    if reach is not None:
        outside_rows, outside_columns = _outside_reach(keypoints, reach, height, width)
    for joint in np.nonzero(missing.any(axis=0))[0]:
        people = np.nonzero(missing[:, joint])[0]
        means = person_tags[people].astype(np.float32)
        objective = buffer[: people.size]
        if tag_dim == 1:
            np.subtract(flat_tags[joint], means, out=objective)
            np.abs(objective, out=objective)
        else:
            np.einsum("ij,ij->j", flat_tags[joint], flat_tags[joint], out=tag_norms)
            scaled_means = -2.0 * means
            # In column blocks: each product stays below OpenBLAS's threading threshold. Threaded
            # it costs ~30x more here, waking worker threads on a machine busy with inference.
            for start in range(0, height * width, _MATMUL_COLUMNS):
                block = slice(start, start + _MATMUL_COLUMNS)
                np.matmul(scaled_means, flat_tags[joint][:, block], out=objective[:, block])
            objective += (means * means).sum(axis=1, keepdims=True)
            objective += tag_norms
            np.maximum(objective, 0.0, out=objective)
            np.sqrt(objective, out=objective)
        np.rint(objective, out=objective)
        np.subtract(flat_heatmaps[joint], objective, out=objective)
        if reach is not None:
            window = objective.reshape(people.size, height, width)
            window -= outside_rows[people, :, None]
            window -= outside_columns[people, None, :]
        best = objective.argmax(axis=1)
        score = flat_heatmaps[joint, best]
        found = score > 0
        if max_tag_distance is not None:
            distance = np.linalg.norm(flat_tags[joint][:, best].T - means, axis=1)
            found &= distance < max_tag_distance
        people, best, score = people[found], best[found], score[found]
        y, x = np.divmod(best, width)
        xf, yf = x.astype(np.float32), y.astype(np.float32)
        if peak_fit is not None and people.size:
            dx, dy = _peak_offsets(heatmaps, np.full(x.size, joint), x, y, peak_fit)
            xf, yf = xf + dx, yf + dy
        keypoints[people, joint, 0] = xf
        keypoints[people, joint, 1] = yf
        keypoints[people, joint, 2] = score


def _outside_reach(keypoints: np.ndarray, reach: float, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per person, [P,h] and [P,w] penalties: 0 for rows/columns inside the grown box of found joints, else large.

    Every person reaching refinement has at least one found joint (people are made of candidates).
    """
    found = keypoints[:, :, 2] > 0
    x = np.where(found, keypoints[:, :, 0], np.nan)
    y = np.where(found, keypoints[:, :, 1], np.nan)
    x0, x1, y0, y1 = np.nanmin(x, 1), np.nanmax(x, 1), np.nanmin(y, 1), np.nanmax(y, 1)
    grow = reach * np.maximum(np.maximum(x1 - x0, y1 - y0), 0.05 * max(height, width))
    # The penalty (1e4) beats any heatmap value and tag step: outside pixels win only if nothing is inside.
    rows = np.arange(height, dtype=np.float32)
    columns = np.arange(width, dtype=np.float32)
    outside_rows = ((rows < (y0 - grow)[:, None]) | (rows > (y1 + grow)[:, None])).astype(np.float32) * 1e4
    outside_columns = ((columns < (x0 - grow)[:, None]) | (columns > (x1 + grow)[:, None])).astype(np.float32) * 1e4
    return outside_rows, outside_columns


def baseline_decode(
    heatmaps: np.ndarray, tags: np.ndarray, schema: KeypointSchema, config: DecodeConfig | None = None
) -> list[Pose]:
    """Group the joints in one image's maps into people. Returns poses in map pixels, best score first.

    heatmaps: [K,h,w]; tags: [K,L,h,w] (a [K,h,w] array is taken as L=1).
    """
    config = config or DecodeConfig()
    heatmaps = np.ascontiguousarray(heatmaps, dtype=np.float32)
    tags = np.asarray(tags, dtype=np.float32)
    if tags.ndim == 3:
        tags = tags[:, None]
    num_joints, height, width = heatmaps.shape
    if num_joints != schema.num_keypoints or tags.shape[0] != num_joints or tags.shape[2:] != (height, width):
        raise ValueError(
            f"maps do not match: heatmaps {heatmaps.shape}, tags {tags.shape}, schema of {schema.num_keypoints} joints"
        )
    tag_dim = tags.shape[1]

    candidates = _find_candidates(heatmaps, tags, config)
    person_of, num_people = _group(candidates, schema, config, max(height, width))
    if num_people == 0:
        return []

    keypoints = np.zeros((num_people, num_joints, 3), dtype=np.float32)
    x = candidates.x.astype(np.float32)
    y = candidates.y.astype(np.float32)
    if config.adjust:
        dx, dy = _peak_offsets(heatmaps, candidates.joint, candidates.x, candidates.y, config.peak_fit)
        x, y = x + dx, y + dy
    keypoints[person_of, candidates.joint] = np.stack([x, y, candidates.score], axis=1)
    tag_sum = np.zeros((num_people, tag_dim), dtype=np.float64)
    np.add.at(tag_sum, person_of, candidates.tag)
    person_tags = (tag_sum / np.bincount(person_of, minlength=num_people)[:, None]).astype(np.float32)

    # Person score as in pose-ae: mean detection score over all K joints, before refinement.
    scores = keypoints[:, :, 2].mean(axis=1)
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] >= config.min_person_score][: config.max_people]
    keypoints, person_tags, scores = keypoints[order], person_tags[order], scores[order]

    if config.refine and len(keypoints):
        _refine(heatmaps, tags, keypoints, person_tags, config.peak_fit if config.adjust else None,
                config.refine_max_tag_distance, config.refine_reach)

    if config.duplicate_oks_threshold <= 1.0 and len(keypoints) > 1:
        oks = pairwise_oks(keypoints, schema.sigmas_array())
        keep = np.ones(len(keypoints), dtype=bool)
        for person in range(len(keypoints)):
            if keep[person]:
                later = np.arange(person + 1, len(keypoints))
                keep[later[oks[person, later] > config.duplicate_oks_threshold]] = False
        keypoints, person_tags, scores = keypoints[keep], person_tags[keep], scores[keep]

    return [
        Pose(keypoints=keypoints[i], score=float(scores[i]), box=Pose.box_from_keypoints(keypoints[i]), tag=person_tags[i])
        for i in range(len(keypoints))
    ]
