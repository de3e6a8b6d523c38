"""The bundled default model: it loads, runs, and finds the walkers in a real frame of vtest.avi."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tagtrack.model.checkpoint import DEFAULT_WEIGHTS, load_checkpoint
from tagtrack.model.predict import PredictConfig, predict_image, torch_infer_fn
from tagtrack.model.schema import COCO17
from tagtrack.realtime.demo import find_vtest

HELD_OUT_FRAME = 650  # frames 600-794 of vtest.avi were held out from the default model's training


@pytest.fixture(scope="module")
def default_model():
    if not DEFAULT_WEIGHTS.is_file():
        pytest.fail(f"the default model {DEFAULT_WEIGHTS} is missing from the repository")
    return load_checkpoint(DEFAULT_WEIGHTS, expected_schema=COCO17)


def test_default_weights_load_and_record_how_they_were_made(default_model) -> None:
    config = default_model.config
    assert config.num_keypoints == 17 and config.tag_dim >= 1
    assert config.input_height % 64 == 0 and config.input_width % 64 == 0
    assert DEFAULT_WEIGHTS.stat().st_size <= 20 * 1024 * 1024
    assert default_model.metadata["step"] > 0 and "train_config" in default_model.metadata


def _frame(index: int) -> np.ndarray:
    video = find_vtest()
    if video is None:
        pytest.skip("vtest.avi is not available here (make vtest, opencv-doc or ../shared)")
    capture = cv2.VideoCapture(str(video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    capture.release()
    if not ok:
        pytest.skip(f"cannot read frame {index} of {video}")
    return frame


def test_default_model_finds_the_walkers_in_a_held_out_frame(default_model) -> None:
    frame = _frame(HELD_OUT_FRAME)  # 768x576; six walkers are in view on this frame
    input_hw = (default_model.config.input_height, default_model.config.input_width)
    people = predict_image(torch_infer_fn(default_model.model), frame, input_hw, COCO17, PredictConfig())
    confident = [p for p in people if p.score >= 0.3 and (p.keypoints[:, 2] >= 0.3).sum() >= 8]
    height, width = frame.shape[:2]
    walkers = []
    for person in confident:
        visible = person.keypoints[person.keypoints[:, 2] >= 0.3, :2]
        assert (visible >= 0).all() and (visible[:, 0] < width).all() and (visible[:, 1] < height).all()
        # The walkers here are 60-130 px tall and narrower than tall; a skeleton much wider or taller
        # has joined joints of different people, a tiny one is a fragment.
        box_width, box_height = visible.max(axis=0) - visible.min(axis=0)
        if 30 <= box_height <= 200 and box_width < box_height:
            walkers.append(person)
    assert len(walkers) >= 3, f"{len(walkers)} plausible walkers among {len(confident)} confident people"
