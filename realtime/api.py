"""The Python API: `PoseEstimator` for single images, `track` for videos, folders, cameras and streams.

    import tagtrack

    estimator = tagtrack.PoseEstimator()              # the bundled default model
    people = estimator(image_bgr)                     # list[Person], best score first
    for frame in tagtrack.track("video.mp4"):         # one TrackedFrame per frame, people with track_id
        print(frame.index, frame.timestamp, len(frame.people))
    tagtrack.track("video.mp4", out="annotated.mp4", json="poses.jsonl")   # the files `tagtrack run` writes

The records are the JSON Lines records of `tagtrack run --json` (realtime/pose_jsonl.schema.json) as
dataclasses: `TrackedFrame.to_dict()` is exactly the line the CLI writes for that frame. `track` runs
the same pipeline as the CLI (`RunOptions` -> `build_pipeline`), so its files are the CLI's files.
Bad input raises `UserFacingError` with the CLI's one-line messages. Library code only logs; it never
prints, exits or installs signal handlers.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tagtrack.model.errors import UserFacingError
from tagtrack.model.settings import Layer, resolve_settings, user_layers
from tagtrack.realtime.run import RunOptions, build_pipeline, run_model

if TYPE_CHECKING:
    from tagtrack.model.pose import Pose
    from tagtrack.model.schema import KeypointSchema
    from tagtrack.realtime.pipeline import FrameResult, Pipeline, RunSummary

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.05
_STREAM_QUEUE_SIZE = 4  # frames handed to the caller's loop; a slow loop back-pressures the pipeline
_CLOSE_TIMEOUT_SECONDS = 30.0


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class Keypoint:
    """One body joint in image pixels. score 0 means the joint was not found (x and y are then 0)."""

    x: float
    y: float
    score: float

    @property
    def found(self) -> bool:
        return self.score > 0


@dataclass
class Person:
    """One person in one image (the `person` of realtime/pose_jsonl.schema.json).

    keypoints: joint name (the model's keypoint schema; COCO-17 for the default model: "nose",
    "left_shoulder", ...) -> Keypoint, in the schema's order.
    score: the person score (model.pose.Pose.score: mean over all joint types, a missing joint
    counting 0). box: (x1, y1, x2, y2) around the found joints. tag: the person's mean associative-embedding tag. track_id: stable across the frames of
    one `track` run (1, 2, ...); None for single images and with tracking=False.
    Values are those of the JSON Lines file: pixels to 0.01, scores and tags to 0.0001.
    """

    keypoints: dict[str, Keypoint]
    score: float
    box: tuple[float, float, float, float]
    tag: tuple[float, ...]
    track_id: int | None = None

    @classmethod
    def from_record(cls, record: dict) -> Person:
        """From a person record of the JSON Lines file (or `to_dict()`)."""
        return cls(
            keypoints={name: Keypoint(float(k["x"]), float(k["y"]), float(k["score"]))
                       for name, k in record["keypoints"].items()},
            score=float(record["score"]),
            box=tuple(float(v) for v in record["box"]),
            tag=tuple(float(v) for v in record["tag"]),
            track_id=None if record["track_id"] is None else int(record["track_id"]),
        )

    def to_dict(self) -> dict:
        """The person as in the JSON Lines file: track_id, score, box, keypoints {name: {x, y, score}}, tag."""
        return {
            "track_id": self.track_id,
            "score": self.score,
            "box": list(self.box),
            "keypoints": {name: {"x": k.x, "y": k.y, "score": k.score} for name, k in self.keypoints.items()},
            "tag": list(self.tag),
        }

    def keypoints_array(self) -> np.ndarray:
        """[K, 3] float32 (x, y, score) in the schema's joint order, the layout COCO results use."""
        return np.array([(k.x, k.y, k.score) for k in self.keypoints.values()], dtype=np.float32)


@dataclass
class TrackedFrame:
    """One processed frame (the JSON Lines record of realtime/pose_jsonl.schema.json).

    index: 0-based frame number in the source (live sources: gaps are dropped frames). timestamp:
    seconds of source time. source_id: the video path, the image's path for folders, "camera:N" or
    the URL. width, height: the frame's size. dropped: frames a live source dropped so far (0 for
    files). people: everyone found, with track_id. image: the BGR frame itself (not in to_dict()).
    """

    index: int
    timestamp: float
    source_id: str
    width: int
    height: int
    dropped: int
    people: list[Person]
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_record(cls, record: dict, image: np.ndarray | None = None) -> TrackedFrame:
        """From a JSON Lines record (or `to_dict()`); `image` is the frame, when there is one."""
        return cls(
            index=int(record["frame_index"]), timestamp=float(record["timestamp"]),
            source_id=str(record["source_id"]), width=int(record["image"]["width"]),
            height=int(record["image"]["height"]), dropped=int(record["dropped"]),
            people=[Person.from_record(person) for person in record["people"]], image=image)

    def to_dict(self) -> dict:
        """The JSON Lines record of this frame, equal to the line `tagtrack run --json` writes."""
        from tagtrack.model.records import frame_record

        return frame_record(self.index, self.timestamp, self.source_id, (self.height, self.width),
                            [person.to_dict() for person in self.people], self.dropped)


def _frame_from_result(result: FrameResult, schema: KeypointSchema) -> TrackedFrame:
    # The JSON Lines sink's own record function: the API's numbers are the file's numbers.
    from tagtrack.realtime.jsonl import result_record

    return TrackedFrame.from_record(result_record(result, schema), image=result.frame.image)


def _people_from_poses(poses: list[Pose], schema: KeypointSchema) -> list[Person]:
    from tagtrack.model.records import person_record

    return [Person.from_record(person_record(pose, schema)) for pose in poses]


# ---------------------------------------------------------------- the estimator


def _source_spec(source: str | int | Path) -> str:
    """`tagtrack run`'s spelling of a source: 0 -> "0" (camera), a Path -> its string."""
    if isinstance(source, bool) or not isinstance(source, (str, int, Path)):
        raise UserFacingError(f"source must be a path, a camera index or a URL, got {type(source).__name__}")
    return str(source)


class PoseEstimator:
    """A loaded pose model: call it on a BGR image for the people in it, or `track()` a video.

    weights: a .safetensors checkpoint; None is the bundled default model. engine: "auto" (TensorRT
    on an NVIDIA GPU, else ONNX Runtime, else torch), "torch", "ort" or "trt". device: "auto",
    "cpu" or "cuda". input_size: network input (height, width), multiples of 64; None is the
    checkpoint's, or with frame_hw (height and width of the images to come) the shape within the
    checkpoint's pixels that covers them best, as `tagtrack run` picks for a video
    (`transforms.choose_input_hw`). detection_threshold / tag_threshold / min_person_score: decoder
    settings (None: the checkpoint's stored value, else the default). settings: any decoder and tracker
    setting, {"decode": {"top_k": 20}, "tracker": {"tag_gate": 1.0}} (model/settings.py), above the thresholds.
    settings_layers: the command line's layers (`--config`, flags, `--set`; model/settings.py: user_layers),
    below both. flip and scales: test-time augmentation, of single images and of every frame `track` reads
    (each scale's input size runs its own engine of this one's kind). The engine is loaded once here; close()
    (or a `with` block) frees it. Calls from one thread at a time.
    """

    def __init__(self, weights: str | Path | None = None, *, engine: str = "auto", device: str = "auto",
                 fp16: bool = False, input_size: tuple[int, int] | None = None,
                 detection_threshold: float | None = None, tag_threshold: float | None = None,
                 min_person_score: float | None = None, flip: bool = False, scales: Sequence[float] = (1.0,),
                 settings: dict | None = None, frame_hw: tuple[int, int] | None = None,
                 settings_layers: Sequence[Layer] = ()) -> None:
        from tagtrack.model.predict import PredictConfig, check_scales

        scales = check_scales(scales)
        thresholds = {"detection_threshold": detection_threshold, "tag_threshold": tag_threshold,
                      "min_person_score": min_person_score}
        layers = [*settings_layers, *user_layers(flags=thresholds, keywords=True)]
        if settings:
            layers.append(("settings", dict(settings)))
        self.options = RunOptions(
            source="", weights=Path(weights) if weights is not None else None, engine=engine, device=device,
            fp16=fp16, input_hw=tuple(input_size) if input_size is not None else None, settings=layers,
            flip=flip, scales=scales)
        resolve_settings(None, layers)  # a bad name or value fails before the model loads
        self.engine, self.settings = run_model(self.options, frame_hw=frame_hw)
        self.schema: KeypointSchema = self.engine.schema
        self.predict_config = PredictConfig(decode=self.settings.decode, flip=flip, scales=scales)
        self._sized_engines = None
        self._infer = self.engine.infer
        if scales != (1.0,):
            from tagtrack.realtime.run import EnginesBySize

            # Each scale's input size has its own engine of this one's kind (as `run --scales`).
            try:
                self._sized_engines = EnginesBySize(self.engine, self.options, scales)
            except BaseException:
                self.engine.close()
                raise
            self._infer = self._sized_engines

    @property
    def input_size(self) -> tuple[int, int]:
        """The network input (height, width) at scale 1."""
        return tuple(self.engine.input_hw)

    @property
    def engine_name(self) -> str:
        """The backend that runs the network, e.g. "onnxruntime (CPUExecutionProvider)"."""
        return self.engine.name

    def predict_poses(self, image_bgr: np.ndarray) -> list[Pose]:
        """The model's own records (tagtrack.model.pose.Pose: numpy keypoints [K,3], full precision)."""
        from tagtrack.model.predict import predict_image

        if self.engine is None:
            raise UserFacingError("this PoseEstimator is closed")
        if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or not image_bgr.size:
            raise UserFacingError(f"expected a BGR image array [H,W,3], got {getattr(image_bgr, 'shape', type(image_bgr).__name__)}")
        if image_bgr.dtype != np.uint8:
            raise UserFacingError(f"expected a uint8 BGR image (as cv2.imread gives), got {image_bgr.dtype}")
        return predict_image(self._infer, image_bgr, self.input_size, self.schema, self.predict_config)

    def __call__(self, image: np.ndarray | str | Path) -> list[Person]:
        """The people in one image, best score first: a BGR uint8 array [H,W,3] or an image file."""
        if isinstance(image, (str, Path)):
            from tagtrack.model.files import read_image

            image = read_image(image)
        return _people_from_poses(self.predict_poses(image), self.schema)

    def track(self, source: str | int | Path, *, out: str | Path | None = None, json: str | Path | None = None,
              formats: Sequence[str] = (), boxes: bool = False, tracking: bool = True,
              max_frames: int | None = None, stream: bool | None = None,
              progress: bool = False) -> FrameStream | RunSummary:
        """Poses and tracks for every frame of `source` with this estimator; see `tagtrack.track`."""
        return _track(self, False, source, out, json, formats, boxes, tracking, max_frames, stream, progress)

    def close(self) -> None:
        """Free the engine (GPU memory, ONNX Runtime session), and those of other scales. Safe to call twice."""
        engine, self.engine = self.engine, None
        sized, self._sized_engines = self._sized_engines, None
        if sized is not None:
            sized.close()
        if engine is not None:
            engine.close()

    def __enter__(self) -> PoseEstimator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.engine is None else f"{self.engine_name}, input {self.input_size[0]}x{self.input_size[1]}"
        return f"PoseEstimator({state})"


# ---------------------------------------------------------------- tracking


_END = object()


class _StreamSink:
    """The pipeline's last sink: hands each finished frame to the caller's loop through a small queue."""

    def __init__(self, schema: KeypointSchema) -> None:
        self.schema = schema
        self.frames: queue.Queue = queue.Queue(maxsize=_STREAM_QUEUE_SIZE)
        self.abandoned = False  # the caller stopped reading: drop instead of waiting

    def _put(self, item: object) -> None:
        while not self.abandoned:
            try:
                self.frames.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def write(self, result: FrameResult) -> None:
        self._put(_frame_from_result(result, self.schema))

    def close(self) -> None:
        self._put(_END)


class FrameStream(Iterator[TrackedFrame]):
    """The frames of a `track(...)` run as they complete, in order; an iterator and a context manager.

    The pipeline's threads start at the first frame asked for. They are stopped and joined, and every
    output file closed, when the loop ends, when it is left early (`break`, an exception), or on
    close(). `summary` holds the run's totals (pipeline.RunSummary) once the stream is closed.
    An error in the run (e.g. an unreadable image in a folder) is raised from the loop, after the
    frames before it.
    """

    def __init__(self, pipeline: Pipeline, sink: _StreamSink, estimator: PoseEstimator, owns_estimator: bool) -> None:
        self._pipeline = pipeline
        self._sink = sink
        self._estimator = estimator
        self._owns_estimator = owns_estimator
        self._started = False
        self._closed = False
        self.summary: RunSummary | None = None

    def __iter__(self) -> FrameStream:
        return self

    def __next__(self) -> TrackedFrame:
        if self._closed:
            raise StopIteration
        if not self._started:
            self._started = True
            self._pipeline.start()
        while True:
            try:
                item = self._sink.frames.get(timeout=_POLL_SECONDS)
                break
            except queue.Empty:
                if not self._pipeline.running:  # every put is done: take what is left, else it ended
                    try:
                        item = self._sink.frames.get_nowait()
                    except queue.Empty:
                        item = _END
                    break
            except BaseException:  # Ctrl-C while waiting: close outputs, then let it through
                self.close()
                raise
        if item is _END:
            self.close()  # raises the run's error, if any
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the run, join its threads, close its outputs (and the estimator `track()` made)."""
        if self._closed:
            return
        self._closed = True
        self._sink.abandoned = True
        pipeline = self._pipeline
        try:
            if self._started:
                pipeline.stop()
                self.summary = pipeline.join(timeout=_CLOSE_TIMEOUT_SECONDS)
            else:  # never iterated: nothing ran, but the source and the outputs are open
                for sink in pipeline.sinks:
                    sink.close()
                pipeline.source.close()
                self.summary = pipeline.summary()
        finally:
            if self._owns_estimator:
                self._estimator.close()

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing to report to at garbage collection
            log.debug("closing an abandoned FrameStream failed", exc_info=True)


def _run_to_end(pipeline: Pipeline) -> RunSummary:
    """Run without a caller's loop. Ctrl-C stops the threads and closes the outputs, then propagates."""
    pipeline.start()
    try:
        return pipeline.join()
    except KeyboardInterrupt:
        pipeline.stop()
        pipeline.join(timeout=_CLOSE_TIMEOUT_SECONDS)
        raise


def _track(estimator: PoseEstimator, owns_estimator: bool, source: str | int | Path, out, json, formats,
           boxes: bool, tracking: bool, max_frames: int | None, stream: bool | None,
           progress: bool) -> FrameStream | RunSummary:
    if estimator.engine is None:
        raise UserFacingError("this PoseEstimator is closed")
    if isinstance(formats, str):  # formats="coco": one format, not the letters c, o, c, o
        formats = [formats]
    options = dataclasses.replace(
        estimator.options, source=_source_spec(source), out=Path(out) if out is not None else None,
        json=Path(json) if json is not None else None, formats=list(formats), boxes=boxes, track=tracking,
        max_frames=max_frames, progress=progress)
    writes_files = options.out is not None or options.json is not None or bool(options.formats)
    if stream is None:
        stream = not writes_files
    sink = _StreamSink(estimator.schema) if stream else None
    pipeline = build_pipeline(options, engine=estimator.engine, extra_sinks=[sink] if sink else None,
                              sized_engines=estimator._sized_engines)
    if sink is not None:
        return FrameStream(pipeline, sink, estimator, owns_estimator)
    try:
        return _run_to_end(pipeline)
    finally:
        if owns_estimator:
            estimator.close()


def track(source: str | int | Path, *, out: str | Path | None = None, json: str | Path | None = None,
          formats: Sequence[str] = (), boxes: bool = False, tracking: bool = True, max_frames: int | None = None,
          stream: bool | None = None, progress: bool = False, weights: str | Path | None = None,
          engine: str = "auto", device: str = "auto", fp16: bool = False, input_size: tuple[int, int] | None = None,
          detection_threshold: float | None = None, tag_threshold: float | None = None,
          settings: dict | None = None) -> FrameStream | RunSummary:
    """Poses with track IDs for every frame of a video, image folder or glob, camera or stream.

    source: a video file, an image folder or glob, a camera index (0) or an rtsp/http URL. Files and
    folders are lossless (every frame, in order); cameras and streams give the freshest frame.

    Without output files (or with stream=True) this returns a FrameStream: iterate it for one
    TrackedFrame per frame; leaving the loop (end, break, exception) stops the threads and closes
    everything. With out= (annotated .mp4), json= (JSON Lines), formats= ("coco", "posetrack",
    "openpose" exports) and stream left None, it runs to the end and returns the run's RunSummary:
    the files are those `tagtrack run --out ... --json ... --format ...` writes. stream=True with
    files writes them while you iterate.

    boxes: draw person boxes in the video. tracking=False: no IDs (track_id None). max_frames: stop
    after this many. progress: a tqdm bar for files. The model settings (weights, engine, device,
    fp16, input_size, detection_threshold, tag_threshold, settings) are PoseEstimator's; to reuse one loaded
    model over many videos call `PoseEstimator(...).track(source, ...)` instead.
    Raises UserFacingError (missing file, not a video, unwritable output, bad checkpoint, ...).
    """
    estimator = PoseEstimator(weights, engine=engine, device=device, fp16=fp16, input_size=input_size,
                              detection_threshold=detection_threshold, tag_threshold=tag_threshold,
                              settings=settings)
    try:
        return _track(estimator, True, source, out, json, formats, boxes, tracking, max_frames, stream, progress)
    except BaseException:
        estimator.close()
        raise


def demo_video() -> Path:
    """The demo clip, OpenCV's sample street scene `vtest.avi` (PETS 2009): `$TAGTRACK_DEMO_VIDEO`, else where
    `make vtest` puts it (`$TAGTRACK_CACHE`, else ~/.cache/tagtrack), else Debian's opencv-doc package.
    Raises UserFacingError saying how to get it when it is in none of them."""
    from tagtrack.realtime.demo import find_vtest, vtest_locations

    video = find_vtest()
    if video is None:
        raise UserFacingError(f"the demo clip vtest.avi is not here ({vtest_locations()[0]}): run `make vtest` "
                              "(or `apt-get install opencv-doc`), or use any video of yours")
    return video


__all__ = ["FrameStream", "Keypoint", "Person", "PoseEstimator", "TrackedFrame", "demo_video", "track"]
