"""`tagtrack bench teacher`: our model next to a MoveNet-MultiPose-format model on the same frames.

The alternative a user would pick for real-time multi-person pose on a CPU is MoveNet MultiPose, so
the question is "as fast, finding as many people?". Both models see the same frames in one run on
one machine, one after the other:

- speed: each model's own image -> people call per frame (ours: letterbox, network, decode; the
  teacher: resize, network, output parsing), plus our network alone (model-only). Totals over the
  run swing with whatever else the machine does; the two calls of one frame run back to back, so
  the median over frames of the per-frame ratio (teacher time / our time) is the robust number;
- people: per frame, people scoring at least `person_score` for each model, and how many of the
  teacher's people one of ours matches at OKS >= 0.5 (one-to-one, best first).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from tagtrack.bench.machine import cpu_description
from tagtrack.model.pose import Pose
from tagtrack.model.codec import DecodeConfig
from tagtrack.model.predict import PredictConfig, predict_image
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.training.teacher import MoveNetTeacher, TeacherPerson, keypoint_similarity

MATCH_OKS = 0.5


@dataclass
class TeacherComparison:
    frames: int
    ours_seconds: float  # image -> people, summed over frames
    ours_network_seconds: float  # the network call alone
    teacher_seconds: float
    ours_people: int
    teacher_people: int
    matched: int  # teacher people that one of ours matches at OKS >= MATCH_OKS
    long_side: int
    ours_input_hw: tuple[int, int]
    frame_speed_ratios: list[float] = field(default_factory=list)  # per frame: teacher seconds / our seconds
    machine: str = ""  # bench.machine.cpu_description() at the start of the run

    @property
    def median_speed_ratio(self) -> float:
        """Median over frames of how many times faster ours was than the teacher on that frame."""
        return statistics.median(self.frame_speed_ratios) if self.frame_speed_ratios else float("nan")

    def format(self) -> str:
        def per_frame(count: int) -> float:
            return count / max(self.frames, 1)

        ours_fps = self.frames / max(self.ours_seconds, 1e-9)
        teacher_fps = self.frames / max(self.teacher_seconds, 1e-9)
        return "\n".join([
            self.machine,
            f"{self.frames} frames; ours at {self.ours_input_hw[0]}x{self.ours_input_hw[1]}, "
            f"teacher at long side {self.long_side}",
            f"ours     {ours_fps:6.1f} FPS image->people ({self.frames / max(self.ours_network_seconds, 1e-9):.1f} "
            f"model only), {per_frame(self.ours_people):.2f} people/frame",
            f"teacher  {teacher_fps:6.1f} FPS image->people, {per_frame(self.teacher_people):.2f} people/frame",
            f"ratio ours/teacher: speed {ours_fps / max(teacher_fps, 1e-9):.2f} over the run, "
            f"{self.median_speed_ratio:.2f} median of per-frame ratios, "
            f"people {self.ours_people / max(self.teacher_people, 1):.2f}",
            f"teacher's people that ours also finds (OKS >= {MATCH_OKS}): {self.matched}/{self.teacher_people}",
        ])


def as_teacher_person(pose: Pose) -> TeacherPerson:
    return TeacherPerson(keypoints=pose.keypoints, score=pose.score, box=pose.box)


def count_matches(teacher_people: list[TeacherPerson], ours: list[Pose], sigmas: np.ndarray) -> int:
    """Teacher people matched one-to-one by our people at OKS >= MATCH_OKS, best pairs first."""
    candidates = [as_teacher_person(pose) for pose in ours]
    pairs = sorted(
        ((keypoint_similarity(t, o, sigmas), ti, oi) for ti, t in enumerate(teacher_people)
         for oi, o in enumerate(candidates)), reverse=True)
    used_teacher, used_ours = set(), set()
    for similarity, ti, oi in pairs:
        if similarity < MATCH_OKS:
            break
        if ti not in used_teacher and oi not in used_ours:
            used_teacher.add(ti)
            used_ours.add(oi)
    return len(used_teacher)


def compare_with_teacher(engine, teacher: MoveNetTeacher, source, max_frames: int | None = None, every: int = 1,
                         long_side: int = 384, person_score: float = 0.3,
                         schema: KeypointSchema = COCO17, progress: bool = True,
                         decode: DecodeConfig | None = None) -> TeacherComparison:
    """Run both models on every `every`-th frame of `source` (up to max_frames of them). schema and decode: our
    model's keypoints and decoder settings (`tagtrack bench teacher` passes the engine's and its effective
    settings, as `tagtrack run` decodes; None: the built-in decoder settings)."""
    network_seconds = 0.0
    predict_config = PredictConfig(decode=decode) if decode is not None else PredictConfig()

    def timed_infer(batch: np.ndarray):
        nonlocal network_seconds
        started = time.perf_counter()
        maps = engine.infer(batch)
        network_seconds += time.perf_counter() - started
        return maps

    sigmas = schema.sigmas_array()
    result = TeacherComparison(0, 0.0, 0.0, 0.0, 0, 0, 0, long_side, tuple(engine.input_hw),
                               machine=cpu_description())
    # Warm-up outside the timings: the first calls pick kernels and allocate.
    first = source.read()
    if first is None:
        return result
    for _ in range(3):
        predict_image(engine.infer, first.image, tuple(engine.input_hw), schema, predict_config)
        teacher.run(first.image[:, :, ::-1].copy(), long_side)
    bar = tqdm(total=max_frames, desc="compare", unit="frame", disable=not progress)
    frame = first
    while frame is not None and (max_frames is None or result.frames < max_frames):
        if frame.index % every == 0:
            started = time.perf_counter()
            ours = [p for p in predict_image(timed_infer, frame.image, tuple(engine.input_hw), schema, predict_config)
                    if p.score >= person_score]
            ours_seconds = time.perf_counter() - started
            started = time.perf_counter()
            rgb = np.ascontiguousarray(frame.image[:, :, ::-1])
            theirs = [p for p in teacher.run(rgb, long_side) if p.score >= person_score]
            teacher_seconds = time.perf_counter() - started
            result.ours_seconds += ours_seconds
            result.teacher_seconds += teacher_seconds
            result.frame_speed_ratios.append(teacher_seconds / max(ours_seconds, 1e-9))
            result.frames += 1
            result.ours_people += len(ours)
            result.teacher_people += len(theirs)
            result.matched += count_matches(theirs, ours, sigmas)
            bar.update(1)
        frame = source.read()
    bar.close()
    result.ours_network_seconds = network_seconds
    return result
