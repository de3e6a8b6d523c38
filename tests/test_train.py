"""The training loop: exact resume, 2-process DDP keeps ranks identical, Ctrl-C saves, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tagtrack.model.checkpoint import load_checkpoint
from tagtrack.model.errors import UserFacingError
from tagtrack.training.config import PRESETS, TrainConfig, preset
from tagtrack.training.synthetic import SceneConfig, generate_dataset
from tagtrack.training.train import learning_rate_factor, parameters_sha256, train

REPO = Path(__file__).resolve().parents[1]
SCENE = SceneConfig(width=96, height=64, max_people=2, crowd_probability=0.3, unlabelled_probability=0.3)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic")
    generate_dataset(folder, num_images=6, config=SCENE, seed=5)
    return folder


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(data: Path, **overrides) -> TrainConfig:
    # 6 images, batch 2 -> 3 steps per epoch, so 7 steps cross two epoch boundaries.
    base = preset("tiny", train_annotations=str(data / "annotations.json"), train_images=str(data / "images"),
                  steps=7, checkpoint_every=100, log_every=1)
    return replace(base, **overrides)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_resume_continues_with_identical_losses(tiny_data: Path, tmp_path: Path) -> None:
    config = _config(tiny_data)
    straight = train(config, tmp_path / "straight")
    assert straight.step == 7 and len(straight.losses) == 7
    first = train(config, tmp_path / "resumed", stop_at=4)
    assert first.step == 4 and first.losses == straight.losses[:4]
    state = torch.load(tmp_path / "resumed" / "last.state.pt", weights_only=True)
    assert state["step"] == 4
    second = train(config, tmp_path / "resumed", resume=True)
    assert second.step == 7
    assert second.losses == straight.losses[4:]  # bit-identical: same data order, augmentation, weights, Adam state
    a = load_checkpoint(tmp_path / "straight" / "last.safetensors")
    b = load_checkpoint(tmp_path / "resumed" / "last.safetensors")
    assert parameters_sha256(a.model) == parameters_sha256(b.model)
    assert b.metadata["step"] == 7 and b.metadata["train_config"]["preset"] == "tiny"
    # The run folder documents itself; the CSV has one row per step across both calls.
    assert TrainConfig.load(tmp_path / "resumed" / "config.json") == config
    rows = (tmp_path / "resumed" / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 7 and rows[0].startswith("step,epoch,lr,total")
    assert any((tmp_path / "resumed" / "tensorboard").iterdir())


def test_the_loss_falls_and_checkpoints_are_written(tiny_data: Path, tmp_path: Path) -> None:
    config = _config(tiny_data, steps=6, checkpoint_every=3, pairs=False, sigma_mode="adaptive",
                     val_annotations=str(tiny_data / "annotations.json"), val_images=str(tiny_data / "images"))
    result = train(config, tmp_path / "run")
    # Validation AP at each checkpoint keeps the best weights.
    assert result.best_metric is not None and 0.0 <= result.best_metric <= 1.0
    best = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert best.metadata["AP"] == result.best_metric and best.metadata["step"] in (3, 6)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step_0000003.safetensors", "step_0000006.safetensors"]
    assert all(torch.isfinite(torch.tensor(result.losses)))
    with pytest.raises(UserFacingError, match="already holds a run"):
        train(config, tmp_path / "run")
    with pytest.raises(UserFacingError, match="nothing to resume"):
        train(config, tmp_path / "empty", resume=True)


def test_mirror_weight_reaches_the_loss_through_the_data_sets_schema(tiny_data: Path, tmp_path: Path) -> None:
    plain = train(_config(tiny_data, steps=1), tmp_path / "plain")
    config = _config(tiny_data, steps=1)
    mirrored = train(replace(config, loss=replace(config.loss, heatmap_mirror=9.0)), tmp_path / "mirror")
    # The same first forward pass (same seed and weights): pixels at the other side's joints now weigh 10x.
    assert mirrored.losses[0] > plain.losses[0]
    with pytest.raises(UserFacingError, match="mirror weights must be 0"):
        replace(config, loss=replace(config.loss, heatmap_mirror=-1.0))


def test_learning_rate_schedule_and_presets() -> None:
    paper = PRESETS["paper"]
    assert paper.lr == 2e-4 and paper.optimizer == "adam" and paper.model.num_stacks == 4
    assert learning_rate_factor(paper, 0) == 1.0
    assert learning_rate_factor(paper, paper.lr_decay_steps[0]) == pytest.approx(0.1)
    small = preset("small", steps=1000)
    assert small.lr_decay_steps == (750,)
    warm = replace(small, warmup_steps=10)
    assert learning_rate_factor(warm, 4) == pytest.approx(0.5)
    assert TrainConfig.from_dict(json.loads(json.dumps(small.to_dict()))) == small
    with pytest.raises(UserFacingError, match="unknown preset"):
        preset("huge")


@pytest.mark.slow
def test_two_process_torchrun_keeps_ranks_identical(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "main.py"), "train", "--preset", "tiny", "--data", str(tiny_data / "annotations.json"),
               "--images", str(tiny_data / "images"), "--out", str(out), "--steps", "3", "--batch-size", "1",
               "--workers", "0"]
    completed = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((out / "ranks" / f"rank_{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 3
    assert ranks[0]["parameters_sha256"] == ranks[1]["parameters_sha256"]
    # The saved weights are the ones every rank holds, and they moved away from the initialisation.
    saved = load_checkpoint(out / "last.safetensors").model
    assert parameters_sha256(saved) == ranks[0]["parameters_sha256"]
    torch.manual_seed(0)
    from tagtrack.model.hourglass import HourglassNet

    assert parameters_sha256(HourglassNet(saved.config)) != ranks[0]["parameters_sha256"]


# How long the stop tests wait for a `train` process: a guard against a hang, not a speed check. A fresh process
# (imports, data set, first steps) takes seconds alone and minutes on a machine loaded by other runs.
PATIENCE = 600


def _cli_train(data: Path, out: Path) -> list[str]:
    return [sys.executable, str(REPO / "main.py"), "train", "--preset", "tiny", "--data",
            str(data / "annotations.json"), "--images", str(data / "images"), "--out", str(out)]


def _start_long_run(command: list[str], *extra: str) -> subprocess.Popen:
    """The run of `command` for far more steps than a test waits for, checkpoints only when it stops."""
    return subprocess.Popen([*command, "--steps", "100000", "--checkpoint-every", "100000", *extra], cwd=REPO,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _steps_logged(out: Path, rows: int = 3) -> bool:
    log = out / "log.csv"
    return log.is_file() and len(log.read_text().splitlines()) >= rows


def _saved_step_resumes(command: list[str], out: Path) -> int:
    """The step a stopped run saved (weights and state agree on it); the run resumed from it trains 2 more."""
    step = torch.load(out / "last.state.pt", weights_only=True)["step"]
    assert load_checkpoint(out / "last.safetensors").metadata["step"] == step
    resumed = subprocess.run([*command, "--steps", str(step + 2), "--resume"], cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=PATIENCE)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"trained {step + 2} steps" in resumed.stdout
    return step


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = _cli_train(tiny_data, out)
    process = _start_long_run(command)
    try:
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline and not _steps_logged(out):  # wait until a few steps are logged
            time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=PATIENCE)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-2000:]
    assert "continue with --resume" in stdout
    assert "Traceback" not in stderr
    assert _saved_step_resumes(command, out) >= 5


def _live_children(pid: int) -> list[int]:
    """The child processes of `pid` that can still be killed (not zombies: exited, waiting to be reaped)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    live = []
    for child in children.read_text().split() if children.is_file() else []:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):  # gone meanwhile
            continue
        if state not in ("Z", "X"):
            live.append(int(child))
    return live


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the worker process through /proc (Linux)")
def test_a_killed_data_worker_ends_in_one_line_with_the_state_saved(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = _cli_train(tiny_data, out)
    process = _start_long_run(command, "--workers", "1")
    try:
        deadline = time.monotonic() + PATIENCE
        killed: list[int] = []
        while time.monotonic() < deadline and process.poll() is None:
            if _steps_logged(out):
                # The loader's worker (a new one each epoch). One that had already exited at the end of an epoch
                # cannot be killed, so the next epoch's worker is killed too; the run must end at the first kill
                # that lands, with the state saved.
                for child in _live_children(process.pid):
                    os.kill(child, signal.SIGKILL)
                    killed.append(child)
            time.sleep(0.2)
        rows = len((out / "log.csv").read_text().splitlines()) if (out / "log.csv").is_file() else 0
        assert killed, f"no data-loading worker found (log rows {rows}, run exit code {process.poll()})"
        stdout, stderr = process.communicate(timeout=PATIENCE)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
    error_lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "DataLoader worker" in error_lines[0] and "--resume" in error_lines[0], stderr
    assert any(f" {pid})" in error_lines[0] for pid in killed), (error_lines[0], killed)  # the worker killed
    step = _saved_step_resumes(command, out)
    assert step >= 2 and f"saved step {step}" in error_lines[0]


def test_a_dead_worker_is_raised_between_steps_never_inside_one() -> None:
    """torch's own SIGCHLD handler raises a dead worker's error at whatever line runs then (inside a step: half an
    optimiser update saved; inside an __exit__ or __del__: a traceback); the loop's batches raise it at the next
    batch instead, naming the worker, even for batches it had already queued (their memory went with it)."""
    import multiprocessing

    from torch.utils.data import DataLoader

    from tagtrack.training.train import _loader_batches

    before = set(multiprocessing.active_children())
    batches = _loader_batches(DataLoader(list(range(8)), batch_size=1, num_workers=1))
    try:
        next(batches)
        (worker,) = set(multiprocessing.active_children()) - before
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(10)  # the worker is gone; SIGCHLD has come
        spin_until = time.monotonic() + 0.5  # "the step": Python code running after the signal, undisturbed
        while time.monotonic() < spin_until:
            sum(range(100))
        with pytest.raises(RuntimeError, match=rf"^DataLoader worker \(pid(\(s\))? {worker.pid}\) "):
            next(batches)
    finally:
        batches.close()
    assert set(multiprocessing.active_children()) <= before


@pytest.mark.parametrize("text, message", [
    (None, "training config not found: .*config.json"),
    ("{model: 1", "training config .*config.json is not valid JSON"),
    (b"\xff\xfe{}", "training config .*config.json is not valid JSON"),
    ("[1, 2]", "bad training config .*config.json: expected a JSON object, got list"),
    ('{"steps": 1, "colour": "red"}', "unknown training config fields: \\['colour'\\]"),
    ('{"model": {"width": "wide"}}', "bad training config"),
])
def test_a_bad_training_config_is_one_line_naming_the_file(tmp_path: Path, text, message) -> None:
    path = tmp_path / "config.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(UserFacingError, match=message):
        TrainConfig.load(path)
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(UserFacingError, match="training config .*folder.json is not a file"):
        TrainConfig.load(tmp_path / "folder.json")


def test_cli_reports_bad_data_in_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    completed = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "train", "--preset", "tiny", "--data", str(broken), "--images",
         str(tmp_path), "--out", str(tmp_path / "run")], cwd=REPO, env=_env(), capture_output=True, text=True,
        timeout=120)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1].startswith("error: annotation file ")
    assert "is not valid JSON" in completed.stderr
    assert "broken.json" in completed.stderr and "Traceback" not in completed.stderr


@pytest.mark.slow
def test_overfit_tiny_synthetic_dataset_reaches_high_coco_ap(tmp_path: Path) -> None:
    """Done-means of the training issue: a small model overfits 4 generated images in a few hundred CPU steps."""
    evaluate = pytest.importorskip("tagtrack.training.evaluate")
    from tagtrack.model.config import ModelConfig
    from tagtrack.training.config import AugmentConfig
    from tagtrack.training.synthetic import OVERFIT_SCENE

    annotations = generate_dataset(tmp_path / "data", num_images=4, config=OVERFIT_SCENE, seed=0)
    steps = 200  # about 150 already reach AP 1.0; one thread (autouse fixture) avoids OpenMP spinning under load
    config = replace(
        preset("tiny", train_annotations=str(annotations), train_images=str(tmp_path / "data" / "images")),
        model=ModelConfig(num_stacks=1, width=32, tag_dim=1, input_height=128, input_width=128),
        augment=AugmentConfig.off(), pairs=False, batch_size=4, lr=3e-3, steps=steps,
        lr_decay_steps=(int(steps * 0.8),), sigma=2.0, clip_grad_norm=0.0, checkpoint_every=steps, log_every=50,
    )
    result = train(config, tmp_path / "run")
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < first / 10, (first, last)
    metrics = evaluate.evaluate_checkpoint(tmp_path / "run" / "last.safetensors", str(annotations),
                                           tmp_path / "data" / "images", progress=False)
    assert metrics["AP"] >= 0.9, metrics


def test_training_benchmark_measures_steps() -> None:
    from tagtrack.bench.train import benchmark_training

    result = benchmark_training("tiny", steps=2, batch_size=2, threads=1, warmup=1)
    assert len(result.seconds_per_step) == 2 and all(t > 0 for t in result.seconds_per_step)
    assert result.batch_images == 4  # 2 images x 2 views
    assert result.images_per_second >= result.median_images_per_second > 0
    assert "images/s" in result.summary() and "64x64" in result.summary()


def test_bench_train_command_runs_in_a_fresh_process() -> None:
    completed = subprocess.run([sys.executable, str(REPO / "main.py"), "bench", "train", "--preset", "tiny", "--steps",
                                "1", "--batch-size", "1", "--threads", "1"], cwd=REPO, env=_env(), capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.startswith("train tiny 64x64 on ")


def _loss_option_config(name: str) -> TrainConfig:
    """The tiny preset with a loss option that bench train and the GPU run's timing once refused (ValueError)."""
    tiny = preset("tiny")
    if name == "mirror":  # the recipe's phases 8-9: the heatmap's mirror (and foreground) weight
        return replace(tiny, loss=replace(tiny.loss, heatmap_mirror=9.0, heatmap_foreground=1.0))
    if name == "embedding":  # Wang et al.'s scale-adaptive heatmaps: targets drawn from the keypoints in the loss
        return replace(tiny, model=replace(tiny.model, tag_dim=4), sigma_mode="embedding", scale_loss="wang",
                       loss=replace(tiny.loss, scale=1e-3))
    # the imported-teacher stage: only the tag head learns, channels-last
    return replace(tiny, trainable=("stacks.0.tag_head.",), channels_last=True, optimizer="adamw")


@pytest.mark.parametrize("name", ["mirror", "embedding", "tag-head-only"])
def test_bench_train_and_the_gpu_runs_timing_take_every_loss_option(name: str) -> None:
    from tagtrack.bench.gpu.run import training_step_rate
    from tagtrack.bench.train import benchmark_config

    config = _loss_option_config(name)
    result = benchmark_config(config, name, steps=1, batch_size=2, threads=1, warmup=1)
    assert len(result.seconds_per_step) == 1 and result.batch_images == 4
    assert result.summary().startswith(f"train {name} 64x64")
    row = training_step_rate(replace(config, batch_size=2), torch.device("cpu"), amp=False, warmup=1, steps=1)
    assert row["images_per_step"] == 4 and row["images_per_s"] > 0


def test_the_training_step_learns_only_the_trainable_parameters() -> None:
    """training.step as train, bench train and the GPU run build it: frozen parameters stay, the others move."""
    from tagtrack.bench.gpu.run import one_training_batch
    from tagtrack.model.networks import build_network
    from tagtrack.training.step import TrainingStep, all_stacks, build_optimizer, learning_parameters

    config = replace(_loss_option_config("tag-head-only"), batch_size=2)
    batch, flip_index = one_training_batch(config, torch.device("cpu"))
    assert batch["images"].is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    model = build_network(config.model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    parameters = learning_parameters(model, config.trainable)
    optimizer = build_optimizer(parameters, config)
    assert isinstance(optimizer, torch.optim.AdamW)
    step = TrainingStep.for_config(config, all_stacks(model, config), parameters, optimizer,
                                   torch.amp.GradScaler("cuda", enabled=False), flip_index)
    terms = step(batch)
    assert set(terms.parts) >= {"total", "heatmap", "pull", "push", "cross_pull", "cross_push"}
    for name, parameter in model.named_parameters():
        moved = not torch.equal(parameter, before[name])
        assert moved == name.startswith("stacks.0.tag_head."), name
    nan_batch = dict(batch, images=torch.full_like(batch["images"], float("nan")))
    with pytest.raises(UserFacingError, match="loss became nan at step 7; lower --lr"):
        step(nan_batch, 7)


def test_pairs_of_clip_frames_feed_the_cross_view_loss(tmp_path: Path) -> None:
    from tagtrack.training.synthetic import generate_clips

    annotations = generate_clips(tmp_path / "clips", num_clips=2, frames_per_clip=3,
                                 config=SceneConfig(width=64, height=64, min_people=2, max_people=2), seed=1)
    config = preset("tiny", train_annotations=str(annotations), train_images=str(tmp_path / "clips" / "images"),
                    steps=2, log_every=1)
    train(config, tmp_path / "run")
    import csv

    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert len(rows) == 2
    # Two people per frame: the same person across frames is pulled, the other one pushed.
    assert all(float(row["cross_pull"]) > 0 and float(row["cross_push"]) > 0 for row in rows)


def test_fine_tuning_starts_from_the_given_weights(tiny_data: Path, tmp_path: Path) -> None:
    config = _config(tiny_data, steps=3, pairs=False)
    base = train(config, tmp_path / "base")
    tuned_config = replace(config, init_weights=str(base.last_checkpoint), lr=0.0, warmup_steps=0)
    train(tuned_config, tmp_path / "tuned")  # lr 0: the weights must come out as they went in
    before = load_checkpoint(base.last_checkpoint)
    after = load_checkpoint(tmp_path / "tuned" / "last.safetensors")
    # BatchNorm running statistics move even at lr 0, so compare the trained parameters only.
    for (name, a), (_, b) in zip(before.model.named_parameters(), after.model.named_parameters()):
        assert torch.equal(a, b), name
    fresh = train(replace(config, lr=0.0, warmup_steps=0), tmp_path / "fresh")
    assert parameters_sha256(load_checkpoint(fresh.last_checkpoint).model) != parameters_sha256(before.model)
    other = replace(config, init_weights=str(base.last_checkpoint), model=replace(config.model, width=16))
    with pytest.raises(UserFacingError, match="network, but this run trains"):
        train(other, tmp_path / "other")
    # A wider network of the same shape starts from the narrower one's weights (embedded, see
    # hourglass.widened_state_dict); at lr 0 they come out as they went in.
    wider = replace(tuned_config, model=replace(config.model, width=config.model.width + 16))
    train(wider, tmp_path / "wider")
    widened = load_checkpoint(tmp_path / "wider" / "last.safetensors").model
    for (name, a), (_, b) in zip(before.model.named_parameters(), widened.named_parameters()):
        assert torch.equal(b[tuple(slice(0, size) for size in a.shape)], a), name
    assert widened.config.width == config.model.width + 16
    # A stride-2 network (the finer heatmap head) starts from the stride-4 one's weights everywhere but that head
    # (hourglass.refined_state_dict), and trains toward targets at its own, finer maps (lr 0: nothing moves).
    train(replace(tuned_config, model=replace(config.model, output_stride=2)), tmp_path / "finer")
    refined = load_checkpoint(tmp_path / "finer" / "last.safetensors").model
    with torch.no_grad():
        heatmaps, _ = refined(torch.rand(1, 3, 64, 64))
    assert refined.config.output_stride == 2 and heatmaps.shape[-2:] == (32, 32)
    trunk = dict(refined.named_parameters())
    for name, a in before.model.named_parameters():
        assert torch.equal(a, trunk[name]), name
    assert not refined.fine.head.weight.any()  # the head's zero start


def test_cli_init_takes_the_network_from_the_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    base = train(_config(tiny_data, steps=1, pairs=False, model=replace(PRESETS["tiny"].model, tag_dim=2)),
                 tmp_path / "base")
    completed = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "train", "--preset", "tiny", "--data",
         str(tiny_data / "annotations.json"), "--images", str(tiny_data / "images"), "--out", str(tmp_path / "run"),
         "--steps", "1", "--workers", "0", "--no-pairs", "--init", str(base.last_checkpoint)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    saved = TrainConfig.load(tmp_path / "run" / "config.json")
    assert saved.model.tag_dim == 2 and saved.init_weights == str(base.last_checkpoint)
    # A --config naming the same network made wider keeps its width (the weights are embedded).
    wider = replace(_config(tiny_data, steps=1, pairs=False), model=replace(PRESETS["tiny"].model, tag_dim=2, width=48))
    wider.save(tmp_path / "wider.json")
    completed = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "-v", "train", "--config", str(tmp_path / "wider.json"),
         "--out", str(tmp_path / "wide"), "--init", str(base.last_checkpoint)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert TrainConfig.load(tmp_path / "wide" / "config.json").model.width == 48
    assert "widened from" in completed.stderr
    missing = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "train", "--preset", "tiny", "--data",
         str(tiny_data / "annotations.json"), "--images", str(tiny_data / "images"), "--out", str(tmp_path / "r2"),
         "--init", str(tmp_path / "nope.safetensors")], cwd=REPO, env=_env(), capture_output=True, text=True,
        timeout=300)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: checkpoint not found")


def test_checkpoints_store_the_data_sets_schema_and_settings(tiny_data: Path, tmp_path: Path) -> None:
    """A data set with its own five keypoints: the checkpoints name them (not COCO-17), with the run's settings."""
    data = json.loads((tiny_data / "annotations.json").read_text())
    names = ["nose", "left_shoulder", "right_shoulder", "left_hip", "right_hip"]
    keep = [0, 5, 6, 11, 12]
    data["categories"] = [{"id": 1, "name": "person", "keypoints": names, "skeleton": [[2, 3], [2, 4], [3, 5]]}]
    for annotation in data["annotations"]:
        if "keypoints" in annotation:
            triples = [annotation["keypoints"][3 * k:3 * k + 3] for k in keep]
            annotation["keypoints"] = [value for triple in triples for value in triple]
            annotation["num_keypoints"] = sum(triple[2] > 0 for triple in triples)
    (tmp_path / "five.json").write_text(json.dumps(data))
    config = _config(tiny_data, train_annotations=str(tmp_path / "five.json"), steps=2,
                     settings={"decode": {"top_k": 12}, "tracker": {"tag_gate": 2.0}})
    config = replace(config, model=replace(config.model, num_keypoints=5))
    train(config, tmp_path / "run")
    loaded = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert list(loaded.schema.keypoint_names) == names and loaded.schema.flip_index == (0, 2, 1, 4, 3)
    assert loaded.schema.skeleton == ((1, 2), (1, 3), (2, 4))
    assert loaded.settings["decode"]["top_k"] == 12 and loaded.settings["decode"]["tag_threshold"] == 1.0
    assert loaded.settings["tracker"] == {"tag_gate": 2.0}
    with pytest.raises(UserFacingError, match="5 keypoints .* the network predicts 17"):
        train(_config(tiny_data, train_annotations=str(tmp_path / "five.json")), tmp_path / "mismatch")
    # COCO's own keypoint names give COCO17 itself
    coco = load_checkpoint(train(_config(tiny_data, steps=1), tmp_path / "coco").last_checkpoint)
    assert coco.schema.name == "coco17"


def test_eval_every_sets_when_the_validation_ap_is_taken(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    from tagtrack.training import train as train_module

    evaluated = []

    def fake_evaluate(weights, config, device):  # the real one runs COCO AP; here only the steps matter
        step = load_checkpoint(weights).metadata["step"]
        evaluated.append(step)
        return 0.1 * step

    monkeypatch.setattr(train_module, "_evaluate", fake_evaluate)
    config = _config(tiny_data, steps=5, val_annotations="val.json", val_images="images", eval_every=2)
    result = train(config, tmp_path / "run")
    assert evaluated == [2, 4, 5] and result.best_metric == pytest.approx(0.5)
    assert load_checkpoint(tmp_path / "run" / "best.safetensors").metadata["step"] == 5
    evaluated.clear()
    train(replace(config, eval_every=0, checkpoint_every=3), tmp_path / "at_checkpoints")
    assert evaluated == [3, 5]
    # A config.json written before settings and eval_every existed still loads.
    old = {key: value for key, value in config.to_dict().items() if key not in ("settings", "eval_every")}
    assert TrainConfig.from_dict(old) == replace(config, eval_every=0)


def test_self_distilled_targets_are_the_starting_networks_own_maps(tiny_data: Path, tmp_path: Path) -> None:
    from tagtrack.model.checkpoint import save_checkpoint
    from tagtrack.model.schema import COCO17
    from tagtrack.model.teacher_import import mobilenet_fpn_config
    from tagtrack.training.losses import LossWeights
    from tests.conftest import tiny_network

    model = mobilenet_fpn_config(PRESETS["tiny"].model.tag_dim, COCO17.num_keypoints, (64, 64))
    start = save_checkpoint(tmp_path / "start.safetensors", tiny_network(config=model), COCO17)
    heatmap_only = LossWeights(pull=0.0, push=0.0, cross_pull=0.0, cross_push=0.0, scale=0.0)
    config = _config(tiny_data, model=model, steps=1, loss=heatmap_only, init_weights=str(start))
    # Zoom 1: the first step's targets are the network's own maps (no batch norm in this family), so nothing to
    # learn; the data's targets are far from a random network's maps.
    assert train(replace(config, self_distill_zoom=1), tmp_path / "own").losses == [0.0]
    assert train(config, tmp_path / "data").losses[0] > 0.01
    assert train(replace(config, self_distill_zoom=2), tmp_path / "zoomed").losses[0] > 0.0
    with pytest.raises(UserFacingError, match="--init"):
        train(replace(config, self_distill_zoom=2, init_weights=""), tmp_path / "no-start")
    # Starting weights whose maps are at another stride cannot be the targets of a stride-2 run.
    coarse = save_checkpoint(tmp_path / "coarse.safetensors", tiny_network(), COCO17)
    finer = replace(config, model=replace(PRESETS["tiny"].model, output_stride=2), init_weights=str(coarse))
    with pytest.raises(UserFacingError, match="output stride 4, the run 2"):
        train(replace(finer, self_distill_zoom=1), tmp_path / "strides")
