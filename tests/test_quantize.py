"""bench/quantize.py: int8 against fp32 ONNX Runtime on a tiny random checkpoint and a synthetic video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import save_tiny_checkpoint

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from tagtrack.bench import quantize  # noqa: E402
from tagtrack.model.errors import UserFacingError  # noqa: E402
from tagtrack.model.pose import Pose  # noqa: E402
from tagtrack.model.schema import COCO17  # noqa: E402


def write_video(path: Path, frames: int = 16) -> Path:
    """Random-noise frames, 64x96 (landscape, so the letterbox pads), MJPG."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantize")
    weights = save_tiny_checkpoint(folder / "tiny.safetensors", "mobilenet_fpn", lively=True)
    return folder, weights, write_video(folder / "noise.avi")


def args(folder: Path, weights: Path, video: Path, *extra: str) -> list[str]:
    return ["--weights", str(weights), "--calibrate", f"{video}#0:8", "--test", f"{video}#8:",
            "--frames", "4", "--calibration-frames", "4", "--repeats", "1", "--input-size", "64", "64",
            "--threads", "1", "--out-dir", str(folder / "out"), "--no-progress", *extra]


@pytest.fixture(scope="module")
def exported(setup):
    """One end-to-end run of the command: (its printout, the fp32 file, the int8 file)."""
    import contextlib
    import io

    import torch

    folder, weights, video = setup
    printed = io.StringIO()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(printed):
            assert quantize.main(args(folder, weights, video)) == 0
    finally:
        torch.set_num_threads(previous)
    return printed.getvalue(), folder / "out" / "tiny-64x64-fp32.onnx", folder / "out" / "tiny-64x64-int8.onnx"


def test_runs_end_to_end_and_identical_models_find_the_same_people(setup, exported):
    folder, weights, video = setup
    printed, fp32_path, int8_path = exported
    assert fp32_path.is_file() and int8_path.is_file()
    assert "CPU:" in printed and "fp32 " in printed and "int8 keeps accuracy: " in printed
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8_path)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops  # a QDQ model

    # The same comparison with every node left unquantised: the "int8" model computes what fp32 does, so it
    # finds exactly fp32's people, at OKS 1, and the verdict is yes.
    config = quantize.parse_args(args(folder, weights, video))
    input_hw = config.input_hw
    calibration = quantize.read_frames(config.calibrate, 4, input_hw, "calibration", progress=False)
    test = quantize.read_frames(config.test, 4, input_hw, "test", progress=False)
    assert len(calibration) == 4 and len(test) == 4
    assert not any(np.array_equal(a.network_input, b.network_input) for a in calibration for b in test)
    same_path = folder / "out" / "same.onnx"
    kept = quantize.quantize_int8(fp32_path, same_path, calibration, keep_all=True)
    assert kept == len(onnx.load(str(fp32_path)).graph.node)
    from tagtrack.model.checkpoint import load_checkpoint
    from tagtrack.realtime.engines import OnnxRuntimeEngine

    loaded = load_checkpoint(weights)
    fp32, same = (OnnxRuntimeEngine(path, "cpu", 1) for path in (fp32_path, same_path))
    comparison = quantize.compare_models(fp32, same, test, loaded.schema, loaded.settings, repeats=1, progress=False)
    assert comparison.fp32_ms > 0 and comparison.int8_ms > 0 and comparison.person_score == 0.5
    assert comparison.max_heatmap_diff < 1e-5
    matching = comparison.matching
    assert matching.fp32_people > 0  # the lively network finds "people" in noise: the check means something
    assert matching.found == matching.int8_people == matching.fp32_people
    assert matching.mean_oks == pytest.approx(1.0)
    assert matching.keeps_accuracy


def test_heads_kept_fp32_are_the_nodes_after_the_shared_features(exported):
    import onnx

    model = onnx.load(str(exported[1]))
    heads = set(quantize.head_nodes(model))
    producer = {out: node.name for node in model.graph.node for out in node.output}
    assert producer["heatmaps"] in heads and producer["tags"] in heads
    # Every node before the heads reaches both outputs; the tiny network's heads are conv-relu-conv chains.
    assert 0 < len(heads) < len(model.graph.node) / 4
    assert producer[model.graph.node[0].output[0]] not in heads


def test_matching_counts_one_to_one_pairs_at_oks_half():
    keypoints = np.zeros((COCO17.num_keypoints, 3), np.float32)
    keypoints[:, 0] = np.linspace(10, 60, COCO17.num_keypoints)
    keypoints[:, 1] = np.linspace(20, 120, COCO17.num_keypoints)
    keypoints[:, 2] = 0.9
    person = Pose(keypoints, 0.9, np.array([0, 0, 60, 130], np.float32), np.zeros(1, np.float32))
    moved = keypoints.copy()
    moved[:, 0] += 40  # far: OKS well under 0.5
    far = Pose(moved, 0.9, person.box, person.tag)
    sigmas = COCO17.sigmas_array()
    assert quantize.match_people([person], [person, person], sigmas) == [pytest.approx(1.0)]  # one to one
    assert quantize.match_people([person], [far], sigmas) == []
    assert quantize.match_people([person, far], [far], sigmas) == [pytest.approx(1.0)]
    assert quantize.match_people([person], [], sigmas) == []
    missing = keypoints.copy()
    missing[:8, 2] = 0.0  # int8 lost 8 of 17 joints: they count 0
    assert quantize.match_people([person], [Pose(missing, 0.9, person.box, person.tag)], sigmas) == [
        pytest.approx(9 / 17)]


def test_verdict_needs_people_found_within_one_percent():
    assert quantize.Matching(100, 100, 99, [1.0] * 99).keeps_accuracy
    assert not quantize.Matching(100, 100, 98, [1.0] * 98).keeps_accuracy
    assert not quantize.Matching(100, 102, 100, [1.0] * 100).keeps_accuracy  # extra people
    assert not quantize.Matching(0, 0, 0, []).keeps_accuracy  # nothing to judge by


@pytest.mark.parametrize("bad", ["weights", "video", "range", "size"])
def test_bad_input_is_one_error_line(setup, tmp_path, capfd, bad):
    folder, weights, video = setup
    argv = args(tmp_path, weights, video)
    if bad == "weights":
        argv[1] = str(tmp_path / "missing.safetensors")
    elif bad == "video":
        (tmp_path / "broken.avi").write_bytes(b"not a video")
        argv[3] = str(tmp_path / "broken.avi")
    elif bad == "range":
        argv[3] = f"{video}#8:4"
    else:
        argv[argv.index("--input-size") + 1] = "50"
    assert quantize.main(argv) == 2
    captured = capfd.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_video_range_parsing():
    assert quantize.VideoRange.parse("a.avi") == quantize.VideoRange(Path("a.avi"))
    assert quantize.VideoRange.parse("a.avi#600:") == quantize.VideoRange(Path("a.avi"), 600, None)
    assert quantize.VideoRange.parse("a#b.avi#:67") == quantize.VideoRange(Path("a#b.avi"), 0, 67)
    with pytest.raises(UserFacingError):
        quantize.VideoRange.parse("a.avi#x:3")
