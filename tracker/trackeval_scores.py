"""Tracks scored as trackers are compared in the literature: TrackEval's HOTA, CLEAR (MOTA) and Identity (IDF1).

TrackEval (PyPI `trackeval`, the MOTChallenge evaluator) is run as a reviewer would run it: its
`MotChallenge2DBox` dataset reads a ground-truth and a result file of boxes per tracker from a MOTChallenge
folder layout (written here to a temporary folder, frames renumbered from 1 when a range is scored), matches
boxes at IoU >= 0.5 and scores them with its `HOTA`, `CLEAR` and `Identity` metrics. The protocol follows the
ground truth: MOT15 (columns 8-10 are world coordinates or -1: every row with conf 0 is left out of the truth,
results on it stay false positives) or MOT16/17 (column 8 holds classes 1-13: results on distractor classes are
removed, only pedestrians with conf 1 are scored).

trackeval is installed without its dependencies (`pip install --no-deps trackeval`, as `make setup` does): it
asks for opencv-python, which would replace this package's opencv-python-headless (both own `cv2`) and bring
its own Qt, whose plugin path breaks the PyQt6 viewer. The metrics used here need only NumPy and SciPy.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagtrack.model.errors import MissingExtraError, UserFacingError
from tagtrack.tracker.mot_eval import FrameObjects, MotRows

log = logging.getLogger(__name__)

TRACKEVAL_REQUIREMENT = "trackeval>=1.3,<2"
SEQUENCE = "SEQ"
MOT17_CLASSES = range(1, 14)  # MotChallenge2DBox's class ids (1 pedestrian ... 13 crowd)


@dataclass
class TrackEvalScores:
    """One tracker's scores over one sequence (fractions in 0..1, as TrackEval returns them)."""

    hota: float
    deta: float
    assa: float
    loca: float
    mota: float
    motp: float
    idf1: float
    idp: float
    idr: float
    id_switches: int
    fragmentations: int
    mostly_tracked: int
    partially_tracked: int
    mostly_lost: int
    false_positives: int
    misses: int
    recall: float
    precision: float
    num_objects: int      # ground-truth people scored
    num_track_ids: int    # distinct ids the tracker reported in the scored frames
    frames: int
    protocol: str         # MOT15 or MOT17 (TrackEval's BENCHMARK)


def import_trackeval():
    """The trackeval package, or MissingExtraError saying how to install it (without its dependencies)."""
    printed = io.StringIO()
    try:
        # Importing it imports every dataset module; one without its optional package prints a line about it.
        with contextlib.redirect_stdout(printed):
            import trackeval
    except ImportError as error:
        raise MissingExtraError(
            f"HOTA / MOTA / IDF1 need TrackEval (trackeval is not installed): pip install --no-deps "
            f"'{TRACKEVAL_REQUIREMENT}' (without its dependencies: its opencv-python would replace "
            f"opencv-python-headless; `make setup` installs it so)") from error
    if printed.getvalue().strip():
        log.debug("importing trackeval: %s", printed.getvalue().strip())
    return trackeval


def protocol_of(truth: MotRows) -> str:
    """MOT17 when column 8 holds MOTChallenge class ids (MOT16/17/20 ground truth), else MOT15."""
    classes = truth.values[:, 7]
    if len(classes) and np.all(classes == np.round(classes)) and np.isin(classes, MOT17_CLASSES).all():
        return "MOT17"
    return "MOT15"


def _rows_in(values: np.ndarray, frames: range) -> np.ndarray:
    """Rows of `frames`, renumbered so that frames.start is frame 1."""
    part = values[(values[:, 0] >= frames.start) & (values[:, 0] < frames.stop)].copy()
    part[:, 0] -= frames.start - 1
    return part


def _result_rows(results: dict[int, FrameObjects], frames: range) -> np.ndarray:
    rows = []
    for frame in frames:
        found = results.get(frame)
        if found is None or not len(found.ids):
            continue
        boxes = np.asarray(found.boxes, dtype=np.float64).reshape(-1, 4)
        for track_id, (x1, y1, x2, y2) in zip(found.ids, boxes):
            rows.append([frame - frames.start + 1, int(track_id), x1, y1, x2 - x1, y2 - y1, 1.0, -1.0, -1.0, -1.0])
    return np.array(rows, dtype=np.float64).reshape(-1, 10)


def _write_rows(path: Path, rows: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        for row in rows:
            file.write(f"{int(row[0])},{int(row[1])},{','.join(f'{v:.6g}' for v in row[2:])}\n")


def _scores(result: dict, data: dict, protocol: str, frames: int) -> TrackEvalScores:
    hota, clear, identity = result["HOTA"], result["CLEAR"], result["Identity"]
    return TrackEvalScores(
        hota=float(np.mean(hota["HOTA"])), deta=float(np.mean(hota["DetA"])), assa=float(np.mean(hota["AssA"])),
        loca=float(np.mean(hota["LocA"])), mota=float(clear["MOTA"]), motp=float(clear["MOTP"]),
        idf1=float(identity["IDF1"]), idp=float(identity["IDP"]), idr=float(identity["IDR"]),
        id_switches=int(clear["IDSW"]), fragmentations=int(clear["Frag"]), mostly_tracked=int(clear["MT"]),
        partially_tracked=int(clear["PT"]), mostly_lost=int(clear["ML"]), false_positives=int(clear["CLR_FP"]),
        misses=int(clear["CLR_FN"]), recall=float(clear["CLR_Re"]), precision=float(clear["CLR_Pr"]),
        num_objects=int(data["num_gt_ids"]), num_track_ids=int(data["num_tracker_ids"]), frames=frames,
        protocol=protocol)


def score_with_trackeval(truth: MotRows, results: dict[str, dict[int, FrameObjects]],
                         frames: range) -> dict[str, TrackEvalScores]:
    """HOTA, CLEAR and Identity of each named tracker's results ({frame: FrameObjects}, MOT frame numbers)
    against the ground truth, over `frames`."""
    trackeval = import_trackeval()
    protocol = protocol_of(truth)
    names = {name: f"tracker{i}" for i, name in enumerate(results)}  # folder names TrackEval accepts
    with tempfile.TemporaryDirectory(prefix="tagtrack-trackeval-") as folder:
        root = Path(folder)
        _write_rows(root / "gt" / SEQUENCE / "gt" / "gt.txt", _rows_in(truth.values, frames))
        for name, found in results.items():
            _write_rows(root / "trackers" / names[name] / "data" / f"{SEQUENCE}.txt", _result_rows(found, frames))
        config = {"GT_FOLDER": str(root / "gt"), "TRACKERS_FOLDER": str(root / "trackers"),
                  "OUTPUT_FOLDER": str(root / "out"), "TRACKERS_TO_EVAL": list(names.values()),
                  "BENCHMARK": protocol, "SKIP_SPLIT_FOL": True, "SEQ_INFO": {SEQUENCE: len(frames)},
                  "PRINT_CONFIG": False}
        # TrackEval prints progress and configs to stdout; the CLI's output is ours, so it goes to the log.
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                dataset = trackeval.datasets.MotChallenge2DBox(config)
                metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
                           trackeval.metrics.Identity({"PRINT_CONFIG": False})]
                scores = {}
                for name, folder_name in names.items():
                    data = dataset.get_preprocessed_seq_data(dataset.get_raw_seq_data(folder_name, SEQUENCE),
                                                             "pedestrian")
                    result = {metric.get_name(): metric.eval_sequence(data) for metric in metrics}
                    scores[name] = _scores(result, data, protocol, len(frames))
        except trackeval.utils.TrackEvalException as error:
            raise UserFacingError(f"TrackEval refused the ground truth {truth.path} or the results: {error}")
        finally:
            if printed.getvalue().strip():
                log.debug("TrackEval: %s", printed.getvalue().strip())
    return scores


def format_trackeval_scores(scores: TrackEvalScores, title: str = "") -> str:
    s = scores
    lines = [title] if title else []
    lines += [
        f"HOTA {100 * s.hota:.1f} (DetA {100 * s.deta:.1f}, AssA {100 * s.assa:.1f}, LocA {100 * s.loca:.1f})  "
        f"MOTA {100 * s.mota:.1f}  IDF1 {100 * s.idf1:.1f}  ID switches {s.id_switches}",
        f"MOTP {100 * s.motp:.1f}  IDP {100 * s.idp:.1f}  IDR {100 * s.idr:.1f}  fragmentations {s.fragmentations}  "
        f"recall {100 * s.recall:.1f} %  precision {100 * s.precision:.1f} %  false positives {s.false_positives}  "
        f"misses {s.misses}",
        f"people {s.num_objects}: mostly tracked {s.mostly_tracked}, partly {s.partially_tracked}, mostly lost "
        f"{s.mostly_lost}; track ids {s.num_track_ids} over {s.frames} frames "
        f"(TrackEval {s.protocol} protocol: boxes matched at IoU >= 0.5)",
    ]
    return "\n".join(lines)
