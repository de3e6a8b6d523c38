"""ONNX Runtime int8 against fp32 for one checkpoint: speed, and whether int8 still finds the same people.

    python -m tagtrack.bench.quantize --weights W --calibrate VIDEO[#START:STOP] ... --test VIDEO[#START:STOP] ...
        [--input-size H W] [--frames N] [--calibration-frames N] [--threads N] [--fp32-heads] [--keep-fp32 NODE ...]

1. The checkpoint is exported to ONNX fp32 (`model.export.export_onnx`) and quantised with ONNX Runtime's static
   quantisation (`quantize_static`: QDQ, int8 weights per channel, uint8 activations, MinMax ranges) on
   calibration frames read with OpenCV from the `--calibrate` videos and preprocessed as the app does
   (`model.transforms.Preprocessor`: letterbox, RGB [0, 1]). `--fp32-heads` keeps the output heads in fp32
   (every node that feeds one output only), `--keep-fp32` any nodes by name.
2. Both files run in the app's ONNX Runtime engine (`realtime.engines.OnnxRuntimeEngine`, its session options)
   on held-out frames of the `--test` videos, the two models alternating frame by frame; median ms per frame.
3. Both models' maps are decoded as `tagtrack run` decodes them (`model.predict.poses_from_maps` with the
   model's stored settings, `model.settings.resolve_settings`). People found: those scoring at least the
   tracker's `new_track_score` (the people that start tracks). Each of fp32's people is matched one to one,
   best pairs first, with one of int8's at OKS >= 0.5 (`model.oks`, fp32's pose as the reference, its box area
   as the scale). Verdict: int8 keeps accuracy when it finds at least 99 % of fp32's people and its count of
   people is within 1 % of fp32's.

A video range is `PATH#START:STOP` (frames START..STOP-1, either may be left out), so that calibration and
test frames can come from different parts of one video.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tagtrack.model.errors import UserFacingError
from tagtrack.model.pose import Pose
from tagtrack.model.schema import KeypointSchema
from tagtrack.model.transforms import Letterbox

log = logging.getLogger(__name__)

MATCH_OKS = 0.5  # an fp32 person counts as found by int8 when one of int8's people matches it at this OKS
WITHIN = 0.01  # "people found within 1 %"


@dataclass(frozen=True)
class VideoRange:
    """Frames start..stop-1 of a video (stop None: to the end)."""

    path: Path
    start: int = 0
    stop: int | None = None

    @classmethod
    def parse(cls, spec: str) -> VideoRange:
        path, hash_sign, frames = spec.rpartition("#")
        if not hash_sign or ":" not in frames:
            return cls(Path(spec))
        first, _, last = frames.partition(":")
        try:
            start = int(first) if first else 0
            stop = int(last) if last else None
        except ValueError:
            raise UserFacingError(f"video range {spec!r}: expected PATH#START:STOP with whole frame numbers") from None
        if start < 0 or (stop is not None and stop <= start):
            raise UserFacingError(f"video range {spec!r}: expected PATH#START:STOP with 0 <= START < STOP")
        return cls(Path(path), start, stop)

    def __str__(self) -> str:
        if self.start == 0 and self.stop is None:
            return str(self.path)
        return f"{self.path}#{self.start}:{'' if self.stop is None else self.stop}"


@dataclass
class QuantizeConfig:
    weights: str
    calibrate: list[VideoRange]
    test: list[VideoRange]
    out_dir: Path
    input_hw: tuple[int, int] | None = None  # None: the checkpoint's
    frames: int = 60  # test frames, spread over the --test ranges
    calibration_frames: int = 48  # spread over the --calibrate ranges
    repeats: int = 3  # timing rounds over the test frames
    threads: int | None = None  # ONNX Runtime intra-op threads (None: the engine's default, every usable core)
    fp32_heads: bool = False
    keep_fp32: tuple[str, ...] = ()  # node names kept in fp32
    reduce_range: bool | None = None  # 7-bit weights; None: when the CPU has no VNNI (see quantize_int8)
    calibration_method: str = "MinMax"  # onnxruntime.quantization.CalibrationMethod: MinMax, Percentile, Entropy
    progress: bool = True


@dataclass
class Matching:
    """fp32's people (the reference) against int8's on the same frames."""

    fp32_people: int = 0
    int8_people: int = 0
    found: int = 0  # fp32 people matched by an int8 person at OKS >= MATCH_OKS
    oks: list[float] = field(default_factory=list)  # of the matched pairs

    @property
    def found_fraction(self) -> float:
        return self.found / self.fp32_people if self.fp32_people else float("nan")

    @property
    def mean_oks(self) -> float:
        return float(np.mean(self.oks)) if self.oks else float("nan")

    @property
    def keeps_accuracy(self) -> bool:
        return (self.fp32_people > 0 and self.found >= (1 - WITHIN) * self.fp32_people
                and abs(self.int8_people - self.fp32_people) <= WITHIN * self.fp32_people)


@dataclass
class Comparison:
    """fp32 against int8 on the test frames."""

    fp32_ms: float  # median per frame
    int8_ms: float
    max_heatmap_diff: float
    matching: Matching
    person_score: float  # the tracker's new_track_score: people at least this confident count

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.int8_ms


@dataclass
class QuantizeResult:
    machine: str
    weights: str
    input_hw: tuple[int, int]
    threads: int
    fp32_path: Path
    int8_path: Path
    calibration_frames: int
    test_frames: int
    kept_fp32: int  # nodes left unquantised
    reduce_range: bool
    calibration_method: str
    comparison: Comparison

    def format(self) -> str:
        c = self.comparison
        m = c.matching
        h, w = self.input_hw
        return "\n".join([
            self.machine,
            f"{self.weights} at {h}x{w}, ONNX Runtime CPU, {self.threads} threads; {self.calibration_frames} "
            f"calibration frames ({self.calibration_method}), {self.test_frames} test frames; "
            f"{self.kept_fp32} nodes kept in fp32; {'7' if self.reduce_range else '8'}-bit weights",
            f"fp32 {c.fp32_ms:.1f} ms, int8 {c.int8_ms:.1f} ms (median per frame): int8 x{c.speedup:.2f}",
            f"max heatmap difference {c.max_heatmap_diff:.3f}",
            f"people (score >= {c.person_score:g}): fp32 {m.fp32_people}, int8 {m.int8_people}; "
            f"fp32's found by int8 (OKS >= {MATCH_OKS}): {m.found}/{m.fp32_people} ({100 * m.found_fraction:.1f} %), "
            f"mean OKS {m.mean_oks:.3f}",
            f"int8 keeps accuracy: {'yes' if m.keeps_accuracy else 'no'} (people found within {100 * WITHIN:g} %)",
            f"files: {self.fp32_path}, {self.int8_path}",
        ])


# ---------------------------------------------------------------- frames


@dataclass
class TestFrame:
    letterbox: Letterbox
    network_input: np.ndarray  # float32 [1,3,H,W]


def read_frames(ranges: list[VideoRange], count: int, input_hw: tuple[int, int], what: str,
                progress: bool = True) -> list[TestFrame]:
    """`count` frames spread evenly over the ranges (an equal share each, evenly spaced within each range),
    preprocessed as the app preprocesses them. UserFacingError for a video that cannot be read."""
    import cv2

    from tagtrack.model.transforms import Preprocessor

    preprocess = Preprocessor(input_hw)
    frames: list[TestFrame] = []
    share = -(-count // len(ranges))
    with tqdm(total=share * len(ranges), desc=what, unit="frame", disable=not progress) as bar:
        for video in ranges:
            if not video.path.is_file():
                raise UserFacingError(f"cannot read video {video.path}: no such file")
            capture = cv2.VideoCapture(str(video.path))
            try:
                if not capture.isOpened():
                    raise UserFacingError(f"cannot read video {video.path}")
                stop = video.stop or int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
                if stop <= video.start:
                    raise UserFacingError(f"video {video}: no frames in that range")
                wanted = set(np.linspace(video.start, stop - 1, min(share, stop - video.start)).round().astype(int))
                index, taken = 0, 0
                while index < stop and taken < len(wanted):
                    ok, image = capture.read()
                    if not ok:
                        break
                    if index in wanted:
                        letterbox, network_input = preprocess(image)
                        frames.append(TestFrame(letterbox, network_input[None].copy()))
                        taken += 1
                        bar.update(1)
                    index += 1
            finally:
                capture.release()
            if taken == 0:
                raise UserFacingError(f"cannot read video {video}: no frames read")
            log.info("%s: %d frames of %s", what, taken, video)
    return frames


# ---------------------------------------------------------------- the two models


def head_nodes(model) -> list[str]:
    """Names of the nodes that feed one graph output only: the output heads, after the features they share."""
    producer = {output: node for node in model.graph.node for output in node.output}
    feeds: dict[str, set[str]] = {}  # node name -> outputs it reaches
    for graph_output in model.graph.output:
        stack = [graph_output.name]
        seen: set[str] = set()
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            feeds.setdefault(node.name, set()).add(graph_output.name)
            stack.extend(node.input)
    return [node.name for node in model.graph.node if len(feeds.get(node.name, ())) == 1]


class _Calibration:
    """Calibration frames as ONNX Runtime's CalibrationDataReader expects them."""

    def __init__(self, frames: list[TestFrame]) -> None:
        self._inputs = iter(frames)

    def get_next(self) -> dict[str, np.ndarray] | None:
        from tagtrack.model.export import INPUT_NAME

        frame = next(self._inputs, None)
        return None if frame is None else {INPUT_NAME: frame.network_input}


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: list[TestFrame], keep_fp32: tuple[str, ...] = (),
                  fp32_heads: bool = False, keep_all: bool = False, reduce_range: bool = False,
                  calibration_method: str = "MinMax") -> int:
    """Write the int8 QDQ model of `fp32_path` to `int8_path`; returns how many nodes stay fp32 (`keep_fp32` by
    name, the heads with `fp32_heads`, every node with `keep_all`). Unknown node names are a UserFacingError.

    reduce_range: weights in 7 bits. x86 CPUs without VNNI multiply uint8 activations by int8 weights with an
    instruction (vpmaddubsw) whose 16-bit sums saturate; ONNX Runtime advises 7-bit weights there. Measured on
    such a CPU (AMD EPYC, AVX2) with the `pretrained` model: 8-bit weights found none of fp32's people."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = int8_path.with_name(int8_path.stem + ".prepared.onnx")
    quant_pre_process(str(fp32_path), str(prepared))  # shape inference and graph clean-up, as ORT advises
    try:
        model = onnx.load(str(prepared))
        names = [node.name for node in model.graph.node]
        unknown = sorted(set(keep_fp32) - set(names))
        if unknown:
            raise UserFacingError(f"--keep-fp32: no node named {', '.join(unknown)} in {fp32_path}")
        excluded = set(names) if keep_all else set(keep_fp32) | (set(head_nodes(model)) if fp32_heads else set())

        class Reader(_Calibration, CalibrationDataReader):
            pass

        # Not "CalibMaxIntermediateOutputs" (bounded memory): in ORT 1.32 the MinMax calibrator clears what it has
        # collected every that many frames without merging the ranges, so only the last few frames would count.
        # Every frame's activations are held at once instead (about 0.1 GB a frame at 256x384).
        quantize_static(str(prepared), str(int8_path), Reader(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=reduce_range, calibrate_method=CalibrationMethod[calibration_method],
                        nodes_to_exclude=sorted(excluded))
    finally:
        prepared.unlink(missing_ok=True)
    log.info("int8 model %s (%d of %d nodes kept fp32)", int8_path, len(excluded), len(names))
    return len(excluded)


# ---------------------------------------------------------------- comparison


def match_people(reference: list[Pose], other: list[Pose], sigmas: np.ndarray) -> list[float]:
    """OKS of each one-to-one pair at OKS >= MATCH_OKS, best pairs first: reference joints found (score > 0)
    counted, the reference's box area as the scale."""
    from tagtrack.model.oks import object_keypoint_similarity

    if not reference or not other:
        return []
    ref = np.stack([pose.keypoints for pose in reference]).astype(np.float64)[:, None]  # [R,1,K,3]
    oth = np.stack([pose.keypoints for pose in other]).astype(np.float64)[None]  # [1,O,K,3]
    boxes = np.stack([pose.box for pose in reference]).astype(np.float64)
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1.0)[:, None]
    counted = np.broadcast_to(ref[..., 2] > 0, (len(reference), len(other), ref.shape[2]))
    oks = object_keypoint_similarity(ref[..., :2], oth[..., :2], counted, counted & (oth[..., 2] > 0), area, sigmas)
    pairs: list[float] = []
    while oks.size and oks.max() >= MATCH_OKS:
        row, col = np.unravel_index(int(np.argmax(oks)), oks.shape)
        pairs.append(float(oks[row, col]))
        oks[row, :] = -1.0
        oks[:, col] = -1.0
    return pairs


def compare_models(fp32, int8, frames: list[TestFrame], schema: KeypointSchema, stored_settings: dict,
                   repeats: int = 3, progress: bool = True) -> Comparison:
    """Two engines (fp32, int8) on `frames`: timed alternately after a warm-up (so a change in the machine's load
    hits both alike), then both decoded with the model's stored settings and their people matched."""
    from tagtrack.model.predict import poses_from_maps
    from tagtrack.model.settings import resolve_settings

    settings = resolve_settings(stored_settings)
    person_score = settings.tracker.new_track_score
    engines = {"fp32": fp32, "int8": int8}
    for engine in engines.values():
        engine.infer(frames[0].network_input)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in tqdm(range(repeats), desc="timing rounds", disable=not progress):
        for frame in frames:
            for name, engine in engines.items():
                started = time.perf_counter()
                engine.infer(frame.network_input)
                times[name].append(1e3 * (time.perf_counter() - started))
    matching, max_diff, sigmas = Matching(), 0.0, schema.sigmas_array()
    for frame in tqdm(frames, desc="people", unit="frame", disable=not progress):
        people = {}
        heatmaps = {}
        for name, engine in engines.items():
            maps, tags = engine.infer(frame.network_input)
            heatmaps[name] = maps[0]
            people[name] = [pose for pose in poses_from_maps(maps[0], tags[0], frame.letterbox, schema, settings.decode)
                            if pose.score >= person_score]
        max_diff = max(max_diff, float(np.abs(heatmaps["fp32"] - heatmaps["int8"]).max()))
        pairs = match_people(people["fp32"], people["int8"], sigmas)
        matching.fp32_people += len(people["fp32"])
        matching.int8_people += len(people["int8"])
        matching.found += len(pairs)
        matching.oks.extend(pairs)
    return Comparison(statistics.median(times["fp32"]), statistics.median(times["int8"]), max_diff, matching,
                      person_score)


def run_benchmark(config: QuantizeConfig) -> QuantizeResult:
    """Export, quantise, time and compare (module docstring). UserFacingError for bad input."""
    from tagtrack.bench.machine import cpu_description
    from tagtrack.model.checkpoint import load_checkpoint, resolve_weights
    from tagtrack.model.export import export_onnx
    from tagtrack.model.config import check_input_size
    from tagtrack.realtime.engines import OnnxRuntimeEngine

    machine = cpu_description()
    weights = resolve_weights(config.weights)
    if not weights.is_file():
        raise UserFacingError(f"weights file not found: {weights}")
    loaded = load_checkpoint(weights)
    input_hw = check_input_size(config.input_hw or (loaded.config.input_height, loaded.config.input_width),
                                "--input-size", loaded.config.input_multiple)
    # Frames first: a video that cannot be read fails before the slow export.
    calibration = read_frames(config.calibrate, config.calibration_frames, input_hw, "calibration frames",
                              config.progress)
    test = read_frames(config.test, config.frames, input_hw, "test frames", config.progress)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{weights.stem}-{input_hw[0]}x{input_hw[1]}"
    fp32_path = export_onnx(loaded.model, config.out_dir / f"{stem}-fp32.onnx", *input_hw)
    int8_path = config.out_dir / f"{stem}-int8{'-fp32heads' if config.fp32_heads else ''}.onnx"
    reduce_range = config.reduce_range if config.reduce_range is not None else "vnni" not in machine
    kept = quantize_int8(fp32_path, int8_path, calibration, config.keep_fp32, config.fp32_heads,
                         reduce_range=reduce_range, calibration_method=config.calibration_method)
    facts = {"schema": loaded.schema, "stored_settings": loaded.settings, "weights": weights}
    fp32 = OnnxRuntimeEngine(fp32_path, "cpu", config.threads, **facts)
    int8 = OnnxRuntimeEngine(int8_path, "cpu", config.threads, **facts)
    comparison = compare_models(
        fp32, int8, test, loaded.schema, loaded.settings, config.repeats, config.progress)
    threads = fp32.session.get_session_options().intra_op_num_threads
    return QuantizeResult(machine, str(weights), input_hw, threads, fp32_path, int8_path,
                          len(calibration), len(test), kept, reduce_range, config.calibration_method, comparison)


def parse_args(argv: list[str] | None = None) -> QuantizeConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="checkpoint file or bundled model name")
    parser.add_argument("--calibrate", nargs="+", required=True, metavar="VIDEO[#START:STOP]",
                        help="videos (frame ranges) the int8 ranges are calibrated on")
    parser.add_argument("--test", nargs="+", required=True, metavar="VIDEO[#START:STOP]",
                        help="held-out videos (frame ranges) timed and compared on")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="default: the checkpoint's")
    parser.add_argument("--frames", type=int, default=60, help="test frames (default 60)")
    parser.add_argument("--calibration-frames", type=int, default=48, help="calibration frames (default 48)")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds over the test frames (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: usable cores)")
    parser.add_argument("--fp32-heads", action="store_true", help="keep the output heads in fp32")
    parser.add_argument("--keep-fp32", nargs="+", default=(), metavar="NODE", help="node names kept in fp32")
    parser.add_argument("--reduce-range", choices=("auto", "yes", "no"), default="auto",
                        help="7-bit weights (auto: yes where the CPU lacks VNNI and 8-bit products saturate)")
    parser.add_argument("--calibration-method", choices=("MinMax", "Percentile", "Entropy"), default="MinMax")
    parser.add_argument("--out-dir", type=Path, default=Path("quantized"), help="where the ONNX files go")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if min(args.frames, args.calibration_frames, args.repeats) < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--frames, --calibration-frames, --repeats and --threads must be at least 1")
    return QuantizeConfig(args.weights, [VideoRange.parse(s) for s in args.calibrate],
                          [VideoRange.parse(s) for s in args.test], args.out_dir,
                          tuple(args.input_size) if args.input_size else None, args.frames, args.calibration_frames,
                          args.repeats, args.threads, args.fp32_heads, tuple(args.keep_fp32),
                          {"auto": None, "yes": True, "no": False}[args.reduce_range], args.calibration_method,
                          not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(run_benchmark(parse_args(argv)).format())
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
