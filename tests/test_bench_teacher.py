"""`tagtrack bench teacher`: both models on the same frames; people counted and matched one-to-one."""

from __future__ import annotations

import numpy as np
import pytest

from tagtrack import main
from tagtrack.bench.teacher import compare_with_teacher, count_matches
from tagtrack.model.pose import Pose
from tagtrack.model.schema import COCO17
from tagtrack.realtime.sources import Frame
from tests.test_predict import INPUT_HW, IdealNetwork, scene
from tagtrack.training.teacher import TeacherPerson


def _person(keypoints: np.ndarray, score: float = 0.9) -> TeacherPerson:
    keypoints = keypoints.astype(np.float32)
    return TeacherPerson(keypoints, score, Pose.box_from_keypoints(keypoints))


class IdealEngine:
    def __init__(self, network: IdealNetwork) -> None:
        self.input_hw, self.infer = INPUT_HW, network


class ListSource:
    def __init__(self, image: np.ndarray, frames: int) -> None:
        self.frames = [Frame(image=image, index=i, timestamp=i / 10, source_id="test") for i in range(frames)]

    def read(self) -> Frame | None:
        return self.frames.pop(0) if self.frames else None


class FixedTeacher:
    """Finds two of the scene's three people, one person that is not there, and a doubtful one."""

    def __init__(self, people: np.ndarray) -> None:
        absent = people[2].copy()
        absent[:, :2] += 1000.0
        self.people = [_person(people[0]), _person(people[1]), _person(absent), _person(people[2], score=0.1)]
        self.calls = 0

    def run(self, image_rgb: np.ndarray, long_side: int) -> list[TeacherPerson]:
        self.calls += 1
        return self.people


def test_count_matches_is_one_to_one_at_oks_half() -> None:
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[:, 0], keypoints[:, 1], keypoints[:, 2] = np.linspace(100, 140, 17), np.linspace(50, 200, 17), 1.0
    same = Pose(keypoints.copy(), 1.0, Pose.box_from_keypoints(keypoints), np.zeros(1))
    far = keypoints.copy()
    far[:, 0] += 300
    teacher = [_person(keypoints), _person(keypoints)]  # the same person twice: only one can be matched
    sigmas = COCO17.sigmas_array()
    assert count_matches(teacher, [same], sigmas) == 1
    assert count_matches(teacher, [same, same], sigmas) == 2
    assert count_matches(teacher, [Pose(far, 1.0, Pose.box_from_keypoints(far), np.zeros(1))], sigmas) == 0


def test_comparison_counts_people_and_matches_on_every_frame() -> None:
    image, people, tags, _ = scene((480, 640), 3, 4, seed=3)
    teacher = FixedTeacher(people)
    result = compare_with_teacher(IdealEngine(IdealNetwork(image, people, tags)), teacher, ListSource(image, 5),
                                  progress=False)
    assert result.frames == 5 and teacher.calls == 5 + 3  # 3 warm-up calls are not counted
    assert result.ours_people == 15 and result.teacher_people == 15 and result.matched == 10
    assert result.ours_seconds > 0 and result.teacher_seconds > 0
    assert 0 < result.ours_network_seconds <= result.ours_seconds
    text = result.format()
    assert "people 1.00" in text and "10/15" in text
    every_other = compare_with_teacher(IdealEngine(IdealNetwork(image, people, tags)), FixedTeacher(people),
                                       ListSource(image, 5), max_frames=2, every=2, progress=False)
    assert every_other.frames == 2 and every_other.matched == 4


def test_cli_missing_teacher_is_one_line(tmp_path, capsys) -> None:
    code = main.main(["bench", "teacher", str(tmp_path), "--teacher", str(tmp_path / "nope.onnx")])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"error: teacher model not found: {tmp_path / 'nope.onnx'}"


def test_real_teacher_and_default_model_on_vtest(shared_data, capsys) -> None:
    teacher = shared_data / "teachers" / "movenet_multipose" / "movenet_multipose_lightning_fp32.onnx"
    video = shared_data / "videos" / "opencv_vtest_pets2009.avi"
    if not teacher.is_file() or not video.is_file():
        pytest.skip("MoveNet teacher or vtest.avi missing from ../shared/data")
    code = main.main(["bench", "teacher", str(video), "--teacher", str(teacher), "--engine", "torch",
                      "--max-frames", "3", "--every", "100"])
    assert code == 0
    out = capsys.readouterr().out
    assert "3 frames" in out and "teacher's people that ours also finds" in out


class FakeClock:
    """TEST-ONLY stand-in for the `time` module of bench.teacher: time passes only when a model works."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class SlowOnceTeacher(FixedTeacher):
    """The teacher of a machine with a noisy neighbour: 20 ms a frame, but 1 s on the third measured frame."""

    def __init__(self, people: np.ndarray, clock: FakeClock) -> None:
        super().__init__(people)
        self.clock = clock

    def run(self, image_rgb: np.ndarray, long_side: int) -> list[TeacherPerson]:
        self.clock.now += 1.0 if self.calls == 3 + 2 else 0.02  # after the 3 warm-up calls
        return super().run(image_rgb, long_side)


def test_median_of_per_frame_ratios_is_not_swung_by_one_slow_frame(monkeypatch) -> None:
    import tagtrack.bench.teacher as bench_teacher

    clock = FakeClock()
    monkeypatch.setattr(bench_teacher, "time", clock)
    image, people, tags, _ = scene((480, 640), 3, 4, seed=3)
    network = IdealNetwork(image, people, tags)
    engine = IdealEngine(network)

    def infer_in_10_ms(batch):
        clock.now += 0.01
        return network(batch)

    engine.infer = infer_in_10_ms
    result = compare_with_teacher(engine, SlowOnceTeacher(people, clock), ListSource(image, 5), progress=False)
    assert result.frame_speed_ratios == pytest.approx([2.0, 2.0, 100.0, 2.0, 2.0])
    assert result.median_speed_ratio == pytest.approx(2.0)
    assert result.teacher_seconds / result.ours_seconds == pytest.approx(1.08 / 0.05)  # what the totals say
    text = result.format()
    assert "21.60 over the run, 2.00 median of per-frame ratios" in text and text.startswith("CPU:")
