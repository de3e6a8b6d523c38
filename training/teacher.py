"""A pretrained multi-person pose model used as a teacher for pseudo-labels.

The teacher is an ONNX model with MoveNet MultiPose's input/output format: input uint8 [1, H, W, 3] RGB
(H, W multiples of 32), output float32 [1, P, K*3 + 5]: per candidate person K x (y, x, score) normalised
to [0, 1], a box (ymin, xmin, ymax, xmax) and a person score. It is run at several input sizes, on the
mirrored image, and on overlapping tiles of large frames; all candidates are merged with OKS-NMS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tagtrack.model.errors import UserFacingError
from tagtrack.model.oks import object_keypoint_similarity
from tagtrack.model.schema import COCO17, KeypointSchema

log = logging.getLogger(__name__)

TEACHER_STRIDE = 32  # MoveNet needs input sides that are multiples of 32


@dataclass(frozen=True)
class TeacherConfig:
    """How the teacher is run over one image.

    scales: long side (px) of the teacher input for each full-frame run; MoveNet is best at 256-512.
    flip: also run on the mirrored image (left/right joints swapped back with the schema).
    tiles: also run on a tile_grid x tile_grid grid of overlapping tiles (tile_overlap of a tile's side)
    for frames whose long side is at least tile_min_side; tiles run at tile_scale (default: scales[0]).
    candidate_threshold: candidates with a lower person score are dropped before merging.
    nms_oks: candidates whose OKS with a better one exceeds this are merged into it.
    """

    scales: tuple[int, ...] = (256,)
    flip: bool = False
    tiles: bool = False
    tile_grid: int = 2
    tile_overlap: float = 0.25
    tile_min_side: int = 640
    tile_scale: int | None = None
    candidate_threshold: float = 0.05
    nms_oks: float = 0.5

    def __post_init__(self) -> None:
        if not self.scales or any(s < TEACHER_STRIDE for s in self.scales):
            raise UserFacingError(f"teacher scales must be at least {TEACHER_STRIDE} px, got {self.scales}")
        if self.tile_grid < 1 or not 0 <= self.tile_overlap < 1:
            raise UserFacingError("tile grid must be >= 1 and tile overlap in [0, 1)")


@dataclass
class TeacherPerson:
    """One person found by the teacher, in image pixels.

    keypoints: [K, 3] (x, y, score); score: the teacher's person score; box: (x1, y1, x2, y2);
    votes: how many teacher runs (scales, flips, tiles) found this person.
    """

    keypoints: np.ndarray
    score: float
    box: np.ndarray
    votes: int = 1


@dataclass
class _Run:
    region: tuple[int, int, int, int]  # x0, y0, x1, y1 of the image the teacher sees
    long_side: int
    flip: bool
    inner_edges: tuple[bool, bool, bool, bool] = (False, False, False, False)  # left, top, right, bottom


# MoveNet's graph computes dense maps before it picks people: the keypoint heatmaps (sigmoid, [1,K,H/4,W/4],
# the same stride and layout as ours) and the person-centre heatmap ([1,1,H/4,W/4]). These node outputs are
# exposed as extra graph outputs for dense distillation (training.distill).
TEACHER_HEATMAP_OUTPUT = "Sigmoid_1"
TEACHER_CENTRE_OUTPUT = "Sigmoid"


class MoveNetTeacher:
    """An ONNX Runtime session over a MoveNet-MultiPose-format model; checks the format on load.

    With `dense_maps`, the session also returns the teacher's keypoint and centre heatmaps (`run_dense`).
    """

    def __init__(self, path: str | Path, schema: KeypointSchema = COCO17, threads: int | None = None,
                 dense_maps: bool = False) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.schema = schema
        if not self.path.is_file():
            raise UserFacingError(f"teacher model not found: {self.path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            model = _with_dense_outputs(self.path) if dense_maps else str(self.path)
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except UserFacingError:
            raise
        except Exception as error:  # onnxruntime raises its own types for corrupt or unsupported files
            raise UserFacingError(f"teacher {self.path} could not be loaded by ONNX Runtime: {error}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        expected = schema.num_keypoints * 3 + 5
        if len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or len(inputs[0].shape) != 4 \
                or inputs[0].shape[3] != 3:
            raise UserFacingError(
                f"teacher {self.path} does not have MoveNet MultiPose's input (one uint8 [1,H,W,3] RGB image); "
                f"it has {[(i.name, i.type, i.shape) for i in inputs]}")
        if not outputs or len(outputs[0].shape) != 3 or outputs[0].shape[2] != expected:
            raise UserFacingError(
                f"teacher {self.path} does not have MoveNet MultiPose's output ([1,P,{expected}]); "
                f"it has {[(o.name, o.type, o.shape) for o in outputs]}")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        height, width = inputs[0].shape[1], inputs[0].shape[2]
        # A model exported with a fixed size gets that size (the image is stretched; outputs are normalised).
        self.fixed_hw = (height, width) if isinstance(height, int) and isinstance(width, int) else None

    def input_hw(self, image_hw: tuple[int, int], long_side: int) -> tuple[int, int]:
        if self.fixed_hw:
            return self.fixed_hw
        height, width = image_hw
        scale = long_side / max(height, width)

        def round_to_stride(v: float) -> int:
            return max(TEACHER_STRIDE, int(round(v / TEACHER_STRIDE)) * TEACHER_STRIDE)

        return round_to_stride(height * scale), round_to_stride(width * scale)

    def _resized(self, image_rgb: np.ndarray, long_side: int) -> np.ndarray:
        height, width = image_rgb.shape[:2]
        input_h, input_w = self.input_hw((height, width), long_side)
        shrinking = input_h * input_w < height * width
        return cv2.resize(image_rgb, (input_w, input_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)

    def run(self, image_rgb: np.ndarray, long_side: int) -> list[TeacherPerson]:
        """All candidates of one teacher call on image_rgb (uint8 [h,w,3]), in its pixels."""
        output = self.session.run([self.output_name], {self.input_name: self._resized(image_rgb, long_side)[None]})[0]
        return self._people(output, image_rgb.shape[:2])

    def run_dense(self, image_rgb: np.ndarray, long_side: int) -> tuple[list[TeacherPerson], np.ndarray]:
        """One teacher call: its candidates (image pixels) and its dense maps float32 [K+1,h,w] (K keypoint
        heatmaps, then the person-centre heatmap). The maps cover the whole image, stretched: map pixel j
        has its centre at image x = (j + 0.5) * width / w - 0.5 (likewise y)."""
        names = [self.output_name, TEACHER_HEATMAP_OUTPUT, TEACHER_CENTRE_OUTPUT]
        try:
            output, heatmaps, centre = self.session.run(names, {self.input_name: self._resized(image_rgb, long_side)[None]})
        except Exception as error:  # the session was made without dense outputs, or the graph lacks them
            raise UserFacingError(f"teacher {self.path} gives no dense maps ({error})") from None
        maps = np.concatenate([np.asarray(heatmaps)[0], np.asarray(centre)[0]], axis=0).astype(np.float32)
        return self._people(output, image_rgb.shape[:2]), maps

    def _people(self, output: np.ndarray, image_hw: tuple[int, int]) -> list[TeacherPerson]:
        height, width = image_hw
        output = np.asarray(output, dtype=np.float32).reshape(-1, output.shape[-1])
        num_keypoints = self.schema.num_keypoints
        people = []
        for row in output:
            yxs = row[: num_keypoints * 3].reshape(num_keypoints, 3)
            keypoints = np.stack([yxs[:, 1] * width, yxs[:, 0] * height, yxs[:, 2]], axis=1)
            ymin, xmin, ymax, xmax = row[num_keypoints * 3: num_keypoints * 3 + 4]
            box = np.array([xmin * width, ymin * height, xmax * width, ymax * height], dtype=np.float32)
            people.append(TeacherPerson(keypoints.astype(np.float32), float(row[-1]), box))
        return people


def _with_dense_outputs(path: Path) -> bytes:
    """The teacher's ONNX graph with its keypoint and centre heatmaps added as graph outputs."""
    from tagtrack.model.errors import import_extra

    onnx = import_extra("onnx", "export", "dense teacher maps (editing the teacher's ONNX graph)")
    try:
        model = onnx.load(str(path))
    except Exception as error:  # onnx raises DecodeError and others for a corrupt file
        raise UserFacingError(f"teacher {path} is not a readable ONNX model: {error}") from None
    produced = {name for node in model.graph.node for name in node.output}
    missing = [name for name in (TEACHER_HEATMAP_OUTPUT, TEACHER_CENTRE_OUTPUT) if name not in produced]
    if missing:
        raise UserFacingError(f"teacher {path} has no node output {missing[0]!r}: it is not MoveNet MultiPose, "
                              "whose heatmaps dense distillation needs")
    existing = {output.name for output in model.graph.output}
    for name in (TEACHER_HEATMAP_OUTPUT, TEACHER_CENTRE_OUTPUT):
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString()


def tile_regions(height: int, width: int, grid: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """A grid x grid set of overlapping tiles (x0, y0, x1, y1) covering the image; neighbours share
    `overlap` of a tile's side."""

    def spans(size: int) -> list[tuple[int, int]]:
        if grid == 1:
            return [(0, size)]
        tile = int(np.ceil(size / (grid - (grid - 1) * overlap)))
        step = (size - tile) / (grid - 1)
        return [(int(round(i * step)), min(size, int(round(i * step)) + tile)) for i in range(grid)]

    return [(x0, y0, x1, y1) for (y0, y1) in spans(height) for (x0, x1) in spans(width)]


def plan_runs(image_hw: tuple[int, int], config: TeacherConfig) -> list[_Run]:
    """Every teacher call made for one image: full frame at each scale (and mirrored), then tiles."""
    height, width = image_hw
    runs = []
    for long_side in config.scales:
        runs.append(_Run((0, 0, width, height), long_side, False))
        if config.flip:
            runs.append(_Run((0, 0, width, height), long_side, True))
    if config.tiles and max(height, width) >= config.tile_min_side and config.tile_grid > 1:
        tile_scale = config.tile_scale or config.scales[0]
        for x0, y0, x1, y1 in tile_regions(height, width, config.tile_grid, config.tile_overlap):
            inner = (x0 > 0, y0 > 0, x1 < width, y1 < height)
            runs.append(_Run((x0, y0, x1, y1), tile_scale, False, inner))
            if config.flip:
                runs.append(_Run((x0, y0, x1, y1), tile_scale, True, inner))
    return runs


def _cut_by_inner_edge(person: TeacherPerson, run: _Run, min_joint_score: float = 0.2) -> bool:
    """A person reaching a tile edge that is not the frame's edge is probably cut in half: the
    neighbouring tile (they overlap) or the full-frame run sees them whole."""
    x0, y0, x1, y1 = run.region
    margin = 0.02 * max(x1 - x0, y1 - y0)
    box = person.box
    seen = person.keypoints[person.keypoints[:, 2] >= min_joint_score, :2]
    lo_x = min([box[0]] + list(seen[:, 0]))
    lo_y = min([box[1]] + list(seen[:, 1]))
    hi_x = max([box[2]] + list(seen[:, 0]))
    hi_y = max([box[3]] + list(seen[:, 1]))
    left, top, right, bottom = run.inner_edges
    return bool((left and lo_x <= margin) or (top and lo_y <= margin)
                or (right and hi_x >= (x1 - x0) - margin) or (bottom and hi_y >= (y1 - y0) - margin))


def teacher_candidates(teacher: MoveNetTeacher, image_bgr: np.ndarray, config: TeacherConfig) -> list[TeacherPerson]:
    """Every candidate of every planned teacher run, in image pixels (not merged)."""
    image_rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    flip_index = np.asarray(teacher.schema.flip_index)
    candidates = []
    for run in plan_runs(image_rgb.shape[:2], config):
        x0, y0, x1, y1 = run.region
        region = image_rgb[y0:y1, x0:x1]
        if run.flip:
            region = region[:, ::-1]
        region = np.ascontiguousarray(region)
        region_width = x1 - x0
        for person in teacher.run(region, run.long_side):
            if person.score < config.candidate_threshold:
                continue
            if run.flip:
                keypoints = person.keypoints[flip_index].copy()
                keypoints[:, 0] = region_width - keypoints[:, 0]
                box = person.box.copy()
                box[[0, 2]] = region_width - person.box[[2, 0]]
                person = TeacherPerson(keypoints, person.score, box)
            if any(run.inner_edges) and _cut_by_inner_edge(person, run):
                continue
            person.keypoints[:, 0] += x0
            person.keypoints[:, 1] += y0
            person.box += np.array([x0, y0, x0, y0], dtype=np.float32)
            candidates.append(person)
    return candidates


def box_area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = box_area(np.array([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])]))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def keypoint_similarity(a: TeacherPerson, b: TeacherPerson, sigmas: np.ndarray,
                        min_joint_score: float = 0.2) -> float:
    """OKS between two candidates over the joints both see (score >= min_joint_score), with the larger of
    their box areas as the object scale; box IoU when they share fewer than 3 such joints."""
    both = (a.keypoints[:, 2] >= min_joint_score) & (b.keypoints[:, 2] >= min_joint_score)
    if both.sum() < 3:
        return box_iou(a.box, b.box)
    area = max(box_area(a.box), box_area(b.box), 1.0)
    return float(object_keypoint_similarity(a.keypoints[:, :2], b.keypoints[:, :2], both, both, area, sigmas))


def oks_nms_merge(candidates: list[TeacherPerson], schema: KeypointSchema = COCO17,
                  threshold: float = 0.5) -> list[TeacherPerson]:
    """Greedy OKS-NMS that merges instead of discarding: each kept person absorbs the candidates whose OKS
    with it exceeds threshold. Joint positions become the score-weighted mean of the group's, joint and
    person scores the group's maximum (a person seen at one scale only keeps the score it had there)."""
    sigmas = schema.sigmas_array()
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i].score)
    used = np.zeros(len(candidates), dtype=bool)
    merged = []
    for i in order:
        if used[i]:
            continue
        group = [candidates[i]]
        used[i] = True
        for j in order:
            if not used[j] and keypoint_similarity(candidates[i], candidates[j], sigmas) > threshold:
                group.append(candidates[j])
                used[j] = True
        merged.append(_merge_group(group))
    return merged


def _merge_group(group: list[TeacherPerson]) -> TeacherPerson:
    if len(group) == 1:
        person = group[0]
        return TeacherPerson(person.keypoints.copy(), person.score, person.box.copy(), 1)
    stack = np.stack([p.keypoints for p in group])  # [G, K, 3]
    weights = np.maximum(stack[:, :, 2], 1e-6)[..., None]
    xy = (stack[:, :, :2] * weights).sum(axis=0) / weights.sum(axis=0)
    keypoints = np.concatenate([xy, stack[:, :, 2].max(axis=0)[:, None]], axis=1).astype(np.float32)
    box_weights = np.array([p.score for p in group])[:, None]
    box = (np.stack([p.box for p in group]) * box_weights).sum(axis=0) / box_weights.sum()
    return TeacherPerson(keypoints, max(p.score for p in group), box.astype(np.float32), len(group))


def predict_teacher(teacher: MoveNetTeacher, image_bgr: np.ndarray, config: TeacherConfig) -> list[TeacherPerson]:
    """The teacher's people in one image: all runs (scales, flip, tiles) merged with OKS-NMS."""
    return oks_nms_merge(teacher_candidates(teacher, image_bgr, config), teacher.schema, config.nms_oks)
