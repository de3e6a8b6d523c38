"""`tagtrack demo`: which model and video it picks, and the whole app end to end on the synthetic demo."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from tagtrack import main
import tagtrack.realtime.demo as demo
from tagtrack.model.errors import UserFacingError
from tests.conftest import save_tiny_checkpoint


@pytest.fixture
def no_default_model(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(demo, "DEFAULT_WEIGHTS", tmp_path / "absent.safetensors")


@pytest.fixture
def no_vtest(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(demo, "vtest_locations", lambda: [tmp_path / "nowhere" / "vtest.avi"])


def test_without_a_real_model_the_demo_uses_the_synthetic_model(no_default_model) -> None:
    plan = demo.plan_demo(video=None, weights=None)
    assert plan.synthetic and plan.video is None and plan.weights == demo.SYNTHETIC_DEMO_WEIGHTS


def test_a_video_without_any_real_model_is_refused(no_default_model, tmp_path: Path) -> None:
    with pytest.raises(UserFacingError, match="--weights"):
        demo.plan_demo(video=tmp_path / "clip.mp4", weights=None)


def test_a_real_model_without_the_sample_video_says_how_to_pass_one(no_vtest, tmp_path: Path) -> None:
    with pytest.raises(UserFacingError, match="--video PATH"):
        demo.plan_demo(video=None, weights=tmp_path / "model.safetensors")


def test_the_sample_video_is_looked_up_first_where_the_environment_says(monkeypatch, tmp_path: Path) -> None:
    video = tmp_path / "my_vtest.avi"
    video.write_bytes(b"x")
    monkeypatch.setenv("TAGTRACK_DEMO_VIDEO", str(video))
    assert demo.vtest_locations()[0] == video
    plan = demo.plan_demo(video=None, weights=tmp_path / "model.safetensors")
    assert plan.video == video and not plan.synthetic


def test_demo_cli_errors_are_one_line(no_default_model, tmp_path: Path, capsys) -> None:
    assert main.main(["demo", "--video", str(tmp_path / "clip.mp4"), "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no default model")


def test_demo_with_a_checkpoint_runs_on_the_given_video(tmp_path: Path, capsys) -> None:
    weights = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    from tagtrack.training.synthetic_demo import write_demo_video

    video = write_demo_video(tmp_path / "clip.mp4", frames=6)
    assert main.main(["demo", "--video", str(video), "--weights", str(weights), "--out-dir", str(tmp_path / "out")]) == 0
    lines = (tmp_path / "out" / "demo.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 6  # the settings header and a line per frame
    capture = cv2.VideoCapture(str(tmp_path / "out" / "demo.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6


@pytest.mark.slow
def test_synthetic_demo_finds_and_tracks_the_stick_figures(no_default_model, tmp_path: Path, capsys) -> None:
    """The committed synthetic model, through the whole app: people found in most frames, IDs that persist."""
    assert main.main(["demo", "--out-dir", str(tmp_path)]) == 0
    records = [json.loads(line) for line in (tmp_path / "demo.jsonl").read_text().splitlines()[1:]]  # no header
    assert len(records) == 120
    people_per_frame = [len(record["people"]) for record in records]
    assert sum(count >= 2 for count in people_per_frame) >= 0.8 * len(records), people_per_frame
    ids = [person["track_id"] for record in records for person in record["people"] if person["track_id"] is not None]
    # Three to five figures walk through the whole clip: a handful of IDs, each seen for a long stretch.
    assert 0 < len(set(ids)) <= 8, sorted(set(ids))
    longest = max(ids.count(track) for track in set(ids))
    assert longest >= 0.6 * len(records)
    assert "wrote" in capsys.readouterr().out
