"""Inference engines: torch / ONNX Runtime agreement, backend choice, ONNX and TensorRT caches, `export` CLI."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tagtrack import main
from tagtrack.model.config import TINY
from tagtrack.model.errors import UserFacingError
from tagtrack.realtime import engines
from tagtrack.realtime import tensorrt_engine
from tagtrack.realtime.engine_parts import infer_in_fixed_batches
from tagtrack.realtime.engines import OnnxRuntimeEngine, TorchEngine, create_engine, default_cache_dir
from tagtrack.realtime.tensorrt_engine import TensorRTEngine, engine_cache_key, tensorrt_usable
from tagtrack.tracker.mot_eval import read_pose_frames
from tests.conftest import save_tiny_checkpoint
from tests.test_sources import write_video

TRT_REASON = tensorrt_usable()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def cache_dir(tmp_path) -> Path:
    """An empty cache, for tests about caching."""
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One cache for the tests that only need an ONNX file: each export costs seconds."""
    return tmp_path_factory.mktemp("shared") / "cache"


def random_batch(count: int, height: int = TINY.input_height, width: int = TINY.input_width) -> np.ndarray:
    return np.random.default_rng(7).random((count, 3, height, width), dtype=np.float32)


def assert_torch_and_onnxruntime_agree(weights: Path, cache: Path, map_hw: tuple[int, int]) -> None:
    """Both engines of WEIGHTS give maps of map_hw (TINY's keypoints and tag length) that agree."""
    torch_engine = create_engine("torch", weights, device="cpu", cache_dir=cache)
    ort_engine = create_engine("ort", weights, device="cpu", cache_dir=cache)
    assert isinstance(torch_engine, TorchEngine) and isinstance(ort_engine, OnnxRuntimeEngine)
    assert torch_engine.input_hw == ort_engine.input_hw == (TINY.input_height, TINY.input_width)
    batch = random_batch(1)
    torch_heatmaps, torch_tags = torch_engine.infer(batch)
    ort_heatmaps, ort_tags = ort_engine.infer(batch)
    k, dim = TINY.num_keypoints, TINY.tag_dim
    assert torch_heatmaps.shape == ort_heatmaps.shape == (1, k, *map_hw)
    assert torch_tags.shape == ort_tags.shape == (1, k, dim, *map_hw)
    assert ort_heatmaps.dtype == torch_heatmaps.dtype == np.float32
    assert np.abs(torch_heatmaps).max() > 1e-3  # random weights still give non-trivial maps
    np.testing.assert_allclose(ort_heatmaps, torch_heatmaps, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ort_tags, torch_tags, atol=1e-4, rtol=0)
    # Random-weight heatmaps are small (~1e-2), so also hold them to 1e-4 of their own scale.
    assert np.abs(ort_heatmaps - torch_heatmaps).max() <= 1e-4 * np.abs(torch_heatmaps).max()
    torch_engine.close()
    ort_engine.close()


def test_torch_and_onnxruntime_give_the_same_maps(family_weights, shared_cache):
    assert_torch_and_onnxruntime_agree(family_weights, shared_cache, (TINY.output_height, TINY.output_width))


def test_a_stride_2_network_runs_through_onnxruntime_and_tagtrack_run(tmp_path, shared_cache):
    # A finer heatmap head (output stride 2): ONNX Runtime computes its maps as torch does, and `run` maps its
    # joints back onto the frame at that stride.
    weights = save_tiny_checkpoint(tmp_path / "fine.safetensors", config=replace(TINY, output_stride=2), lively=True)
    assert_torch_and_onnxruntime_agree(weights, shared_cache, (TINY.input_height // 2, TINY.input_width // 2))

    video = write_video(tmp_path / "clip.avi", 3, size_hw=(128, 128), fps=10.0)  # the input's shape: no padding
    poses = tmp_path / "poses.jsonl"
    assert main.main(["run", str(video), "--weights", str(weights), "--engine", "ort", "--no-video",
                      "--json", str(poses), "--detection-threshold", "0.0", "-q"]) == 0
    frames = read_pose_frames(poses)
    joints = np.concatenate([pose.keypoints[pose.keypoints[:, 2] > 0, :2] for frame in frames for pose in frame.poses])
    assert len(frames) == 3 and len(joints) > 0
    # On the frame (a stride-4 mapping of stride-2 maps would put them up to twice as far from the origin).
    assert joints.min() >= -1 and joints.max() <= 128
    assert joints[:, 0].max() > 64 and joints[:, 1].max() > 64  # and spread over it, not squeezed into a quarter


def test_static_batch_engine_accepts_any_batch(family_weights, shared_cache):
    """The ONNX export has batch 1; a batch of 3 is run in chunks and gives each image's own maps (agreement with
    torch is the test above)."""
    ort_engine = create_engine("ort", family_weights, device="cpu", cache_dir=shared_cache)
    assert ort_engine.batch_size == 1
    batch = random_batch(3)
    heatmaps, tags = ort_engine.infer(batch)
    assert heatmaps.shape[0] == tags.shape[0] == 3
    for index in range(3):
        one_heatmaps, one_tags = ort_engine.infer(batch[index:index + 1])
        np.testing.assert_array_equal(heatmaps[index:index + 1], one_heatmaps)
        np.testing.assert_array_equal(tags[index:index + 1], one_tags)
    with pytest.raises(ValueError, match="expected a batch"):
        ort_engine.infer(random_batch(1, 64, 128))


def test_fixed_batch_chunks_and_pads():
    seen = []

    def run(chunk):
        seen.append(chunk.shape[0])
        summed = chunk.sum(axis=(1, 2, 3))
        return summed[:, None], summed[:, None, None]

    batch = np.arange(5 * 3 * 2 * 2, dtype=np.float32).reshape(5, 3, 2, 2)
    heatmaps, tags = infer_in_fixed_batches(batch, 2, run)
    assert seen == [2, 2, 2]  # the last chunk of one image was padded to the static batch
    np.testing.assert_array_equal(heatmaps[:, 0], batch.sum(axis=(1, 2, 3)))
    assert tags.shape == (5, 1, 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU, so auto may pick TensorRT")
def test_auto_picks_onnxruntime_without_gpu(family_weights, shared_cache):
    engine = create_engine("auto", family_weights, cache_dir=shared_cache)
    assert isinstance(engine, OnnxRuntimeEngine)
    assert engine.name == "onnxruntime (CPUExecutionProvider)"


def test_auto_falls_back_to_torch_when_onnx_export_fails(family_weights, cache_dir, monkeypatch, caplog):
    from tagtrack.model import export as model_export

    def broken_export(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(model_export, "export_onnx", broken_export)
    with caplog.at_level(logging.WARNING, logger="tagtrack.realtime.engines"):
        engine = create_engine("auto", family_weights, device="cpu", cache_dir=cache_dir)
    assert isinstance(engine, TorchEngine)
    assert "exporter crashed" in caplog.text


def test_onnx_export_is_cached(family_weights, cache_dir, monkeypatch):
    from tagtrack.model import export as model_export

    calls = []
    real_export = model_export.export_onnx

    def counting_export(*args, **kwargs):
        calls.append(args[2:4])
        return real_export(*args, **kwargs)

    monkeypatch.setattr(model_export, "export_onnx", counting_export)
    first = create_engine("ort", family_weights, device="cpu", cache_dir=cache_dir)
    files = list((cache_dir / "onnx").glob("*.onnx"))
    assert len(files) == 1 and calls == [(64, 64)]
    mtime = files[0].stat().st_mtime_ns
    second = create_engine("ort", family_weights, device="cpu", cache_dir=cache_dir)
    assert calls == [(64, 64)], "second start re-exported the ONNX"
    assert files[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first.infer(random_batch(1))[0], second.infer(random_batch(1))[0])
    other = create_engine("ort", family_weights, device="cpu", input_hw=(64, 128), cache_dir=cache_dir)
    assert calls == [(64, 64), (64, 128)] and other.input_hw == (64, 128)
    assert len(list((cache_dir / "onnx").glob("*.onnx"))) == 2
    assert not list((cache_dir / "onnx").glob("*.tmp*")), "temporary export left behind"


def test_cache_dir_comes_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TAGTRACK_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("TAGTRACK_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "tagtrack"


def test_engine_cache_key_changes_with_each_input():
    base = dict(onnx_sha256="a" * 64, gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0),
                trt_version="10.3.0", precision="fp16", input_shape=(1, 3, 256, 384))
    key = engine_cache_key(**base)
    assert engine_cache_key(**base) == key  # stable
    assert engine_cache_key(**dict(reversed(list(base.items())))) == key
    changes = dict(onnx_sha256="b" * 64, gpu_name="NVIDIA GeForce RTX 4090", compute_capability=(8, 9),
                   trt_version="10.4.0", precision="fp32", input_shape=(1, 3, 256, 448))
    keys = {key}
    for field, value in changes.items():
        changed = engine_cache_key(**{**base, field: value})
        assert changed != key, field
        keys.add(changed)
    assert len(keys) == len(changes) + 1
    # A different GPU with the same compute capability still gets its own engine.
    assert engine_cache_key(**{**base, "gpu_name": "NVIDIA H100 PCIe"}) != key
    assert key.startswith("sm90-trt10.3.0-fp16-1x3x256x384-")
    with pytest.raises(ValueError):
        engine_cache_key(**{**base, "precision": "int8"})


def test_bad_kind_and_device_are_user_errors(family_weights, cache_dir):
    with pytest.raises(UserFacingError, match="unknown engine"):
        create_engine("tensorflow", family_weights, cache_dir=cache_dir)
    with pytest.raises(UserFacingError, match="unknown device"):
        create_engine("torch", family_weights, device="tpu", cache_dir=cache_dir)
    with pytest.raises(UserFacingError, match="multiples of 64"):
        create_engine("torch", family_weights, input_hw=(100, 64), cache_dir=cache_dir)
    if not torch.cuda.is_available():
        with pytest.raises(UserFacingError, match="no CUDA GPU"):
            create_engine("torch", family_weights, device="cuda", cache_dir=cache_dir)


def test_onnxruntime_on_cuda_needs_the_gpu_package(family_weights, shared_cache, monkeypatch):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    create_engine("ort", family_weights, device="cpu", cache_dir=shared_cache).close()  # fills the ONNX cache
    onnx_file = next((shared_cache / "onnx").glob("*.onnx"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # pretend a GPU, keep the CPU-only ORT
    with pytest.raises(UserFacingError, match="onnxruntime-gpu"):
        OnnxRuntimeEngine(onnx_file, "cuda")


def test_torch_fp16_on_cpu_falls_back_to_fp32(family_weights, caplog):
    from tagtrack.model.checkpoint import load_checkpoint

    model = load_checkpoint(family_weights).model
    with caplog.at_level(logging.WARNING, logger="tagtrack.realtime.engines"):
        engine = TorchEngine(model, device="cpu", fp16=True)
    assert "fp16 needs CUDA" in caplog.text
    assert not engine.fp16 and engine.name == "torch (cpu, fp32)"
    heatmaps, _ = engine.infer(random_batch(1))
    assert heatmaps.dtype == np.float32


@pytest.mark.skipif(TRT_REASON is None, reason="TensorRT is usable here; the missing-TensorRT path cannot be shown")
def test_engine_trt_without_tensorrt_is_a_clear_error(family_weights, cache_dir, tmp_path, capsys):
    with pytest.raises(UserFacingError, match="--engine trt"):
        create_engine("trt", family_weights, device="cpu", cache_dir=cache_dir)
    code = main.main(["export", "--weights", str(family_weights), "--onnx", str(tmp_path / "m.onnx"),
                      "--trt", str(tmp_path / "m.engine")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: --trt: ")
    assert not (tmp_path / "m.onnx").exists(), "should fail before spending time on the export"


def test_export_cli_writes_a_valid_onnx(family_weights, tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    code = main.main(["export", "--weights", str(family_weights), "--onnx", str(out),
                      "--input-size", "64", "128", "--batch", "2"])
    stdout = capsys.readouterr().out
    assert code == 0
    onnx.checker.check_model(onnx.load(str(out)))
    assert "images [2, 3, 64, 128]" in stdout
    assert "heatmaps [2, 17, 16, 32]" in stdout and "tags [2, 17, 1, 16, 32]" in stdout
    engine = OnnxRuntimeEngine(out, "cpu")
    assert engine.batch_size == 2 and engine.input_hw == (64, 128)
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"]


@pytest.mark.parametrize("case", ["missing weights", "corrupt weights", "missing folder", "output is a folder",
                                  "bad input size", "fp16 without trt"])
def test_export_cli_bad_input_is_one_line(case, family_weights, tmp_path, capsys):
    weights, out, extra = family_weights, tmp_path / "m.onnx", []
    if case == "missing weights":
        weights = tmp_path / "nope.safetensors"
    elif case == "corrupt weights":
        weights = tmp_path / "corrupt.safetensors"
        weights.write_bytes(b"\x00not a checkpoint" * 50)
    elif case == "missing folder":
        out = tmp_path / "no" / "such" / "m.onnx"
    elif case == "output is a folder":
        out = tmp_path
    elif case == "bad input size":
        extra = ["--input-size", "65", "64"]
    elif case == "fp16 without trt":
        extra = ["--fp16"]
    code = main.main(["export", "--weights", str(weights), "--onnx", str(out), *extra])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*tmp"))


@pytest.mark.gpu
@pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT test needs an NVIDIA GPU and tensorrt: {TRT_REASON}")
@pytest.mark.parametrize("fp16", [False, True])
def test_tensorrt_engine_builds_caches_and_matches_torch(fp16, family_weights, cache_dir, caplog):
    engine = create_engine("trt", family_weights, device="cuda", fp16=fp16, cache_dir=cache_dir)
    assert isinstance(engine, TensorRTEngine)
    engine_files = list((cache_dir / "trt").glob("*.engine"))
    assert len(engine_files) == 1 and ("fp16" if fp16 else "fp32") in engine_files[0].name
    assert list((cache_dir / "trt").glob("timing-*.cache"))
    batch = random_batch(2)
    heatmaps, tags = engine.infer(batch)
    reference = create_engine("torch", family_weights, device="cpu", cache_dir=cache_dir)
    expected_heatmaps, expected_tags = reference.infer(batch)
    tolerance = 3e-2 if fp16 else 5e-3  # relative to each map's scale; fp32 builds may use TF32 kernels
    for got, expected in ((heatmaps, expected_heatmaps), (tags, expected_tags)):
        assert got.shape == expected.shape and got.dtype == np.float32
        assert np.abs(got - expected).max() <= tolerance * np.abs(expected).max()
    mtime = engine_files[0].stat().st_mtime_ns
    engine.close()
    with caplog.at_level(logging.INFO, logger="tagtrack.realtime.engines"):
        again = create_engine("trt", family_weights, device="cuda", fp16=fp16, cache_dir=cache_dir)
    assert "TensorRT engine cache hit" in caplog.text
    assert engine_files[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.infer(batch)[0], heatmaps)
    # A different input shape is a different engine, built beside the first.
    create_engine("trt", family_weights, device="cuda", fp16=fp16, input_hw=(64, 128), cache_dir=cache_dir)
    assert len(list((cache_dir / "trt").glob("*.engine"))) == 2


@pytest.mark.gpu
@pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT test needs an NVIDIA GPU and tensorrt: {TRT_REASON}")
def test_export_cli_builds_a_tensorrt_engine(family_weights, tmp_path, capsys):
    code = main.main(["export", "--weights", str(family_weights), "--onnx", str(tmp_path / "m.onnx"),
                      "--trt", str(tmp_path / "m.engine"), "--fp16"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "m.engine").stat().st_size > 0


def test_tensorrt_is_imported_lazily_and_pinned_like_pyproject():
    """Machines without TensorRT import the engines module without touching it; the pin matches pyproject."""
    import subprocess
    import sys

    probe = subprocess.run([sys.executable, "-c", "import sys, realtime.engines; print('tensorrt' in sys.modules)"],
                           capture_output=True, text=True, cwd=main.__file__.rsplit("/", 1)[0], check=True)
    assert probe.stdout.strip() == "False"
    pyproject = (Path(main.__file__).parent / "pyproject.toml").read_text()
    assert f'"tensorrt{tensorrt_engine.TRT_VERSION_RANGE}"' in pyproject


def test_one_table_of_engines_readable_without_torch():
    """`--engine`'s names come from realtime/backends.py, which imports no torch (nor do the parser's other
    tables: `tagtrack --help` stays fast); every name has its class, in the same order `auto` tries them."""
    import subprocess
    import sys

    from tagtrack.realtime.backends import BACKENDS, ENGINE_CHOICES

    assert list(engines.ENGINE_CLASSES) == list(BACKENDS) == ["trt", "ort", "torch"]
    assert engines.ENGINE_KINDS == ENGINE_CHOICES == ("auto", "trt", "ort", "torch")
    probe = ("import sys; from tagtrack import main; main.build_parser(); "
             "print(sorted(m for m in ('torch', 'cv2', 'tagtrack.realtime.sinks') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
    parser = main.build_parser()
    assert parser.parse_args(["run", "x.mp4", "--engine", "ort"]).engine == "ort"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "x.mp4", "--engine", "tensorflow"])


def test_export_logs_name_no_temporary(family_weights, tmp_path, capsys, caplog):
    """Info lines of `tagtrack export` name the file the user asked for, never the temporary it is written under."""
    out = tmp_path / "model.onnx"
    with caplog.at_level(logging.INFO, logger="tagtrack"):
        assert main.main(["export", "--weights", str(family_weights), "--onnx", str(out)]) == 0
    shown = [record.getMessage() for record in caplog.records if record.levelno >= logging.INFO]
    assert not [line for line in shown if "partial" in line or ".tmp" in line], shown
    assert str(out) in capsys.readouterr().out
