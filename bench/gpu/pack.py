"""Pack a COCO-format keypoint corpus into a byte budget, for carrying it to a machine with a size limit.

    python -m tagtrack.bench.gpu.pack --data ANN.json --images DIR --out bench/gpu/carry/corpus --budget-mib 40

Every image is shrunk (never enlarged) so that its long side is at most `--max-side`, re-encoded as
JPEG, and every coordinate of its annotations (keypoints, boxes, areas, polygons, RLE masks) is
scaled with it. When the images and the JSON together exceed the budget, the long side is lowered
(by the square root of the excess: bytes grow about with the pixel count) and the images encoded
again, down to `--min-side`. `--max-images N` keeps N images evenly spaced over the file's order (so
every source keeps its share) with their annotations, for corpora too large for any resolution.
All other fields (ids, tracks, videos, frame ids, per-image repeats) are kept as they are.

Output: OUT/annotations.json, OUT/images/<file_name with a .jpg suffix>, OUT/pack.json (what was done),
and OUT/train_config.json when `--train-config` names one (the GPU run trains with it).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from tagtrack.model.errors import UserFacingError
from tagtrack.model.files import read_image, read_json

log = logging.getLogger(__name__)

MIB = 1 << 20


@dataclass
class PackResult:
    images: int
    annotations: int
    max_side: int
    jpeg_quality: int
    image_bytes: int
    json_bytes: int
    budget_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.image_bytes + self.json_bytes


def scale_segmentation(segmentation, sx: float, sy: float, old_hw: tuple[int, int], new_hw: tuple[int, int]):
    """A COCO segmentation (polygons, or RLE compressed or not) of an image resized from old_hw to new_hw."""
    if isinstance(segmentation, list):  # polygons [[x1, y1, x2, y2, ...], ...]
        return [[round(v * (sx if i % 2 == 0 else sy), 2) for i, v in enumerate(polygon)] for polygon in segmentation]
    if not isinstance(segmentation, dict) or "counts" not in segmentation:
        return segmentation
    from tagtrack.model.errors import import_extra

    mask_utils = import_extra("pycocotools.mask", "train", "packing RLE crowd regions")
    height, width = old_hw
    rle = mask_utils.frPyObjects(segmentation, height, width) if isinstance(segmentation["counts"], list) \
        else dict(segmentation, counts=segmentation["counts"].encode("ascii")
                  if isinstance(segmentation["counts"], str) else segmentation["counts"])
    region = mask_utils.decode(rle)
    resized = cv2.resize(region, (new_hw[1], new_hw[0]), interpolation=cv2.INTER_NEAREST)
    encoded = mask_utils.encode(np.asfortranarray(resized.astype(np.uint8)))
    encoded["counts"] = encoded["counts"].decode("ascii")
    return encoded


def scale_annotation(annotation: dict, sx: float, sy: float, old_hw: tuple[int, int],
                     new_hw: tuple[int, int]) -> dict:
    """A copy of one annotation with every image coordinate scaled by (sx, sy)."""
    scaled = dict(annotation)
    if "keypoints" in annotation:
        values = list(annotation["keypoints"])
        for k in range(0, len(values) - 2, 3):
            if values[k + 2] > 0:  # unlabelled joints stay (0, 0, 0)
                values[k], values[k + 1] = round(values[k] * sx, 2), round(values[k + 1] * sy, 2)
        scaled["keypoints"] = values
    if annotation.get("bbox"):
        x, y, w, h = annotation["bbox"]
        scaled["bbox"] = [round(x * sx, 2), round(y * sy, 2), round(w * sx, 2), round(h * sy, 2)]
    if "area" in annotation:
        scaled["area"] = round(float(annotation["area"]) * sx * sy, 2)
    if annotation.get("segmentation"):
        scaled["segmentation"] = scale_segmentation(annotation["segmentation"], sx, sy, old_hw, new_hw)
    return scaled


def _packed_name(file_name: str) -> str:
    path = PurePosixPath(file_name)
    if path.is_absolute() or ".." in path.parts:
        raise UserFacingError(f"image file_name {file_name!r} must be a relative path inside the image folder")
    return str(path.with_suffix(".jpg"))


@dataclass
class EncodedImage:
    jpeg: bytes
    source_hw: tuple[int, int]
    packed_hw: tuple[int, int]


def _encode_all(data: dict, images_dir: Path, max_side: int, quality: int) -> list[EncodedImage]:
    """Every listed image read from disk (one at a time: corpora can be large), shrunk to the long side and
    JPEG-encoded."""
    encoded = []
    for record in data["images"]:
        path = images_dir / record["file_name"]
        image = read_image(path)
        source_hw = image.shape[:2]
        scale = min(1.0, max_side / max(source_hw))
        if scale < 1.0:
            size = (max(1, round(source_hw[1] * scale)), max(1, round(source_hw[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise UserFacingError(f"OpenCV could not encode {path} as JPEG")
        encoded.append(EncodedImage(buffer.tobytes(), source_hw, image.shape[:2]))
    return encoded


def _packed_json(data: dict, encoded: list[EncodedImage]) -> dict:
    """The annotation file for the encoded images: new sizes and file names, scaled coordinates."""
    records, scales = [], {}
    for record, image in zip(data["images"], encoded):
        old_hw, new_hw = image.source_hw, image.packed_hw
        scales[record["id"]] = (new_hw[1] / old_hw[1], new_hw[0] / old_hw[0], old_hw, new_hw)
        records.append(dict(record, file_name=_packed_name(record["file_name"]), height=new_hw[0], width=new_hw[1]))
    annotations = []
    for annotation in data["annotations"]:
        if annotation.get("image_id") not in scales:
            continue  # an annotation of no listed image: nothing can read it
        sx, sy, old_hw, new_hw = scales[annotation["image_id"]]
        annotations.append(scale_annotation(annotation, sx, sy, old_hw, new_hw))
    return dict(data, images=records, annotations=annotations)


def evenly_spaced(data: dict, count: int) -> dict:
    """`count` of the file's images evenly spaced over its order, with their annotations."""
    images = data["images"]
    if count >= len(images):
        return data
    kept = [images[int(i * len(images) / count)] for i in range(count)]
    ids = {image["id"] for image in kept}
    return dict(data, images=kept, annotations=[a for a in data["annotations"] if a.get("image_id") in ids])


def pack_corpus(annotations: Path, images_dir: Path, out_dir: Path, budget_bytes: int, max_side: int = 640,
                min_side: int = 256, quality: int = 90, train_config: Path | None = None,
                max_images: int | None = None) -> PackResult:
    """Write the packed corpus to out_dir (replacing what is there); UserFacingError when it cannot fit."""
    data = read_json(annotations, "annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not data["images"] \
            or not isinstance(data.get("annotations"), list):
        raise UserFacingError(f"{annotations} is not a COCO annotation file with images")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "pack.json").is_file():
        raise UserFacingError(f"--out {out_dir} holds other files; give an empty or new folder (or an earlier pack)")
    if max_images is not None:
        data = evenly_spaced(data, max_images)
    names = [_packed_name(record["file_name"]) for record in data["images"]]
    if len(set(names)) != len(names):
        raise UserFacingError(f"{annotations}: two images would have the same name once re-encoded as .jpg")
    side = max_side
    while True:
        encoded = _encode_all(data, Path(images_dir), side, quality)
        packed = _packed_json(data, encoded)
        text = json.dumps(packed, separators=(",", ":"))
        image_bytes, json_bytes = sum(len(image.jpeg) for image in encoded), len(text.encode())
        total = image_bytes + json_bytes
        log.info("long side %d, JPEG quality %d: %.1f MiB", side, quality, total / MIB)
        side = min(side, max(max(image.packed_hw) for image in encoded))  # the largest long side really written
        if total <= budget_bytes:
            break
        if side <= min_side or image_bytes <= 0 or budget_bytes <= json_bytes:
            fitting = int(len(encoded) * max(budget_bytes - json_bytes, 0) / max(image_bytes, 1) * 0.9)
            raise UserFacingError(f"the corpus does not fit {budget_bytes / MIB:.1f} MiB even with long side {side} "
                                  f"({total / MIB:.1f} MiB); raise the budget, lower --min-side or keep about "
                                  f"--max-images {fitting}")
        # Bytes grow about with the pixel count, i.e. the side squared; aim 3 % under the budget.
        side = max(min_side, int(side * math.sqrt((budget_bytes - json_bytes) / image_bytes) * 0.97))

    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "images").mkdir(parents=True)
    for record, image in zip(packed["images"], encoded):
        target = out_dir / "images" / record["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image.jpeg)
    (out_dir / "annotations.json").write_text(text)
    result = PackResult(len(packed["images"]), len(packed["annotations"]), side, quality, image_bytes, json_bytes,
                        budget_bytes)
    if train_config is not None:
        shutil.copyfile(train_config, out_dir / "train_config.json")
    summary = dict(asdict(result), total_bytes=result.total_bytes, source_annotations=str(annotations),
                   source_images=str(images_dir), train_config=train_config is not None)
    (out_dir / "pack.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tagtrack.bench.gpu.pack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="COCO-format keypoint annotation JSON")
    parser.add_argument("--images", type=Path, required=True, help="folder the JSON's file_name entries are relative to")
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced)")
    parser.add_argument("--budget-mib", type=float, default=40.0, help="images + JSON at most this many MiB (default 40)")
    parser.add_argument("--max-side", type=int, default=640, help="long side of the images at most (default 640)")
    parser.add_argument("--min-side", type=int, default=256, help="never shrink the long side below this (default 256)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--max-images", type=int, help="keep this many images, evenly spaced over the file")
    parser.add_argument("--train-config", type=Path, help="a TrainConfig JSON for the GPU run to train with")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.train_config is not None and not args.train_config.is_file():
            raise UserFacingError(f"--train-config {args.train_config} not found")
        if args.max_images is not None and args.max_images < 1:
            raise UserFacingError(f"--max-images must be at least 1, got {args.max_images}")
        result = pack_corpus(args.data, args.images, args.out, int(args.budget_mib * MIB), args.max_side,
                             args.min_side, args.quality, args.train_config, args.max_images)
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"packed {result.images} images, {result.annotations} annotations into {args.out}: "
          f"{result.total_bytes / MIB:.2f} MiB (long side <= {result.max_side}, JPEG quality {result.jpeg_quality})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
