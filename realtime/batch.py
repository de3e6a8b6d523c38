"""Many sources at once: `tagtrack run a.mp4 b.mp4 videos/ --out-dir results/ [--workers N] [--ray ADDRESS]`.

Every input file is one job: the same `RunOptions` -> pipeline run as `tagtrack run` (through
`PoseEstimator.track`), with its own outputs in the output folder (`<name>.mp4`, `<name>.jsonl`,
exports beside them). Jobs run one after another, in N worker processes on this machine, or as one
Ray task each on a cluster; in every case each job returns a `FileResult` and a job that fails is
reported without stopping the others. Each process loads the model once and reuses it for its files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tagtrack.model.checkpoint import resolve_weights
from tagtrack.model.errors import UserFacingError, import_extra
from tagtrack.realtime.run import RunOptions, check_options, output_paths

if TYPE_CHECKING:
    from tagtrack.realtime.api import PoseEstimator

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")


@dataclass
class FileResult:
    """How one input went. ok: processed to the end. error: the one-line reason when not ok."""

    source: str
    ok: bool
    frames: int = 0
    people: int = 0
    tracks: int = 0
    seconds: float = 0.0
    error: str | None = None
    interrupted: bool = False
    outputs: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------- planning


def expand_sources(specs: Sequence[str]) -> list[str]:
    """The inputs named on the command line, one per job.

    A folder that holds video files stands for those videos (sorted, not recursive); any other
    folder is one image sequence, as in `tagtrack run FOLDER`. Files, globs, cameras and URLs stay
    as given; a missing file stays too, and its job reports it.
    """
    sources: list[str] = []
    for spec in specs:
        path = Path(spec)
        videos = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) \
            if path.is_dir() else []
        sources.extend(str(video) for video in videos) if videos else sources.append(spec)
    return list(dict.fromkeys(sources))  # a file named twice is processed once


def _output_name(source: str) -> str:
    """A file-name-safe stem for a source's outputs: the video or folder name, camera0, the URL's host and path."""
    if source.strip().lstrip("+-").isdigit():
        return f"camera{source.strip()}"
    text = source.split("://", 1)[1] if "://" in source else Path(source.rstrip("/")).stem
    # Letters and digits of any script stay (the table says which output came from which input); what a
    # file system or a shell would trip on (separators, wildcards, quotes, control characters) becomes "_".
    return re.sub(r"[^\w .-]+", "_", text).strip("._ ") or "source"


def plan_jobs(sources: Sequence[str], out_dir: str | Path, template: RunOptions, video: bool = True) -> list[RunOptions]:
    """One RunOptions per source, writing `<name>.jsonl` (and `<name>.mp4` with video=True) into
    out_dir, plus template.formats beside them. Two sources with one name get `name-2`, `name-3`."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserFacingError(f"--out-dir {out_dir} is a file, expected a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserFacingError(f"cannot create --out-dir {out_dir}: {error.strerror or error}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):  # before the first job's check names its --out file instead
        raise UserFacingError(f"--out-dir {out_dir} is not writable")
    weights = resolve_weights(template.weights)  # one clear error now, not one per file
    if not weights.is_file():
        raise UserFacingError(f"checkpoint not found: {weights}")
    jobs, used = [], set()
    for source in sources:
        name = base = _output_name(source)
        count = 1
        while name in used:
            count += 1
            name = f"{base}-{count}"
        used.add(name)
        jobs.append(dataclasses.replace(
            template, source=source, out=out_dir / f"{name}.mp4" if video else None, json=out_dir / f"{name}.jsonl"))
    if jobs:
        check_options(jobs[0])  # settings shared by every job (formats, thresholds, ...): fail once, now
    return jobs


# ---------------------------------------------------------------- one job


_ESTIMATORS: dict[tuple, PoseEstimator] = {}  # per process: the model loaded once, reused for every file


def _estimator_for(options: RunOptions) -> PoseEstimator:
    from tagtrack.realtime.api import PoseEstimator

    key = (options.weights, options.engine, options.device, options.fp16, options.input_hw,
           json.dumps(options.settings, sort_keys=True))
    if key not in _ESTIMATORS:
        _ESTIMATORS[key] = PoseEstimator(
            options.weights, engine=options.engine, device=options.device, fp16=options.fp16,
            input_size=options.input_hw, settings_layers=options.settings)
    return _ESTIMATORS[key]


def close_estimators() -> None:
    """Free the models this process loaded for its jobs."""
    while _ESTIMATORS:
        _ESTIMATORS.popitem()[1].close()


def run_file(options: RunOptions) -> FileResult:
    """Process one source with its outputs; every failure becomes a FileResult, never an exception
    (a Ctrl-C stops the file, closes its outputs and comes back as interrupted)."""
    try:
        estimator = _estimator_for(options)
        summary = estimator.track(options.source, out=options.out, json=options.json, formats=options.formats,
                                  boxes=options.boxes, tracking=options.track, max_frames=options.max_frames,
                                  stream=False, progress=options.progress)
    except UserFacingError as error:
        return FileResult(options.source, ok=False, error=str(error))
    except KeyboardInterrupt:
        return FileResult(options.source, ok=False, error="interrupted", interrupted=True)
    except Exception as error:  # noqa: BLE001 - one file's bug must not stop the others
        log.debug("%s failed", options.source, exc_info=True)
        return FileResult(options.source, ok=False, error=f"{type(error).__name__}: {error}")
    return FileResult(options.source, ok=not summary.interrupted, frames=summary.frames, people=summary.people,
                      tracks=summary.tracks, seconds=summary.wall_seconds,
                      error="interrupted" if summary.interrupted else None, interrupted=summary.interrupted,
                      outputs=[str(path) for path in output_paths(options)])


# ---------------------------------------------------------------- running many


def _pin_worker(counter, workers: int) -> None:
    """Worker-process start: take an equal share of this machine's cores, so N workers do not each
    start threads for every core (ONNX Runtime sizes its pool by the CPU affinity, torch is told)."""
    import torch

    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) >= workers:
            share = cores[slot % workers::workers]
            os.sched_setaffinity(0, share)
            torch.set_num_threads(len(share))
            return
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _run_in_processes(jobs: list[RunOptions], workers: int, on_result: Callable[[FileResult], None]) -> list[FileResult]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: the parent may already run threads (torch, ONNX Runtime) that fork would break.
    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0)
    results: dict[int, FileResult] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_pin_worker,
                             initargs=(counter, workers)) as pool:
        futures = {pool.submit(run_file, job): index for index, job in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                index = futures[future]
                try:
                    result = future.result()
                except BaseException as error:  # noqa: BLE001 - a worker that died (memory, signal)
                    result = FileResult(jobs[index].source, ok=False, error=f"worker failed: {type(error).__name__}: {error}",
                                        interrupted=isinstance(error, KeyboardInterrupt))
                results[index] = result
                on_result(result)
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)
            for index, job in enumerate(jobs):
                results.setdefault(index, FileResult(job.source, ok=False, error="interrupted", interrupted=True))
    return [results[index] for index in range(len(jobs))]


def _run_on_ray(jobs: list[RunOptions], address: str | None, on_result: Callable[[FileResult], None],
                **init_options) -> list[FileResult]:
    """One Ray task per file on the cluster at `address` ("auto": the one this machine belongs to,
    "ray://host:10001": a remote one, None: start a local Ray). A Ray session this process already
    opened is used as it is. Every node must see the inputs, the weights and the output folder under
    the same paths (a shared file system)."""
    ray = import_extra("ray", "cluster", "--ray (one task per file on a Ray cluster)")
    if not ray.is_initialized():
        ray.init(address=address, **init_options)
    task = ray.remote(run_file)
    pending = {task.remote(job): index for index, job in enumerate(jobs)}
    results: dict[int, FileResult] = {}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            index = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as error:  # noqa: BLE001 - RayTaskError, a node that died
                result = FileResult(jobs[index].source, ok=False, error=f"ray task failed: {type(error).__name__}: {error}")
            results[index] = result
            on_result(result)
    return [results[index] for index in range(len(jobs))]


def run_jobs(jobs: list[RunOptions], workers: int = 1, ray_address: str | None = None,
             on_result: Callable[[FileResult], None] | None = None) -> list[FileResult]:
    """Run every job (in this process, in `workers` processes, or on Ray when ray_address is given;
    "local" starts a Ray on this machine) and return their results in job order; on_result sees
    each as it finishes."""
    if workers < 1:
        raise UserFacingError(f"--workers must be at least 1, got {workers}")
    on_result = on_result or (lambda result: None)
    if ray_address is not None:
        return _run_on_ray(jobs, None if ray_address == "local" else ray_address, on_result)
    if workers > 1 and len(jobs) > 1:
        return _run_in_processes(jobs, min(workers, len(jobs)), on_result)
    results = []
    try:
        for job in jobs:
            results.append(run_file(job))
            on_result(results[-1])
            if results[-1].interrupted:  # Ctrl-C means stop the batch, not skip to the next file
                break
    finally:
        close_estimators()
    results.extend(FileResult(job.source, ok=False, error="not started (interrupted)", interrupted=True)
                   for job in jobs[len(results):])
    return results


def run_many(sources: Sequence[str | Path], out_dir: str | Path, *, workers: int = 1, ray_address: str | None = None,
             video: bool = True, formats: Sequence[str] = (), boxes: bool = False, tracking: bool = True,
             max_frames: int | None = None, weights: str | Path | None = None, engine: str = "auto",
             device: str = "auto", fp16: bool = False, input_size: tuple[int, int] | None = None,
             detection_threshold: float | None = None, tag_threshold: float | None = None) -> list[FileResult]:
    """Process many videos / image folders, each with its own outputs in `out_dir`.

    sources: files, folders of videos (each video one job) or image folders. Writes
    `<name>.jsonl` and (video=True) `<name>.mp4` per source, plus `formats` exports beside them.
    workers > 1: that many processes on this machine. ray_address: run one Ray task per file on
    that cluster ("auto", "ray://host:10001"; needs the `cluster` extra). A failing file is a
    FileResult with ok False and its error; the others still run. Returns the results in order.
    """
    from tagtrack.model.settings import user_layers

    thresholds = {"detection_threshold": detection_threshold, "tag_threshold": tag_threshold}
    template = RunOptions(source="", weights=Path(weights) if weights is not None else None, engine=engine,
                          device=device, fp16=fp16, track=tracking, boxes=boxes, formats=list(formats),
                          input_hw=tuple(input_size) if input_size is not None else None,
                          settings=user_layers(flags=thresholds, keywords=True), max_frames=max_frames,
                          progress=False)
    jobs = plan_jobs(expand_sources([str(source) for source in sources]), out_dir, template, video=video)
    return run_jobs(jobs, workers, ray_address)


def format_table(results: Sequence[FileResult]) -> str:
    """The summary table the CLI prints: one row per input, then the totals."""
    rows = [("source", "frames", "people", "tracks", "FPS", "status")]
    for result in results:
        rows.append((result.source, str(result.frames), str(result.people), str(result.tracks),
                     f"{result.fps:.1f}" if result.frames else "-", "ok" if result.ok else f"FAILED: {result.error}"))
    width = max(len(row[0]) for row in rows)
    lines = [f"{row[0]:<{width}}  {row[1]:>7}  {row[2]:>7}  {row[3]:>6}  {row[4]:>6}  {row[5]}" for row in rows]
    failed = sum(not result.ok for result in results)
    lines.append(f"{len(results) - failed} of {len(results)} inputs done, {failed} failed, "
                 f"{sum(r.frames for r in results)} frames")
    return "\n".join(lines)
