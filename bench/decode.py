"""Decoder speed: time per frame of ``model.codec.decode`` on synthetic maps with 1..30 people.

The maps are what an ideal network would output for random people (``model.synthetic_maps``: the codec's
``render_heatmaps`` and ``render_tag_maps``), with some joints missing so that refinement has work to do.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass

import numpy as np

from tagtrack.bench.baseline import baseline_decode
from tagtrack.bench.machine import cpu_description
from tagtrack.model.codec import DecodeConfig, decode
from tagtrack.model.pose import same_poses
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.model.synthetic_maps import synthetic_maps, synthetic_people

log = logging.getLogger(__name__)

@dataclass
class DecodeTiming:
    num_people: int
    tag_dim: int
    median_ms: float
    best_ms: float
    median_cpu_ms: float  # process CPU time: unaffected by waiting for a core on a loaded machine
    decoded_people: int
    baseline_cpu_ms: float  # the same for the decoder before issue 17 (bench.baseline), same frame, same run
    same_as_baseline: bool  # both decoders return the same people, to the bit


def _cpu_and_wall_ms(decode_fn, repeats: int) -> tuple[list[float], list[float]]:
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        decode_fn()
        cpu_times.append((time.process_time() - cpu_start) * 1e3)
        times.append((time.perf_counter() - start) * 1e3)
    return times, cpu_times


def time_decode(
    num_people: int,
    tag_dim: int,
    size: int = 128,
    repeats: int = 200,
    config: DecodeConfig | None = None,
    schema: KeypointSchema = COCO17,
    seed: int = 0,
) -> DecodeTiming:
    """Median and best wall time of one ``decode`` call over ``repeats`` runs on one synthetic frame, and the
    median CPU time of the decoder before issue 17 on the same frame, the two interleaved in rounds of 10
    so that a change in the machine's load hits both alike."""
    rng = np.random.default_rng(seed)
    keypoints, tags = synthetic_people(rng, num_people, size, size, tag_dim)
    heatmaps, tag_maps = synthetic_maps(keypoints, tags, size, size, tag_noise=0.1, rng=rng)
    config = config or DecodeConfig()
    poses = decode(heatmaps, tag_maps, schema, config)  # warm-up
    same = same_poses(poses, baseline_decode(heatmaps, tag_maps, schema, config))
    times, cpu_times, baseline_cpu_times = [], [], []
    for start in range(0, repeats, 10):
        rounds = min(10, repeats - start)
        wall, cpu = _cpu_and_wall_ms(lambda: decode(heatmaps, tag_maps, schema, config), rounds)
        times += wall
        cpu_times += cpu
        baseline_cpu_times += _cpu_and_wall_ms(lambda: baseline_decode(heatmaps, tag_maps, schema, config), rounds)[1]
    return DecodeTiming(
        num_people, tag_dim, statistics.median(times), min(times), statistics.median(cpu_times), len(poses),
        statistics.median(baseline_cpu_times), same,
    )


def run_decode_benchmark(
    people_counts: tuple[int, ...] = (1, 5, 10, 20, 30),
    tag_dims: tuple[int, ...] = (1, 8),
    size: int = 128,
    repeats: int = 200,
) -> list[DecodeTiming]:
    return [time_decode(people, tag_dim, size, repeats) for tag_dim in tag_dims for people in people_counts]


def format_table(timings: list[DecodeTiming], size: int) -> str:
    lines = [
        cpu_description(),
        f"decode time per frame, {size}x{size} maps, 17 joints (wall clock median / best, CPU time median; "
        "'before': CPU time median of the decoder before issue 17 on the same frames, same run)",
        f"{'L':>3} {'people':>6} {'found':>6} {'median ms':>10} {'best ms':>8} {'cpu ms':>7} {'before':>7} "
        f"{'speed-up':>8} {'same output':>11}",
    ]
    for timing in timings:
        lines.append(
            f"{timing.tag_dim:>3} {timing.num_people:>6} {timing.decoded_people:>6} "
            f"{timing.median_ms:>10.2f} {timing.best_ms:>8.2f} {timing.median_cpu_ms:>7.2f} "
            f"{timing.baseline_cpu_ms:>7.2f} {timing.baseline_cpu_ms / max(timing.median_cpu_ms, 1e-9):>7.2f}x "
            f"{'yes' if timing.same_as_baseline else 'NO':>11}"
        )
    return "\n".join(lines)


def time_decode_on_video(video: str, frames: int = 100, every: int = 8, weights: str | None = None) -> str:
    """CPU ms median per frame of ``poses_from_maps`` (decode + mapping to image pixels) and of the decoder before
    issue 17, on the bundled default model's maps of every ``every``-th frame, interleaved frame by frame."""
    import torch

    from tagtrack.bench.baseline import baseline_poses_from_maps
    from tagtrack.bench.preprocess import read_frames
    from tagtrack.model.checkpoint import load_checkpoint, resolve_weights
    from tagtrack.model.predict import poses_from_maps, torch_infer_fn
    from tagtrack.model.transforms import Preprocessor

    torch.set_num_threads(1)
    loaded = load_checkpoint(resolve_weights(weights))
    infer = torch_infer_fn(loaded.model)
    preprocess = Preprocessor((loaded.config.input_height, loaded.config.input_width))
    maps = []
    for image in read_frames(video, frames, every):
        letterbox, network_input = preprocess(image)
        heatmaps, tags = infer(network_input[None])
        maps.append((heatmaps[0], tags[0], letterbox))
    config = DecodeConfig()
    ours, before, people, same = [], [], 0, True
    for _ in range(3):
        for heatmaps, tags, letterbox in maps:
            started = time.process_time()
            poses = poses_from_maps(heatmaps, tags, letterbox, COCO17, config)
            ours.append(time.process_time() - started)
            started = time.process_time()
            old = baseline_poses_from_maps(heatmaps, tags, letterbox, COCO17, config)
            before.append(time.process_time() - started)
            same &= same_poses(poses, old)
            people += len(poses)
    now_ms, before_ms = 1e3 * statistics.median(ours), 1e3 * statistics.median(before)
    return "\n".join([
        cpu_description(),
        f"{video}: {len(maps)} frames (every {every}th), {people / (3 * max(len(maps), 1)):.1f} people per frame decoded",
        f"poses_from_maps CPU ms median: now {now_ms:.2f}, before issue 17 {before_ms:.2f} "
        f"(x{before_ms / max(now_ms, 1e-9):.2f}); same output to the bit: {'yes' if same else 'NO'}",
    ])


if __name__ == "__main__":
    import sys

    print(time_decode_on_video(sys.argv[1]))
