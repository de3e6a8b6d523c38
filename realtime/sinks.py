"""The pipeline's outputs, by the names other code imports them by. Each lives in its own module:

- `realtime/output_paths.py`: `Temporary`, `check_output_path`, `refuse_overwriting`, `write_whole_file`,
  `FileSink` (finish / publish / abandon / discard), `OutputError`: nothing the user had is lost, and no
  output is left broken under its name;
- `realtime/jsonl.py`: `JsonLinesSink` (`run --json`), `write_image_record` (`predict --json`); the record
  layout itself, writer and reader, is `model/records.py`;
- `realtime/video_sink.py`: `AnnotatedVideoSink` (H.264 through PyAV, else OpenCV's mp4v);
- `realtime/exports.py`: `EXPORT_FORMATS`, the one table of `--format`, and its sinks (COCO, PoseTrack,
  OpenPose, MOT, the settings file);
- `realtime/progress.py`: the progress bar, or lines.

New code imports from those modules; this one keeps the names that the cli/ package, realtime/run.py,
realtime/model_export.py, the benches and the tests import from `realtime.sinks`.
"""

from __future__ import annotations

from tagtrack.model.records import JSONL_SCHEMA_VERSION, is_header, read_pose_lines
from tagtrack.realtime.exports import (
    EXPORT_FORMATS,
    SETTINGS_SUFFIX,
    CocoResultsSink,
    MotChallengeSink,
    OpenPoseSink,
    OutputFormat,
    PoseTrackSink,
    SettingsFileSink,
    check_export_schema,
    export_format,
    export_paths,
    export_sinks,
    image_id_for,
    openpose_body25,
    write_settings_file,
)
from tagtrack.realtime.jsonl import JSONL_SCHEMA_PATH, JsonLinesSink, write_image_record
from tagtrack.realtime.output_paths import (
    NAME_MAX,
    FileSink,
    OutputError,
    Temporary,
    check_output_path,
    discard_outputs,
    refuse_overwriting,
    write_image,
    write_whole_file,
)
from tagtrack.realtime.progress import ProgressBarSink, ProgressLinesSink, progress_sink
from tagtrack.realtime.video_sink import (
    DEFAULT_VIDEO_FPS,
    VIDEO_CODECS,
    AnnotatedVideoSink,
    default_video_codec,
    h264_encoder,
)


__all__ = [
    "DEFAULT_VIDEO_FPS", "EXPORT_FORMATS", "JSONL_SCHEMA_PATH", "JSONL_SCHEMA_VERSION", "NAME_MAX", "SETTINGS_SUFFIX",
    "VIDEO_CODECS", "AnnotatedVideoSink", "CocoResultsSink", "FileSink", "JsonLinesSink", "MotChallengeSink",
    "OpenPoseSink", "OutputError", "OutputFormat", "PoseTrackSink", "ProgressBarSink", "ProgressLinesSink",
    "SettingsFileSink", "Temporary", "check_export_schema", "check_output_path", "default_video_codec",
    "discard_outputs", "export_format", "export_paths", "export_sinks", "h264_encoder",
    "image_id_for", "is_header", "openpose_body25", "progress_sink", "read_pose_lines",
    "refuse_overwriting", "write_image", "write_image_record", "write_settings_file", "write_whole_file",
]
