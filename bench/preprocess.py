"""How much the fast preprocessing changes the network's output: the same frames through today's resize
(``model.transforms``, area average by an integer factor then bilinear) and through the single area
average it replaced (``bench.baseline.baseline_preprocess``), the people of both decoded and matched.

``python -m tagtrack.bench.preprocess VIDEO [--weights W] [--frames N] [--every S]`` prints the summary
(the numbers in docs/realtime.md, "Preprocessing"); the tests assert its tolerance.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from tagtrack.bench.baseline import baseline_preprocess
from tagtrack.model.codec import DecodeConfig
from tagtrack.model.pose import Pose
from tagtrack.model.predict import InferFn, poses_from_maps
from tagtrack.model.schema import KeypointSchema
from tagtrack.model.transforms import Letterbox, Preprocessor

# Two people of the two runs are the same person when their common joints are this close on average
# (image pixels). Far above the displacements seen, far below the distance between two walkers.
MATCH_PX = 16.0


@dataclass
class PreprocessAgreement:
    """Totals over frames: people decoded from the single-resize input ('before') and from today's."""

    frames: int = 0
    people_before: int = 0
    people_now: int = 0
    matched: int = 0
    frames_with_other_count: int = 0
    largest_count_change: int = 0
    joints_only_in_one: int = 0  # of matched people, joints found in one run and not the other
    displacements: list[float] = field(default_factory=list)  # image px, joints found in both (matched people)
    input_mean_abs: list[float] = field(default_factory=list)  # per frame, network input, grey levels (0-255)
    input_max_abs: float = 0.0

    def displacement(self, quantile: float) -> float:
        return float(np.quantile(self.displacements, quantile)) if self.displacements else 0.0

    def format(self) -> str:
        share = self.matched / max(self.people_before, 1)
        return "\n".join([
            f"{self.frames} frames: people before {self.people_before}, now {self.people_now}, matched {self.matched} "
            f"({100 * share:.1f} % of before); frames with another count {self.frames_with_other_count} "
            f"(largest change {self.largest_count_change})",
            f"keypoint displacement of matched people, {len(self.displacements)} joints (image px): median "
            f"{self.displacement(0.5):.2f}, 95 % {self.displacement(0.95):.2f}, 99 % {self.displacement(0.99):.2f}, "
            f"max {self.displacement(1.0):.2f}; joints found in one run only {self.joints_only_in_one}",
            f"network input change (grey levels): mean {np.mean(self.input_mean_abs or [0]):.2f}, "
            f"max {self.input_max_abs:.0f}",
        ])


def match_people(before: list[Pose], now: list[Pose], match_px: float = MATCH_PX) -> list[tuple[int, int]]:
    """Pairs (i, j) of the same person: Hungarian match on the mean distance of their common joints."""
    if not before or not now:
        return []
    cost = np.full((len(before), len(now)), 1e9)
    for i, a in enumerate(before):
        for j, b in enumerate(now):
            both = (a.keypoints[:, 2] > 0) & (b.keypoints[:, 2] > 0)
            if both.any():
                cost[i, j] = np.linalg.norm(a.keypoints[both, :2] - b.keypoints[both, :2], axis=1).mean()
    rows, columns = linear_sum_assignment(cost)
    return [(i, j) for i, j in zip(rows, columns) if cost[i, j] <= match_px]


def add_frame(agreement: PreprocessAgreement, before: list[Pose], now: list[Pose]) -> None:
    agreement.frames += 1
    agreement.people_before += len(before)
    agreement.people_now += len(now)
    if len(before) != len(now):
        agreement.frames_with_other_count += 1
        agreement.largest_count_change = max(agreement.largest_count_change, abs(len(before) - len(now)))
    for i, j in match_people(before, now):
        a, b = before[i].keypoints, now[j].keypoints
        found_a, found_b = a[:, 2] > 0, b[:, 2] > 0
        both = found_a & found_b
        agreement.matched += 1
        agreement.joints_only_in_one += int((found_a ^ found_b).sum())
        agreement.displacements += np.linalg.norm(a[both, :2] - b[both, :2], axis=1).tolist()


def compare_preprocessing(
    infer: InferFn, images: list[np.ndarray], input_hw: tuple[int, int], schema: KeypointSchema,
    decode_config: DecodeConfig | None = None, preprocess=None,
) -> PreprocessAgreement:
    """Every image through both preprocessings, one batch of two per image, decoded with the same decoder.

    preprocess: image -> (letterbox, network input), by default today's ``Preprocessor``.
    """
    decode_config = decode_config or DecodeConfig()
    preprocess = preprocess or Preprocessor(input_hw)
    agreement = PreprocessAgreement()
    for image in images:
        letterbox, network_input = preprocess(image)
        before_input = baseline_preprocess(Letterbox.fit(image.shape[:2], input_hw), image)
        difference = 255.0 * np.abs(network_input - before_input)
        agreement.input_mean_abs.append(float(difference.mean()))
        agreement.input_max_abs = max(agreement.input_max_abs, float(difference.max()))
        heatmaps, tags = infer(np.stack([before_input, network_input]))
        before, now = (poses_from_maps(heatmaps[k], tags[k], letterbox, schema, decode_config) for k in (0, 1))
        add_frame(agreement, before, now)
    return agreement


def read_frames(video: str, count: int, every: int) -> list[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(video)
    images: list[np.ndarray] = []
    index = 0
    try:
        while len(images) < count:
            ok, image = capture.read()
            if not ok:
                break
            if index % every == 0:
                images.append(image)
            index += 1
    finally:
        capture.release()
    return images


def main(argv: list[str] | None = None) -> None:
    import torch

    from tagtrack.bench.machine import cpu_description
    from tagtrack.model.checkpoint import load_checkpoint, resolve_weights
    from tagtrack.model.predict import torch_infer_fn
    from tagtrack.model.schema import COCO17

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--every", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    loaded = load_checkpoint(resolve_weights(args.weights))
    images = read_frames(args.video, args.frames, args.every)
    if not images:
        raise SystemExit(f"error: no frames read from {args.video}")
    input_hw = (loaded.config.input_height, loaded.config.input_width)
    print(cpu_description())
    print(f"{args.video}: {images[0].shape[1]}x{images[0].shape[0]} -> {input_hw[1]}x{input_hw[0]}, "
          f"every {args.every}th frame")
    print(compare_preprocessing(torch_infer_fn(loaded.model), images, input_hw, COCO17).format())


if __name__ == "__main__":
    main()
