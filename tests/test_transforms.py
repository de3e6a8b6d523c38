"""Letterbox pre-processing and its exact inverse."""

from __future__ import annotations

import numpy as np
import pytest

from tagtrack.model.config import OUTPUT_STRIDE
from tagtrack.model.transforms import Letterbox, input_to_map, map_to_input, to_network_input

CASES = [
    ((480, 641), (256, 384)),  # height limits: small pads left/right
    ((300, 200), (256, 384)),  # tall: wide pads left/right
    ((90, 160), (256, 384)),  # smaller than the input: up-scaled
    ((256, 384), (256, 384)),  # exact fit
    ((1080, 1920), (512, 512)),
]


@pytest.mark.parametrize("image_hw, input_hw", CASES)
def test_points_map_forward_and_back_exactly(image_hw, input_hw):
    letterbox = Letterbox.fit(image_hw, input_hw)
    points = np.random.default_rng(1).uniform(-0.5, 1.5, (200, 2)) * [image_hw[1], image_hw[0]]
    np.testing.assert_allclose(letterbox.to_image(letterbox.to_input(points)), points, rtol=0, atol=1e-9)
    np.testing.assert_allclose(letterbox.map_to_image(letterbox.image_to_map(points)), points, rtol=0, atol=1e-9)
    np.testing.assert_allclose(map_to_input(input_to_map(points)), points, rtol=0, atol=1e-12)


@pytest.mark.parametrize("image_hw, input_hw", CASES)
def test_letterbox_keeps_aspect_and_centres_the_image(image_hw, input_hw):
    letterbox = Letterbox.fit(image_hw, input_hw)
    resized_h, resized_w = letterbox.resized_hw
    assert resized_h == input_hw[0] or resized_w == input_hw[1]  # touches two sides
    assert resized_h <= input_hw[0] and resized_w <= input_hw[1]
    assert abs(letterbox.scale_x - letterbox.scale_y) * max(image_hw) < 1.0  # aspect kept to a pixel
    assert letterbox.pad_x == (input_hw[1] - resized_w) // 2 and letterbox.pad_y == (input_hw[0] - resized_h) // 2
    image = np.full((*image_hw, 3), 200, dtype=np.uint8)
    boxed = letterbox.apply(image)
    assert boxed.shape == (*input_hw, 3) and boxed.dtype == np.uint8
    inside = boxed[letterbox.pad_y:letterbox.pad_y + resized_h, letterbox.pad_x:letterbox.pad_x + resized_w]
    assert (inside == 200).all()
    assert boxed.sum() == inside.sum()  # the rest is black padding


def test_pixel_centres_line_up_between_image_input_and_map():
    # Image pixel corners map to input pixel corners: the resize is by the exact factor.
    letterbox = Letterbox.fit((100, 50), (256, 256))
    corner = letterbox.to_input(np.array([-0.5, -0.5]))
    np.testing.assert_allclose(corner, [letterbox.pad_x - 0.5, letterbox.pad_y - 0.5])
    far = letterbox.to_input(np.array([49.5, 99.5]))
    np.testing.assert_allclose(far, [letterbox.pad_x + letterbox.resized_hw[1] - 0.5, 255.5])
    # Map pixel (0, 0) covers input pixels 0..3, so its centre is input 1.5.
    np.testing.assert_allclose(map_to_input(np.array([0.0, 0.0])), [(OUTPUT_STRIDE - 1) / 2] * 2)


def test_a_bright_spot_lands_where_to_input_says():
    image = np.zeros((300, 500, 3), dtype=np.uint8)
    image[118:123, 338:343] = 255  # centre (340, 120)
    letterbox = Letterbox.fit(image.shape[:2], (256, 384))
    boxed = letterbox.apply(image).astype(np.float64)[:, :, 0]
    ys, xs = np.mgrid[: boxed.shape[0], : boxed.shape[1]]
    centroid = np.array([(xs * boxed).sum(), (ys * boxed).sum()]) / boxed.sum()
    np.testing.assert_allclose(centroid, letterbox.to_input(np.array([340.0, 120.0])), atol=0.05)


def test_extra_columns_pass_through_and_map_matrix_agrees():
    letterbox = Letterbox.fit((333, 517), (192, 320))
    points = np.array([[10.0, 20.0, 0.7], [300.0, 100.0, 0.1]])
    mapped = letterbox.image_to_map(points)
    np.testing.assert_array_equal(mapped[:, 2], points[:, 2])
    matrix = letterbox.map_to_image_matrix()
    np.testing.assert_allclose(mapped[:, :2] @ matrix[:, :2].T + matrix[:, 2], points[:, :2], atol=1e-9)


def test_to_network_input_is_rgb_chw_in_unit_range():
    image = np.zeros((64, 128, 3), dtype=np.uint8)
    image[:, :, 0] = 255  # blue in BGR
    tensor = to_network_input(image)
    assert tensor.shape == (3, 64, 128) and tensor.dtype == np.float32
    assert tensor[2].min() == 1.0 and tensor[0].max() == 0.0 and tensor[1].max() == 0.0
    with pytest.raises(ValueError):
        to_network_input(np.zeros((4, 4), np.uint8))


def test_letterbox_refuses_an_image_of_another_size():
    letterbox = Letterbox.fit((100, 100), (64, 64))
    with pytest.raises(ValueError):
        letterbox.apply(np.zeros((50, 100, 3), np.uint8))


def test_preprocessor_gives_todays_network_input_in_reused_buffers():
    """Same bytes as the preprocessing before issue 17 (bench.baseline), frame after frame of changing size,
    written into the same buffers in turn (no new array per frame)."""
    from tagtrack.bench.baseline import baseline_preprocess
    from tagtrack.model.transforms import Preprocessor

    rng = np.random.default_rng(0)
    preprocess = Preprocessor((256, 384), buffers=2)
    # wide (pads top/bottom), tall (pads left/right), small (up-scaled), then the first size again
    sizes = [(200, 600), (300, 200), (90, 160), (200, 600), (576, 768)]
    returned = []
    for image_hw in sizes:
        image = rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8)
        letterbox, network_input = preprocess(image)
        assert letterbox == Letterbox.fit(image_hw, (256, 384))
        np.testing.assert_array_equal(network_input, baseline_preprocess(letterbox, image))
        np.testing.assert_array_equal(network_input, to_network_input(letterbox.apply(image)))
        returned.append(network_input)
    assert returned[0] is returned[2] is returned[4] and returned[1] is returned[3]
    assert returned[0] is not returned[1]


def test_letterbox_into_a_buffer_repaints_the_padding_and_checks_its_shape():
    letterbox = Letterbox.fit((100, 400), (64, 64))
    out = np.full((64, 64, 3), 77, np.uint8)  # stale content everywhere
    image = np.full((100, 400, 3), 200, np.uint8)
    assert letterbox.apply(image, out=out) is out
    np.testing.assert_array_equal(out, letterbox.apply(image))
    with pytest.raises(ValueError, match="out must be"):
        letterbox.apply(image, out=np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="out must be"):
        to_network_input(out, out=np.zeros((3, 64, 63), np.float32))


def test_input_shape_follows_the_frame_aspect_ratio():
    from tagtrack.model.transforms import input_hw_for_frame

    base = (256, 384)
    assert input_hw_for_frame((576, 768), base) == (256, 384)  # vtest keeps the default
    assert input_hw_for_frame((720, 1280), base) == (256, 384)  # a 16:9 webcam
    assert input_hw_for_frame((1920, 1088), base) == (384, 256)  # a portrait phone video
    assert input_hw_for_frame((480, 480), base) == (256, 256)  # square: covers as much as 256x384, cheaper
    for frame in ((1920, 1088), (480, 640), (1000, 200)):
        h, w = input_hw_for_frame(frame, base)
        assert h % 64 == 0 and w % 64 == 0 and h * w <= base[0] * base[1]
