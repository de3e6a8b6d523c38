"""Drawing: the skeleton appears in the track's colour where the pose is, and nowhere else."""

from __future__ import annotations

import numpy as np
import pytest

from tagtrack.model.pose import Pose
from tagtrack.model.schema import COCO17
from tagtrack.model.synthetic_maps import BODY_TEMPLATE
from tagtrack.realtime.draw import color_for_id, draw_poses


def standing_pose(centre_x: float, centre_y: float, height: float, score: float = 0.9) -> Pose:
    keypoints = np.zeros((17, 3), dtype=np.float32)
    keypoints[:, :2] = np.array([centre_x, centre_y]) + BODY_TEMPLATE * height
    keypoints[:, 2] = score
    return Pose(keypoints=keypoints, score=score, box=Pose.box_from_keypoints(keypoints), tag=np.zeros(1, np.float32))


def test_colors_are_stable_and_distinct():
    assert color_for_id(3) == color_for_id(3)
    colors = {color_for_id(i) for i in range(20)}
    assert len(colors) == 20
    for color in colors:
        assert len(color) == 3 and all(0 <= c <= 255 for c in color) and max(color) == 255


def test_skeleton_is_drawn_in_the_track_colour():
    image = np.zeros((400, 600, 3), dtype=np.uint8)
    left, right = standing_pose(150, 200, 300), standing_pose(450, 200, 300)
    draw_poses(image, [left, right], COCO17, track_ids=[7, 12])
    for pose, track_id in ((left, 7), (right, 12)):
        for start, end in [(5, 7), (11, 13), (5, 6)]:  # upper arm, thigh, shoulders
            middle = np.round((pose.keypoints[start, :2] + pose.keypoints[end, :2]) / 2).astype(int)
            assert tuple(int(v) for v in image[middle[1], middle[0]]) == color_for_id(track_id)
    # Nothing is drawn between the two people.
    assert image[:, 280:320].max() == 0


def test_low_score_joints_and_their_limbs_are_left_out():
    image = np.zeros((400, 300, 3), dtype=np.uint8)
    pose = standing_pose(150, 200, 300)
    pose.keypoints[9, 2] = 0.05  # left wrist: too weak
    draw_poses(image, [pose], COCO17, track_ids=[1], min_score=0.1)
    wrist = np.round(pose.keypoints[9, :2]).astype(int)
    elbow = np.round(pose.keypoints[7, :2]).astype(int)
    beyond_elbow = np.round(elbow + 0.7 * (wrist - elbow)).astype(int)
    assert image[beyond_elbow[1], beyond_elbow[0]].max() == 0
    assert image[elbow[1], elbow[0]].max() > 0


def test_without_ids_people_get_index_colours_and_boxes_can_be_drawn():
    image = np.zeros((400, 600, 3), dtype=np.uint8)
    pose = standing_pose(300, 200, 300)
    draw_poses(image, [pose], COCO17, draw_boxes=True)
    x1, y1, x2, y2 = np.round(pose.box).astype(int)
    assert tuple(int(v) for v in image[(y1 + y2) // 2, x1]) == color_for_id(0)  # left edge of the box
    with pytest.raises(ValueError):
        draw_poses(image, [pose], COCO17, track_ids=[1, 2])


def test_thickness_grows_with_person_size():
    def ink(height: float) -> int:
        image = np.zeros((700, 700, 3), dtype=np.uint8)
        draw_poses(image, [standing_pose(350, 350, height)], COCO17, track_ids=[0], draw_ids=False)
        return int((image.max(axis=2) > 0).sum())

    # Ten times the size: with a fixed line width about ten times the ink; thicker lines give far more.
    assert ink(600) > 20 * ink(60)


def test_a_pose_without_a_track_id_gets_its_index_colour_and_no_label():
    image = np.zeros((400, 600, 3), dtype=np.uint8)
    first, second = standing_pose(150, 200, 300), standing_pose(450, 200, 300)
    draw_poses(image, [first, second], COCO17, track_ids=[5, None])
    shoulders = np.round((second.keypoints[5, :2] + second.keypoints[6, :2]) / 2).astype(int)
    assert tuple(int(v) for v in image[shoulders[1], shoulders[0]]) == color_for_id(1)


def test_the_box_drawn_is_the_one_given_else_the_poses_own():
    # The video and the viewer draw the box the tracker reports (the outputs' box), not the joints' extent.
    image = np.zeros((400, 600, 3), dtype=np.uint8)
    pose = standing_pose(300, 200, 300)
    reported = np.array([200.0, 30.0, 400.0, 380.0], np.float32)  # wider and taller than the joints
    assert reported[0] < pose.box[0] and reported[3] > pose.box[3]
    draw_poses(image, [pose], COCO17, track_ids=[4], draw_boxes=True, boxes=[reported])
    assert tuple(int(v) for v in image[200, 200]) == color_for_id(4)   # the given box's left edge
    assert tuple(int(v) for v in image[380, 300]) == color_for_id(4)   # its bottom edge, below the ankles
    with pytest.raises(ValueError):
        draw_poses(image, [pose], COCO17, draw_boxes=True, boxes=[reported, reported])
