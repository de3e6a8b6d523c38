"""`tagtrack run` picks the network input's shape from the source's frames (portrait video, portrait input)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagtrack import main
from tagtrack.model.config import ModelConfig
from tagtrack.realtime.engines import create_engine
from tagtrack.realtime.sinks import read_pose_lines
from tests.test_api import write_noise_video
from tests.conftest import save_tiny_checkpoint
from tests.test_settings import CPU

LANDSCAPE = ModelConfig(num_stacks=1, width=16, tag_dim=1, input_height=128, input_width=192)


@pytest.fixture(scope="module")
def landscape_weights(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "landscape.safetensors", config=LANDSCAPE,
                                lively=True)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TAGTRACK_CACHE", str(tmp_path / "cache"))


def _run_input_hw(tmp_path: Path, weights: Path, size_hw: tuple[int, int], *extra: str) -> list[int]:
    video = write_noise_video(tmp_path / f"clip_{size_hw[0]}x{size_hw[1]}.avi", 3, size_hw=size_hw)
    poses = tmp_path / f"poses_{size_hw[0]}x{size_hw[1]}.jsonl"
    assert main.main(["run", str(video), "--weights", str(weights), *CPU, "--json", str(poses), "-q", *extra]) == 0
    settings, _ = read_pose_lines(poses)
    return settings["input_hw"]


def test_portrait_video_gets_a_portrait_input_of_no_more_pixels(tmp_path, landscape_weights):
    assert _run_input_hw(tmp_path, landscape_weights, (96, 48)) == [192, 128]
    assert _run_input_hw(tmp_path, landscape_weights, (48, 96)) == [128, 192]  # landscape keeps the checkpoint's


def test_input_size_flag_pins_the_shape(tmp_path, landscape_weights):
    assert _run_input_hw(tmp_path, landscape_weights, (96, 48), "--input-size", "128", "192") == [128, 192]


def test_engine_without_frame_size_uses_the_checkpoint_input(landscape_weights):
    assert create_engine("torch", landscape_weights, "cpu").input_hw == (128, 192)
    assert create_engine("torch", landscape_weights, "cpu", frame_hw=(1920, 1080)).input_hw == (192, 128)


def _write_image(path: Path, size_hw: tuple[int, int]) -> Path:
    import cv2
    import numpy as np

    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (*size_hw, 3), dtype=np.uint8))
    return path


def _predict_input_hw(tmp_path: Path, weights: Path, size_hw: tuple[int, int], *extra: str) -> list[int]:
    image = _write_image(tmp_path / f"photo_{size_hw[0]}x{size_hw[1]}.png", size_hw)
    record = tmp_path / f"photo_{size_hw[0]}x{size_hw[1]}.jsonl"
    assert main.main(["predict", str(image), "--weights", str(weights), "--json", str(record), "-q", *extra]) == 0
    settings, _ = read_pose_lines(record)
    return settings["input_hw"]


def test_predict_gives_a_portrait_photo_a_portrait_input(tmp_path, landscape_weights):
    assert _predict_input_hw(tmp_path, landscape_weights, (96, 48)) == [192, 128]
    assert _predict_input_hw(tmp_path, landscape_weights, (48, 96)) == [128, 192]
    assert _predict_input_hw(tmp_path, landscape_weights, (96, 48), "--input-size", "128", "192") == [128, 192]


def test_eval_picks_each_images_shape_unless_the_size_is_given(tmp_path, landscape_weights, monkeypatch):
    import json

    from tagtrack.model import predict
    from tagtrack.training.evaluate import evaluate_checkpoint

    images = tmp_path / "images"
    images.mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person", "keypoints": [],
                                                             "skeleton": []}]}
    for image_id, size_hw in enumerate([(96, 48), (48, 96)], start=1):
        name = f"{image_id}.png"
        _write_image(images / name, size_hw)
        coco["images"].append({"id": image_id, "file_name": name, "height": size_hw[0], "width": size_hw[1]})
        coco["annotations"].append({"id": image_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                    "bbox": [10, 10, 20, 30], "area": 600.0, "num_keypoints": 1,
                                    "keypoints": [20, 15, 2] + [0, 0, 0] * 16})
    annotations = tmp_path / "coco.json"
    annotations.write_text(json.dumps(coco))

    seen = []
    real_predict = predict.predict_image

    def recording(infer, image, input_hw, *args):
        seen.append(tuple(input_hw))
        return real_predict(infer, image, input_hw, *args)

    monkeypatch.setattr(predict, "predict_image", recording)
    evaluate_checkpoint(landscape_weights, annotations, images, progress=False)
    assert seen == [(192, 128), (128, 192)]
    seen.clear()
    evaluate_checkpoint(landscape_weights, annotations, images, input_hw=(128, 192), progress=False)
    assert seen == [(128, 192), (128, 192)]
