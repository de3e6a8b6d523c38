from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tagtrack.model.codec import DecodeConfig
from tagtrack.model.config import ModelConfig
from tagtrack.model.errors import UserFacingError
from tagtrack.model.hourglass import HourglassNet
from tagtrack.model.predict import PredictConfig, predict_image, torch_infer_fn
from tagtrack.model.schema import COCO17
from tagtrack.model.transforms import Letterbox
from tagtrack.realtime.engines import TorchEngine
from tagtrack.realtime.pipeline import FrameAugment, FrameResult, Pipeline, PipelineSettings, RunSummary
from tagtrack.realtime.sources import Frame, open_source
from tests.test_sources import write_video

TINY = ModelConfig(num_stacks=1, width=16, tag_dim=1, input_height=64, input_width=64)


class ScriptedEngine:
    """TEST-ONLY engine: maps with one clear person (a peak per joint, equal tags), optionally slow."""

    schema = COCO17  # what an engine states about its model (realtime/engines.py: ModelFacts)
    stored_settings: dict = {}
    weights = None

    def __init__(self, input_hw=(64, 64), delay: float = 0.0, fail_at: int | None = None) -> None:
        self.input_hw = input_hw
        self.delay = delay
        self.fail_at = fail_at
        self.calls = 0
        self.batch_shapes: list[tuple[int, ...]] = []
        height, width = input_hw[0] // 4, input_hw[1] // 4
        self.heatmaps = np.zeros((17, height, width), np.float32)
        ys, xs = np.mgrid[0:height, 0:width]
        for k in range(17):
            cx, cy = 3 + (k % 5) * 2, 2 + (k // 5) * 3
            self.heatmaps[k] = 0.9 * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 2.0)
        self.tags = np.zeros((17, 1, height, width), np.float32)

    def infer(self, batch):
        self.batch_shapes.append(batch.shape)
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("engine exploded")
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        count = batch.shape[0]
        return np.repeat(self.heatmaps[None], count, 0), np.repeat(self.tags[None], count, 0)


class RecordingSink:
    def __init__(self, on_write=None) -> None:
        self.results: list[FrameResult] = []
        self.closed = False
        self.on_write = on_write

    def write(self, result: FrameResult) -> None:
        assert not self.closed
        self.results.append(result)
        if self.on_write is not None:
            self.on_write(result)

    def close(self) -> None:
        self.closed = True


class FakeLiveSource:
    """A camera: frames come at its own pace (every `interval` s) whether or not anyone keeps up."""

    is_live = True
    fps = None

    def __init__(self, frames: int, interval: float = 0.002) -> None:
        self.frames = frames
        self.interval = interval
        self.produced = 0
        self.closed = False

    def read(self):
        if self.produced >= self.frames:
            return None
        time.sleep(self.interval)
        index = self.produced
        self.produced += 1
        return Frame(np.full((48, 64, 3), index % 256, np.uint8), index, index * self.interval, "camera:fake")

    def close(self):
        self.closed = True


def settings(**decode) -> PipelineSettings:
    return PipelineSettings(decode=DecodeConfig(**decode))


@pytest.fixture(scope="module")
def tiny_engine():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return TorchEngine(HourglassNet(TINY), "cpu", input_hw=(64, 64))


def test_file_frames_all_processed_in_order_with_real_network(tmp_path, tiny_engine):
    video = write_video(tmp_path / "clip.avi", 12, size_hw=(48, 80), fps=12.0)
    sink = RecordingSink()
    summary = Pipeline(open_source(str(video)), tiny_engine, COCO17, settings(), None, [sink]).run()
    assert [r.frame.index for r in sink.results] == list(range(12))
    assert sink.closed
    assert isinstance(summary, RunSummary)
    assert summary.frames == 12 and summary.dropped == 0 and not summary.interrupted
    assert summary.people == sum(len(r.tracked) for r in sink.results)
    assert set(sink.results[0].timings) >= {"capture", "preprocess", "infer", "decode", "track", "sinks", "latency"}
    assert all(value >= 0 for value in sink.results[0].timings.values())
    assert summary.stage_seconds["infer"] > 0 and summary.fps > 0


def test_test_time_augment_gives_each_frame_what_predict_gives_its_image(tmp_path, tiny_engine):
    # run --flip --scales 1 1.5 on a video: every frame's people are predict's on that frame, decoded on the
    # finest scale's maps (input 64 x 1.5 rounded to a multiple of 64: 128x128) with that grid's letterbox.
    video = write_video(tmp_path / "clip.avi", 4, size_hw=(48, 80), fps=12.0)
    infer = torch_infer_fn(tiny_engine.model)
    decode = DecodeConfig(detection_threshold=0.0)
    sink = RecordingSink()
    Pipeline(open_source(str(video)), tiny_engine, COCO17, PipelineSettings(decode=decode), None, [sink],
             augment=FrameAugment(infer, flip=True, scales=(1.0, 1.5))).run()
    config = PredictConfig(decode=decode, flip=True, scales=(1.0, 1.5))
    assert len(sink.results) == 4
    for result in sink.results:
        expected = predict_image(infer, result.frame.image, (64, 64), COCO17, config)
        assert expected and len(result.tracked) == len(expected)
        for person, pose in zip(result.tracked, expected):
            np.testing.assert_array_equal(person.pose.keypoints, pose.keypoints)
            np.testing.assert_array_equal(person.pose.tag, pose.tag)
            assert person.pose.tag.shape == (2 * 2 * TINY.tag_dim,)  # plain + mirror, two scales
        assert result.letterbox == Letterbox.fit((48, 80), (128, 128)).for_maps((32, 32))


def test_decoded_people_are_in_image_pixels_and_untracked_without_tracker(tmp_path):
    video = write_video(tmp_path / "clip.avi", 3, size_hw=(64, 64))
    sink = RecordingSink()
    Pipeline(open_source(str(video)), ScriptedEngine(), COCO17, settings(), None, [sink]).run()
    for result in sink.results:
        assert len(result.tracked) == 1
        person = result.tracked[0]
        assert person.track_id is None
        # Joint k was put at map (3 + 2*(k%5), 2 + 3*(k//5)); the image is the input size: x4 (+1.5 centre shift).
        assert person.pose.keypoints[0, :2] == pytest.approx([3 * 4 + 1.5, 2 * 4 + 1.5], abs=1.0)


def test_tracker_gives_stable_ids(tmp_path):
    from tagtrack.tracker import PoseTracker, TrackerConfig

    video = write_video(tmp_path / "clip.avi", 6, size_hw=(64, 64))
    sink = RecordingSink()
    summary = Pipeline(open_source(str(video)), ScriptedEngine(), COCO17, settings(),
                       PoseTracker(TrackerConfig()), [sink]).run()
    ids = [[t.track_id for t in r.tracked] for r in sink.results]
    assert len(ids) == 6
    # The tracker reports a track once confirmed (confirm_hits frames); from then on: one stable id.
    confirmed = ids[TrackerConfig().confirm_hits - 1:]
    assert all(len(frame_ids) == 1 and isinstance(frame_ids[0], int) for frame_ids in confirmed)
    assert len({frame_ids[0] for frame_ids in confirmed}) == 1
    assert summary.tracks == 1 and summary.people == sum(len(frame_ids) for frame_ids in ids)


def test_slow_engine_on_file_applies_back_pressure_without_drops(tmp_path):
    video = write_video(tmp_path / "clip.avi", 10)
    sink = RecordingSink()
    summary = Pipeline(open_source(str(video)), ScriptedEngine(delay=0.02), COCO17, settings(), None, [sink],
                       queue_size=2).run()
    assert [r.frame.index for r in sink.results] == list(range(10))
    assert summary.dropped == 0


def test_live_source_keeps_freshest_frame_and_counts_drops():
    source = FakeLiveSource(frames=60, interval=0.002)
    sink = RecordingSink()
    summary = Pipeline(source, ScriptedEngine(delay=0.03), COCO17, settings(), None, [sink]).run()
    indices = [r.frame.index for r in sink.results]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert summary.dropped > 0
    # Every produced frame was either processed or counted as dropped.
    assert summary.frames + summary.dropped == source.produced == 60
    # The newest frame is never the one dropped: the last frame captured is the last one processed.
    assert indices[-1] == 59 and sink.results[-1].dropped == summary.dropped
    assert source.closed and sink.closed


def test_stop_mid_run_closes_sinks_and_reports_interrupted(tmp_path):
    video = write_video(tmp_path / "clip.avi", 40)
    pipeline_box: list[Pipeline] = []
    sink = RecordingSink(on_write=lambda result: pipeline_box[0].stop() if result.frame.index == 4 else None)
    pipeline = Pipeline(open_source(str(video)), ScriptedEngine(delay=0.005), COCO17, settings(), None, [sink])
    pipeline_box.append(pipeline)
    summary = pipeline.run()
    assert summary.interrupted and summary.finished
    assert sink.closed
    assert 5 <= summary.frames < 40
    assert summary.frames == len(sink.results)
    assert [r.frame.index for r in sink.results] == list(range(summary.frames))


def test_engine_error_stops_pipeline_and_surfaces_in_join(tmp_path):
    video = write_video(tmp_path / "clip.avi", 10)
    sink = RecordingSink()
    pipeline = Pipeline(open_source(str(video)), ScriptedEngine(fail_at=3), COCO17, settings(), None, [sink])
    with pytest.raises(RuntimeError, match="engine exploded"):
        pipeline.run()
    assert sink.closed and len(sink.results) == 3
    assert not pipeline.running


def test_source_error_surfaces_as_user_facing_error(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "b.png").write_bytes(b"broken")
    sink = RecordingSink()
    with pytest.raises(UserFacingError, match="b.png"):
        Pipeline(open_source(str(tmp_path), strict=True), ScriptedEngine(), COCO17, settings(), None, [sink]).run()
    assert sink.closed and len(sink.results) == 1


def test_sink_error_closes_the_other_sinks(tmp_path):
    class FailingSink(RecordingSink):
        def write(self, result):
            raise OSError(28, "No space left on device")

    video = write_video(tmp_path / "clip.avi", 5)
    good = RecordingSink()
    failing = FailingSink()
    with pytest.raises(OSError, match="No space left"):
        Pipeline(open_source(str(video)), ScriptedEngine(), COCO17, settings(), None, [good, failing]).run()
    assert good.closed and failing.closed


def test_pause_and_step(tmp_path):
    video = write_video(tmp_path / "clip.avi", 8)
    sink = RecordingSink()
    pipeline = Pipeline(open_source(str(video)), ScriptedEngine(), COCO17, settings(), None, [sink])
    pipeline.set_paused(True)
    pipeline.start()
    time.sleep(0.3)
    assert len(sink.results) == 0
    pipeline.step()
    pipeline.step()
    deadline = time.monotonic() + 5
    while len(sink.results) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert [r.frame.index for r in sink.results] == [0, 1]
    pipeline.set_paused(False)
    summary = pipeline.join(timeout=10)
    assert summary.frames == 8 and not summary.interrupted


def test_settings_are_read_every_frame(tmp_path):
    video = write_video(tmp_path / "clip.avi", 8)
    box: list[Pipeline] = []

    def raise_threshold(result):
        if result.frame.index == 2:
            # Above every heatmap value: no joint qualifies from the next frame decoded on.
            box[0].settings = PipelineSettings(decode=DecodeConfig(detection_threshold=5.0), keep_heatmaps=True)

    sink = RecordingSink(on_write=raise_threshold)
    pipeline = Pipeline(open_source(str(video)), ScriptedEngine(), COCO17, settings(), None, [sink], queue_size=1)
    box.append(pipeline)
    pipeline.run()
    people = [len(r.tracked) for r in sink.results]
    assert people[:3] == [1, 1, 1] and people[-1] == 0
    assert sink.results[0].heatmaps is None
    assert sink.results[-1].heatmaps.shape == (17, 16, 16)


def test_threads_end_after_run(tmp_path):
    video = write_video(tmp_path / "clip.avi", 3)
    before = {t.name for t in threading.enumerate()}
    Pipeline(open_source(str(video)), ScriptedEngine(), COCO17, settings(), None, []).run()
    leftover = {t.name for t in threading.enumerate()} - before
    assert not any(name.startswith("pipeline-") for name in leftover)


def test_summary_format_and_ratio():
    summary = RunSummary(frames=100, people=250, tracks=3, wall_seconds=2.0,
                         stage_seconds={"capture": 0.2, "preprocess": 0.1, "infer": 1.6, "decode": 0.5,
                                        "track": 0.1, "sinks": 0.2})
    assert summary.fps == 50.0
    assert summary.thread_fps()["inference"] == pytest.approx(100 / 1.6)
    assert summary.slowest_stage_ratio() == pytest.approx(50.0 / (100 / 1.6))
    text = summary.format()
    assert "frames 100" in text and "tracks 3" in text and "infer 16.0 ms" in text



def test_bench_reports_model_and_pipeline_throughput():
    from tagtrack.bench.pipeline import bench_pipeline
    from tagtrack.realtime.run import RunOptions

    report = bench_pipeline(RunOptions(source=None, track=False), frames=30, frame_hw=(48, 64),
                            engine=ScriptedEngine(delay=0.002))
    assert report.summary.frames == 30 and not report.summary.interrupted
    assert 0 < report.model_fps < 1 / 0.002
    assert 0 < report.summary.slowest_stage_ratio() <= 1.05
    assert "pipeline / slowest thread" in report.format()
    assert report.preprocess.frames == 50 and report.preprocess.cpu_ms >= 0 and report.preprocess.baseline_cpu_ms > 0
    assert "before issue 17" in report.format() and report.format().startswith("CPU:")
    assert "test-time" not in report.format()
    flipped = bench_pipeline(RunOptions(source=None, track=False, flip=True), frames=5, frame_hw=(48, 64),
                             engine=ScriptedEngine())
    assert flipped.summary.frames == 5 and "test-time flip: model only is the scale-1 input alone" in flipped.format()


def test_soak_counts_lines_and_samples_memory():
    from tagtrack.bench.pipeline import soak
    from tagtrack.realtime.run import RunOptions

    report = soak(RunOptions(source=None), 60, (48, 64), engine=ScriptedEngine())
    assert report.summary.frames == 60 and report.json_lines == 60
    assert sorted(report.rss_mb) == [6, 30, 59] and all(mb > 0 for mb in report.rss_mb.values())
    assert report.summary.tracks >= 1


class InputCheckingEngine(ScriptedEngine):
    """TEST-ONLY: slow, and records whether each batch it gets is the frame it should be (by its grey level)."""

    def __init__(self) -> None:
        super().__init__(delay=0.01)
        self.seen_levels: list[float] = []

    def infer(self, batch):
        first = float(batch[0, 0, 32, 32])
        time.sleep(self.delay)  # the capture thread runs ahead meanwhile and fills the other buffers
        assert float(batch[0, 0, 32, 32]) == first, "network input overwritten while inferring"
        self.seen_levels.append(first)
        count = batch.shape[0]
        return np.repeat(self.heatmaps[None], count, 0), np.repeat(self.tags[None], count, 0)


class GreyLevelSource:
    """Lossless frames whose grey level is their index: the network input tells which frame it came from."""

    is_live = False
    fps = 30.0

    def __init__(self, frames: int) -> None:
        self.frames, self.index = frames, 0

    def read(self):
        if self.index >= self.frames:
            return None
        index = self.index
        self.index += 1
        return Frame(np.full((64, 64, 3), 10 * index, np.uint8), index, index / 30.0, "grey")

    def close(self):
        pass


@pytest.mark.parametrize("queue_size", [1, 3])
def test_reused_input_buffers_are_not_overwritten_while_queued_or_inferred(queue_size):
    engine = InputCheckingEngine()
    Pipeline(GreyLevelSource(20), engine, COCO17, settings(), None, [RecordingSink()], queue_size=queue_size).run()
    assert engine.seen_levels == pytest.approx([10 * i / 255 for i in range(20)])


def test_sinks_benchmark_times_the_post_thread(tmp_path, capsys):
    from tagtrack.bench import sinks as sinks_bench
    from tests.test_api import write_noise_video

    video = write_noise_video(tmp_path / "clip.avi", 6)
    sinks_bench.main([str(video), "--max-frames", "4", "--engine", "torch"])
    out = capsys.readouterr().out
    assert "4 frames of" in out and "AnnotatedVideoSink" in out and "JsonLinesSink" in out
