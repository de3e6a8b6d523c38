"""The prepared GPU run (bench/gpu/): the corpus packer, the whole run in its CPU dry mode, and the torch-CUDA
engine checks it runs on a GPU (`-m gpu`, skipped without one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from tagtrack.bench.gpu import pack, run
from tagtrack.bench.gpu.pack import MIB, pack_corpus
from tagtrack.model.checkpoint import load_checkpoint, resolve_weights
from tagtrack.model.config import TINY
from tagtrack.model.errors import UserFacingError
from tagtrack.training.dataset import load_coco
from tagtrack.training.synthetic import SceneConfig, generate_dataset

REPO = Path(run.__file__).resolve().parents[2]
# Crowd regions (RLE) and people without keypoints (polygons) in most scenes, so every kind of coordinate is packed.
SCENE = SceneConfig(width=200, height=160, crowd_probability=0.6, unlabelled_probability=0.6)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """6 synthetic 200x160 scenes (PNG) with their COCO annotation file."""
    folder = tmp_path_factory.mktemp("synthetic")
    generate_dataset(folder, num_images=6, config=SCENE, seed=3)
    return folder


def _by_id(items: list[dict]) -> dict[int, dict]:
    return {item["id"]: item for item in items}


def test_pack_scales_every_coordinate_with_its_image(synthetic, tmp_path):
    out = tmp_path / "corpus"
    result = pack_corpus(synthetic / "annotations.json", synthetic / "images", out, budget_bytes=MIB, max_side=100)
    source = json.loads((synthetic / "annotations.json").read_text())
    packed = json.loads((out / "annotations.json").read_text())
    assert result.images == len(packed["images"]) == 6 and result.max_side == 100
    assert len(packed["annotations"]) == len(source["annotations"])
    for record in packed["images"]:
        image = cv2.imread(str(out / "images" / record["file_name"]))
        assert record["file_name"].endswith(".jpg")
        assert image.shape[:2] == (record["height"], record["width"]) == (80, 100)  # 200x160 halved
    kinds = set()
    for annotation in packed["annotations"]:
        original = _by_id(source["annotations"])[annotation["id"]]
        assert annotation["image_id"] == original["image_id"]
        for k in range(17):
            x, y, v = original["keypoints"][3 * k:3 * k + 3]
            assert annotation["keypoints"][3 * k:3 * k + 3] == pytest.approx([x / 2, y / 2, v], abs=0.01)
        assert annotation["bbox"] == pytest.approx([c / 2 for c in original["bbox"]], abs=0.01)
        assert annotation["area"] == pytest.approx(original["area"] / 4, abs=0.01)
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, dict):  # a crowd region's RLE, redrawn at the new size
            kinds.add("rle")
            assert segmentation["size"] == [80, 100]
            assert mask_utils.area(segmentation) == pytest.approx(mask_utils.area(original["segmentation"]) / 4, rel=0.1)
        else:
            kinds.add("polygon")
            assert segmentation[0] == pytest.approx([c / 2 for c in original["segmentation"][0]], abs=0.01)
    assert kinds == {"rle", "polygon"}
    summary = json.loads((out / "pack.json").read_text())
    on_disk = sum(p.stat().st_size for p in (out / "images").iterdir())
    assert summary["image_bytes"] == on_disk and summary["total_bytes"] <= MIB
    assert len(load_coco(out / "annotations.json", out / "images").getImgIds()) == 6  # training reads it


def test_pack_lowers_the_resolution_to_fit_the_budget(synthetic, tmp_path):
    full = pack_corpus(synthetic / "annotations.json", synthetic / "images", tmp_path / "full", budget_bytes=MIB)
    assert full.max_side == 200  # nothing had to shrink, and nothing is enlarged
    budget = full.json_bytes + full.image_bytes // 2
    fitted = pack_corpus(synthetic / "annotations.json", synthetic / "images", tmp_path / "fit", budget, min_side=32)
    assert fitted.total_bytes <= budget and fitted.max_side < 200
    widths = {r["width"] for r in json.loads((tmp_path / "fit" / "annotations.json").read_text())["images"]}
    assert widths == {fitted.max_side}
    with pytest.raises(UserFacingError, match="does not fit.*--max-images"):
        pack_corpus(synthetic / "annotations.json", synthetic / "images", tmp_path / "tiny", full.json_bytes + 100,
                    min_side=150)
    # A subset: images evenly spaced over the file, each with all of its annotations and nothing else.
    pack_corpus(synthetic / "annotations.json", synthetic / "images", tmp_path / "subset", MIB, max_images=3)
    source = json.loads((synthetic / "annotations.json").read_text())
    subset = json.loads((tmp_path / "subset" / "annotations.json").read_text())
    assert [image["id"] for image in subset["images"]] == [1, 3, 5]
    assert sorted(a["id"] for a in subset["annotations"]) == sorted(
        a["id"] for a in source["annotations"] if a["image_id"] in (1, 3, 5))
    assert len(list((tmp_path / "subset" / "images").iterdir())) == 3


def test_pack_cli_bad_input_is_one_line(synthetic, tmp_path, capsys):
    assert pack.main(["--data", str(tmp_path / "none.json"), "--images", str(synthetic), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: annotation file not found")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    code = pack.main(["--data", str(synthetic / "annotations.json"), "--images", str(synthetic / "images"),
                      "--out", str(tmp_path / "busy")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "holds other files" in err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_pytest_summary_is_parsed():
    text = ("sss.                                                                   [100%]\n"
            "=========================== short test summary info ============================\n"
            "SKIPPED [2] tests/test_engines.py:277: TensorRT test needs an NVIDIA GPU and tensorrt: no tensorrt\n"
            "1 passed, 3 skipped, 20 deselected in 44.39s\n")
    parsed = run.parse_pytest_output(text)
    assert parsed["counts"] == {"passed": 1, "skipped": 3, "deselected": 20}
    assert parsed["skip_reasons"] == ["TensorRT test needs an NVIDIA GPU and tensorrt: no tensorrt"]
    assert {"test_engines.py", "test_gpu_run.py"} <= {p.name for p in run.gpu_test_files()}


@pytest.mark.slow
def test_dry_run_measures_every_section_and_brings_back_a_checkpoint(synthetic, tmp_path):
    """bench/gpu/run.sh --dry on the CPU: the GPU run's code end to end at tiny sizes (the tests section is left
    out: it would run pytest inside pytest). The training is stopped by the time budget with SIGINT and
    leaves its checkpoint, log and config in OUT."""
    carry, out = tmp_path / "carry", tmp_path / "out"
    pack_corpus(synthetic / "annotations.json", synthetic / "images", carry / "corpus", budget_bytes=MIB)
    env = dict(os.environ, OUT=str(out), CARRY=str(carry), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    completed = subprocess.run(["bash", str(REPO / "bench" / "gpu" / "run.sh"), "--dry", "--no-tests", "--budget-s", "5"],
                               env=env, capture_output=True, text=True, timeout=500)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["errors"] == {} and report["skipped"] == {}
    assert set(report["section_seconds"]) == {"environment", "agreement", "inference", "pipeline", "train_speed",
                                              "training"}
    assert all(entry["within"] for entry in report["agreement"].values())
    measured = {(row["model"], row["batch"], row["variant"]) for row in report["inference"] if row["images_per_s"] > 0}
    assert measured == {(m, b, v) for m in ("default", "tiny") for b in (1, 2) for v in run.CPU_VARIANTS}
    (pipeline,) = report["pipeline"]
    assert pipeline["frames"] == 8 and pipeline["end_to_end_fps"] > 0
    assert set(pipeline["stage_ms_per_frame"]) >= {"capture", "infer", "decode", "track"}
    assert {row["config"] for row in report["train_speed"]} == {"corpus", "tiny"}
    training = report["training"]
    assert training["exit_code"] == 130, (out / "train.log").read_text()  # stopped by SIGINT, after saving
    assert training["steps"] >= 1 and training["checkpoint"] == "gpu_trained.safetensors"
    loaded = load_checkpoint(out / "gpu_trained.safetensors")
    assert (loaded.config.num_stacks, loaded.config.width) == (TINY.num_stacks, TINY.width)
    assert loaded.metadata["step"] == training["steps"]
    assert (out / "train_log.csv").read_text().startswith("step,")
    # What comes back from the GPU machine: at most 8 plain files, no folders.
    files = sorted(p.name for p in out.iterdir())
    assert all((out / name).is_file() for name in files) and len(files) <= 8
    assert set(files) <= set(run.OUT_FILES) | {"run.log"}
    assert "report: " in (out / "run.log").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_mode_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert run.main(["--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "error: no CUDA GPU visible to torch; use --dry for the CPU dry run\n"
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- on a GPU (bench/gpu/run.sh runs these)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU visible to torch")
def test_torch_engine_on_cuda_matches_cpu():
    """The default model through TorchEngine on CUDA, fp32 (cuDNN may use TF32) and fp16 autocast, against the
    CPU: max |difference| within run.TOLERANCE of each output's largest value."""
    loaded = load_checkpoint(resolve_weights(None))
    input_hw = (loaded.config.input_height, loaded.config.input_width)
    result = run.engine_agreement(loaded.model, input_hw, "cuda")
    for precision in ("fp32", "fp16"):
        entry = result[precision]
        assert entry["engine"] == f"torch (cuda, {precision})"
        assert entry["heatmaps"] <= run.TOLERANCE[precision] and entry["tags"] <= run.TOLERANCE[precision], entry


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU visible to torch")
def test_fp16_variants_on_cuda_give_the_engines_maps():
    """The half-precision channels-last network (the fastest plain variant) gives what fp32 gives."""
    from tagtrack.model.hourglass import HourglassNet

    torch.manual_seed(0)
    model = HourglassNet(TINY).eval()
    images = torch.from_numpy(run.sample_batch((64, 64)))
    with torch.no_grad():
        expected = model(images)
        fast = model.cuda().half().to(memory_format=torch.channels_last)
        got = fast(images.cuda().half().contiguous(memory_format=torch.channels_last))
    for g, e in zip(got, expected):
        assert run.relative_error(g.float().cpu().numpy(), e.numpy()) <= run.TOLERANCE["fp16"]
    assert np.isfinite(got[0].float().cpu().numpy()).all()
