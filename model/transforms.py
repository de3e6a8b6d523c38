"""Pre-processing of a frame into the network input, and the exact inverse for predicted points.

One pixel-centre convention everywhere (image, network input, output map): pixel column j covers
``[j-0.5, j+0.5]`` and its centre is ``x = j``. A resize by factor ``s`` is then
``x' = (x + 0.5) * s - 0.5``, which is exactly what ``cv2.resize`` does with the factor
``output_size / input_size``. The output maps are the input down-sampled by ``OUTPUT_STRIDE``:
``x_map = (x_input + 0.5) / OUTPUT_STRIDE - 0.5``.

The letterbox keeps the aspect ratio, resizes the image to fit the network input, and pads with a
constant colour, centring the image (the padding is split evenly, the odd pixel going right/bottom).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from tagtrack.model.config import OUTPUT_STRIDE

PAD_VALUE = 0  # black padding; the network sees the same in training


def input_to_map(xy: np.ndarray, stride: int = OUTPUT_STRIDE) -> np.ndarray:
    """Network-input pixels -> output-map pixels (last axis x, y; extra columns pass through)."""
    return _scale_points(xy, 1.0 / stride, 1.0 / stride, 0.0, 0.0)


def map_to_input(xy: np.ndarray, stride: int = OUTPUT_STRIDE) -> np.ndarray:
    """Output-map pixels -> network-input pixels, the exact inverse of ``input_to_map``."""
    return _unscale_points(xy, 1.0 / stride, 1.0 / stride, 0.0, 0.0)


def _scale_points(xy: np.ndarray, scale_x: float, scale_y: float, pad_x: float, pad_y: float) -> np.ndarray:
    points = np.array(xy, dtype=np.float64, copy=True)
    points[..., 0] = (points[..., 0] + 0.5) * scale_x - 0.5 + pad_x
    points[..., 1] = (points[..., 1] + 0.5) * scale_y - 0.5 + pad_y
    return points


def _unscale_points(xy: np.ndarray, scale_x: float, scale_y: float, pad_x: float, pad_y: float) -> np.ndarray:
    points = np.array(xy, dtype=np.float64, copy=True)
    points[..., 0] = (points[..., 0] - pad_x + 0.5) / scale_x - 0.5
    points[..., 1] = (points[..., 1] - pad_y + 0.5) / scale_y - 0.5
    return points


@dataclass(frozen=True)
class Letterbox:
    """Aspect-preserving resize of an image of ``image_hw`` into ``input_hw``, centred, constant padding.

    ``scale`` is the nominal factor; the resized image is ``round(image size * scale)`` pixels, so
    the exact per-axis factors (``scale_x``, ``scale_y``) differ from it by less than one pixel
    over the image; all point mappings use the exact ones.
    """

    scale: float
    pad_x: int
    pad_y: int
    input_hw: tuple[int, int]
    image_hw: tuple[int, int]
    stride: int = OUTPUT_STRIDE  # network input pixels per output-map pixel

    @classmethod
    def fit(cls, image_hw: tuple[int, int], input_hw: tuple[int, int]) -> "Letterbox":
        image_h, image_w = int(image_hw[0]), int(image_hw[1])
        input_h, input_w = int(input_hw[0]), int(input_hw[1])
        if min(image_h, image_w, input_h, input_w) <= 0:
            raise ValueError(f"empty image {image_hw} or input {input_hw}")
        scale = min(input_h / image_h, input_w / image_w)
        resized_h, resized_w = _resized(image_h, image_w, scale, input_h, input_w)
        return cls(
            scale=scale,
            pad_x=(input_w - resized_w) // 2,
            pad_y=(input_h - resized_h) // 2,
            input_hw=(input_h, input_w),
            image_hw=(image_h, image_w),
        )

    @property
    def resized_hw(self) -> tuple[int, int]:
        return _resized(self.image_hw[0], self.image_hw[1], self.scale, self.input_hw[0], self.input_hw[1])

    @property
    def scale_x(self) -> float:
        return self.resized_hw[1] / self.image_hw[1]

    @property
    def scale_y(self) -> float:
        return self.resized_hw[0] / self.image_hw[0]

    @property
    def map_hw(self) -> tuple[int, int]:
        return self.input_hw[0] // self.stride, self.input_hw[1] // self.stride

    def for_maps(self, map_hw: tuple[int, int]) -> "Letterbox":
        """This letterbox for output maps of map_hw (the network's stride is the input size over theirs)."""
        stride = self.input_hw[0] // int(map_hw[0])
        if (int(map_hw[0]) * stride, int(map_hw[1]) * stride) != tuple(self.input_hw):
            raise ValueError(f"maps of {tuple(map_hw)} do not divide the network input {self.input_hw}")
        return self if stride == self.stride else replace(self, stride=stride)

    def apply(
        self, image_bgr: np.ndarray, out: np.ndarray | None = None, scratch: np.ndarray | None = None
    ) -> np.ndarray:
        """The letterboxed image [H_in, W_in, C], same dtype; written into ``out`` when given (no allocation).

        scratch: where the first step of a two-step shrink goes (``averaged_shape``), to reuse it per frame.
        """
        if image_bgr.shape[:2] != tuple(self.image_hw):
            raise ValueError(f"letterbox fitted for {self.image_hw}, got an image of {image_bgr.shape[:2]}")
        shape = tuple(self.input_hw) + image_bgr.shape[2:]
        if out is None:
            out = np.empty(shape, dtype=image_bgr.dtype)
        elif out.shape != shape or out.dtype != image_bgr.dtype:
            raise ValueError(f"out must be {shape} {image_bgr.dtype}, got {out.shape} {out.dtype}")
        resized_h, resized_w = self.resized_hw
        top, left = self.pad_y, self.pad_x
        bottom, right = top + resized_h, left + resized_w
        window = out[top:bottom, left:right]
        resized = resize_into(image_bgr, window, scratch)
        if not np.shares_memory(resized, out):  # cv2 could not write into the view (it allocated)
            window[...] = resized.reshape(window.shape)
        # Only the padding strips are filled: the resize already wrote everything else.
        out[:top] = PAD_VALUE
        out[bottom:] = PAD_VALUE
        out[top:bottom, :left] = PAD_VALUE
        out[top:bottom, right:] = PAD_VALUE
        return out

    def averaged_shape(self, channels: int = 3) -> tuple[int, ...] | None:
        """Shape of the intermediate image of a two-step shrink (``resize_into``), None when there is none."""
        factor = area_factor(self.image_hw, self.resized_hw)
        averaged_hw = (self.image_hw[0] // factor, self.image_hw[1] // factor)
        if factor == 1 or averaged_hw == self.resized_hw:
            return None
        return averaged_hw + ((channels,) if channels > 1 else ())

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Image pixels -> network-input pixels (float64; last axis x, y[, extra columns untouched])."""
        return _scale_points(xy, self.scale_x, self.scale_y, self.pad_x, self.pad_y)

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Network-input pixels -> image pixels, the exact inverse of ``to_input``."""
        return _unscale_points(xy, self.scale_x, self.scale_y, self.pad_x, self.pad_y)

    def image_to_map(self, xy: np.ndarray) -> np.ndarray:
        """Image pixels -> output-map pixels."""
        return input_to_map(self.to_input(xy), self.stride)

    def map_to_image(self, xy: np.ndarray) -> np.ndarray:
        """Output-map pixels -> image pixels."""
        return self.to_image(map_to_input(xy, self.stride))

    def map_to_image_matrix(self) -> np.ndarray:
        """2x3 affine matrix taking map pixels to image pixels (for warping maps between scales)."""
        origin = self.map_to_image(np.array([0.0, 0.0]))
        unit = self.map_to_image(np.array([1.0, 1.0])) - origin
        return np.array([[unit[0], 0.0, origin[0]], [0.0, unit[1], origin[1]]])


def area_factor(image_hw: tuple[int, int], resized_hw: tuple[int, int]) -> int:
    """The integer factor of the fast first step of a shrink (1: none): the largest f with image / f still at
    least the resized size, if f divides both image sides (cv2's INTER_AREA is exact and fast only for
    integer factors)."""
    factor = min(image_hw[0] // resized_hw[0], image_hw[1] // resized_hw[1])
    if factor >= 2 and image_hw[0] % factor == 0 and image_hw[1] % factor == 0:
        return factor
    return 1


def resize_into(image: np.ndarray, out: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """``image`` resized to ``out``'s size, written into ``out`` where cv2 can (returns what cv2 wrote).

    A shrink is an area average (``INTER_AREA``); enlarging is bilinear. A shrink by a factor of 2 or
    more is done in two steps: an area average by the integer factor f (cv2's fast path, exactly the mean
    of each f x f block), then bilinear for the rest (a factor below 2). INTER_AREA by a non-integer
    factor (2.25 for 768x576 -> 341x256) cost 1.6 ms of the 1.8 ms of preprocessing; the two steps cost
    0.4 ms and change the input by ~1.3 grey levels on average, which changes the default model's people
    slightly (measured tolerance in docs/realtime.md, issue 17 second pass; bench/preprocess.py).
    Both steps keep the pixel-centre convention, so the letterbox's point mapping is unchanged.
    scratch: a buffer of the intermediate size for the first step (else one is allocated).
    """
    image_h, image_w = image.shape[:2]
    out_h, out_w = out.shape[:2]
    if out_h >= image_h:
        return cv2.resize(image, (out_w, out_h), dst=out, interpolation=cv2.INTER_LINEAR)
    factor = area_factor((image_h, image_w), (out_h, out_w))
    if factor == 1 or (image_h // factor, image_w // factor) == (out_h, out_w):
        return cv2.resize(image, (out_w, out_h), dst=out, interpolation=cv2.INTER_AREA)
    averaged_w, averaged_h = image_w // factor, image_h // factor
    if scratch is not None and (scratch.shape[:2] != (averaged_h, averaged_w) or scratch.dtype != image.dtype):
        scratch = None
    averaged = cv2.resize(image, (averaged_w, averaged_h), dst=scratch, interpolation=cv2.INTER_AREA)
    return cv2.resize(averaged, (out_w, out_h), dst=out, interpolation=cv2.INTER_LINEAR)


def _resized(image_h: int, image_w: int, scale: float, input_h: int, input_w: int) -> tuple[int, int]:
    return (
        max(1, min(input_h, int(round(image_h * scale)))),
        max(1, min(input_w, int(round(image_w * scale)))),
    )


def to_network_input(image_bgr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """A letterboxed BGR uint8 image [H,W,3] -> float32 [3,H,W] RGB in [0, 1] (normalisation is in the network).

    Channel swap, transpose, conversion and scaling are one pass (one ufunc over a strided view),
    written into ``out`` [3,H,W] float32 when given.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected a BGR image [H,W,3], got {image_bgr.shape}")
    shape = (3,) + image_bgr.shape[:2]
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {shape}, got {out.dtype} {out.shape}")
    rgb = image_bgr[:, :, ::-1].transpose(2, 0, 1)
    return np.multiply(rgb, np.float32(1.0 / 255.0), out=out, casting="unsafe")


class Preprocessor:
    """Frame -> (letterbox, network input) for a stream of frames, with no allocation per frame.

    The letterboxed uint8 image and the float32 network input live in buffers made once (again
    only when the frame size changes). ``buffers`` network inputs are used in turn, so the one
    returned stays untouched for the next ``buffers - 1`` calls: a caller that hands the input to
    another thread must ask for more buffers than inputs it can have in flight.
    """

    def __init__(self, input_hw: tuple[int, int], buffers: int = 1) -> None:
        if buffers < 1:
            raise ValueError(f"buffers must be at least 1, got {buffers}")
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self._letterbox: Letterbox | None = None
        self._boxed = np.empty(self.input_hw + (3,), dtype=np.uint8)
        self._inputs = [np.empty((3,) + self.input_hw, dtype=np.float32) for _ in range(buffers)]
        self._next = 0
        self._averaged: np.ndarray | None = None  # the first step of a two-step shrink (transforms.resize_into)

    def __call__(self, image_bgr: np.ndarray) -> tuple[Letterbox, np.ndarray]:
        if self._letterbox is None or self._letterbox.image_hw != tuple(image_bgr.shape[:2]):
            self._letterbox = Letterbox.fit(image_bgr.shape[:2], self.input_hw)
            averaged_shape = self._letterbox.averaged_shape(image_bgr.shape[2] if image_bgr.ndim == 3 else 1)
            self._averaged = None if averaged_shape is None else np.empty(averaged_shape, dtype=np.uint8)
        network_input = self._inputs[self._next]
        self._next = (self._next + 1) % len(self._inputs)
        to_network_input(self._letterbox.apply(image_bgr, out=self._boxed, scratch=self._averaged), out=network_input)
        return self._letterbox, network_input


def choose_input_hw(checkpoint_hw: tuple[int, int], input_hw: tuple[int, int] | None = None,
                    frame_hw: tuple[int, int] | None = None) -> tuple[int, int]:
    """The network input everything that runs a checkpoint uses: input_hw when the user pinned one, else the
    shape within the checkpoint's pixels that covers frames of frame_hw best, else the checkpoint's own."""
    if input_hw is not None:
        return tuple(input_hw)
    return input_hw_for_frame(frame_hw, checkpoint_hw) if frame_hw is not None else tuple(checkpoint_hw)


def input_hw_for_frame(frame_hw: tuple[int, int], base_hw: tuple[int, int], multiple: int = 64) -> tuple[int, int]:
    """The network input shape for frames of frame_hw: of all shapes in multiples of `multiple` with no more
    pixels than base_hw, the one on which the letterboxed frame covers the most pixels (ties: the smaller input,
    which wastes less on padding). A portrait video then gets a portrait input (e.g. 384x256 for 1920x1088)
    instead of filling a third of a landscape one; a frame that already fits base_hw best keeps it."""
    frame_h, frame_w = frame_hw
    budget = base_hw[0] * base_hw[1]

    def covered(shape: tuple[int, int]) -> float:
        scale = min(shape[0] / frame_h, shape[1] / frame_w)
        return scale * scale * frame_h * frame_w

    shapes = [(h, w) for h in range(multiple, budget // multiple + 1, multiple)
              for w in range(multiple, budget // h + 1, multiple)]
    return max(shapes, key=lambda s: (round(covered(s)), -s[0] * s[1]))
