"""Checkpoints: safetensors weights with the model config and keypoint schema stored beside them.

The safetensors header holds string metadata: the format name and version, the `ModelConfig`
(network and its input size) and `KeypointSchema` as JSON, free-form JSON metadata (training info),
optionally the settings to use the model with (`{"decode": {DecodeConfig fields}, "tracker":
{TrackerConfig fields}}`, the app's defaults for this model; older checkpoints have none) and a
SHA-256 of the tensor bytes, so a damaged file is refused instead of silently giving wrong poses.
Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from tagtrack.model.config import ModelConfig
from tagtrack.model.errors import UserFacingError
from tagtrack.model.files import write_atomically
from tagtrack.model.networks import build_network, is_network, unwrap_network
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.model.settings import SECTIONS

logger = logging.getLogger(__name__)

FORMAT_NAME = "tagtrack.checkpoint"
FORMAT_VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "default.safetensors"
# Checkpoints installed with the package, by the name `--weights` also accepts (model/weights/MODEL_CARD.md):
# "default" the general model (close-ups, sports, street; "general" is its name from before it became the
# default), "pretrained" MoveNet's network and weights with our tag head (photos, athletes, close-ups; not yet
# small walkers' tracks), "wide" the general model widened, "street" the earlier street-scene model.
BUNDLED_WEIGHTS = {"default": DEFAULT_WEIGHTS, "general": DEFAULT_WEIGHTS,
                   "pretrained": DEFAULT_WEIGHTS.parent / "pretrained.safetensors",
                   "wide": DEFAULT_WEIGHTS.parent / "wide.safetensors",
                   "street": DEFAULT_WEIGHTS.parent / "street.safetensors"}

_KEY_FORMAT = "format"
_KEY_VERSION = "format_version"
_KEY_CONFIG = "model_config"
_KEY_SCHEMA = "keypoint_schema"
_KEY_METADATA = "metadata"
_KEY_WEIGHTS_SHA256 = "weights_sha256"
_KEY_SETTINGS = "settings"  # optional: added after version 1 files existed, absent from older ones


@dataclass
class LoadedCheckpoint:
    model: torch.nn.Module  # a network of config.family (model/networks.py), in eval mode, on the requested device
    config: ModelConfig
    schema: KeypointSchema
    metadata: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # {"decode": {...}, "tracker": {...}}, either may be absent


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    schema: KeypointSchema = COCO17,
    metadata: dict | None = None,
    settings: dict | None = None,
) -> Path:
    """Write the model's weights, config, schema, `metadata` (JSON-serialisable) and `settings`
    (`{"decode": {...}, "tracker": {...}}`: the decoder and tracker settings to use it with) to `path`.

    The file is written to a temporary name and renamed, so an existing checkpoint is never
    left half-overwritten.
    """
    path = Path(path)
    model = unwrap_network(model)
    if not is_network(model):
        raise TypeError(f"save_checkpoint expects a network of model/networks.py, got {type(model).__name__}")
    config = model.config
    if schema.num_keypoints != config.num_keypoints:
        raise ValueError(
            f"schema '{schema.name}' has {schema.num_keypoints} keypoints but the model predicts {config.num_keypoints}"
        )
    tensors = {name: value.detach().to("cpu").contiguous() for name, value in model.state_dict().items()}
    header = {
        _KEY_FORMAT: FORMAT_NAME,
        _KEY_VERSION: str(FORMAT_VERSION),
        _KEY_CONFIG: json.dumps(config.to_dict()),
        _KEY_SCHEMA: json.dumps(schema.to_dict()),
        _KEY_METADATA: json.dumps(metadata or {}),
        _KEY_WEIGHTS_SHA256: _tensors_sha256(tensors),
    }
    if settings:
        header[_KEY_SETTINGS] = json.dumps(_checked_settings(settings, f"settings for {path}"))
    try:
        write_atomically(path, lambda temporary: save_file(tensors, str(temporary), metadata=header), "checkpoint")
    except SafetensorError as error:
        raise UserFacingError(f"cannot write checkpoint {path}: {error}") from error
    logger.info("saved checkpoint %s (%d tensors)", path, len(tensors))
    return path


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    expected_schema: KeypointSchema | None = None,
) -> LoadedCheckpoint:
    """Load and validate a checkpoint; any problem with the file raises `UserFacingError`.

    `expected_schema`: the keypoint schema the caller works with; a checkpoint for another one is refused.
    """
    path = Path(path)
    with _reading(path) as reader:
        header = reader.metadata() or {}
        config, schema, metadata = _parse_header(path, header)
        settings = _parse_settings(path, header)
        _check_schema(path, schema, expected_schema)
        tensors = {name: reader.get_tensor(name) for name in reader.keys()}

    if _tensors_sha256(tensors) != header[_KEY_WEIGHTS_SHA256]:
        raise UserFacingError(f"checkpoint {path} is corrupt: its weights do not match their stored checksum")
    model = build_network(config)
    _check_tensors(path, model, tensors)
    model.load_state_dict(tensors, strict=True)
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as error:
        raise UserFacingError(f"cannot use device '{device}': {str(error).splitlines()[0]}") from error
    model.eval()
    logger.info("loaded checkpoint %s: %s, schema %s", path, config, schema.name)
    return LoadedCheckpoint(model=model, config=config, schema=schema, metadata=metadata, settings=settings)


def read_checkpoint_settings(path: str | Path) -> dict:
    """The settings stored in a checkpoint (`{}` for one without), read from its header only (no weights)."""
    path = Path(path)
    with _reading(path) as reader:
        header = reader.metadata() or {}
    _parse_header(path, header)
    return _parse_settings(path, header)


@contextlib.contextmanager
def _reading(path: Path):
    """The checkpoint open for reading (safetensors), every problem with the file one UserFacingError."""
    if not path.exists():
        raise UserFacingError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise UserFacingError(f"checkpoint {path} is not a file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as reader:
            yield reader
    except SafetensorError as error:
        raise UserFacingError(f"checkpoint {path} is not a valid safetensors file ({error})") from error
    except OSError as error:
        raise UserFacingError(f"cannot read checkpoint {path}: {error.strerror or error}") from error


def resolve_weights(path: str | Path | None) -> Path:
    """The checkpoint to use: `path` when given (existence is checked when loading; a bundled model's name,
    "default", "general", "pretrained", "wide" or "street", when no such file exists here), else the installed
    default."""
    if path is not None:
        if str(path) in BUNDLED_WEIGHTS and not Path(path).exists():
            return BUNDLED_WEIGHTS[str(path)]
        return Path(path)
    if DEFAULT_WEIGHTS.is_file():
        return DEFAULT_WEIGHTS
    raise UserFacingError("no default model is installed; pass --weights PATH to a checkpoint (see README: training)")


def checkpoint_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of the whole checkpoint file, e.g. as a cache key for engines built from it."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError as error:
        raise UserFacingError(f"checkpoint not found: {path}") from error
    except OSError as error:
        raise UserFacingError(f"cannot read checkpoint {path}: {error.strerror or error}") from error
    return digest.hexdigest()


def _tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _parse_header(path: Path, header: dict[str, str]) -> tuple[ModelConfig, KeypointSchema, dict]:
    if header.get(_KEY_FORMAT) != FORMAT_NAME:
        raise UserFacingError(f"checkpoint {path} is a safetensors file but not a tagtrack checkpoint (no tagtrack metadata)")
    version = header.get(_KEY_VERSION, "")
    if not version.isdigit():
        raise UserFacingError(f"checkpoint {path} has an invalid format version {version!r}")
    if int(version) > FORMAT_VERSION:
        raise UserFacingError(
            f"checkpoint {path} has format version {version}; this app reads up to version {FORMAT_VERSION} (update tagtrack)"
        )
    for key in (_KEY_CONFIG, _KEY_SCHEMA, _KEY_METADATA, _KEY_WEIGHTS_SHA256):
        if key not in header:
            raise UserFacingError(f"checkpoint {path} has incomplete metadata: '{key}' is missing")
    try:
        config = ModelConfig.from_dict(json.loads(header[_KEY_CONFIG]))
    except (ValueError, TypeError, AttributeError) as error:
        raise UserFacingError(f"checkpoint {path} has an invalid model config: {error}") from error
    try:
        schema = KeypointSchema.from_dict(json.loads(header[_KEY_SCHEMA]))
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise UserFacingError(f"checkpoint {path} has an invalid keypoint schema: {error!r}") from error
    try:
        metadata = json.loads(header[_KEY_METADATA])
    except ValueError as error:
        raise UserFacingError(f"checkpoint {path} has invalid metadata JSON: {error}") from error
    if not isinstance(metadata, dict):
        raise UserFacingError(f"checkpoint {path} has invalid metadata: expected a JSON object")
    if schema.num_keypoints != config.num_keypoints:
        raise UserFacingError(
            f"checkpoint {path} is inconsistent: schema '{schema.name}' has {schema.num_keypoints} keypoints "
            f"but the model predicts {config.num_keypoints}"
        )
    return config, schema, metadata


def _checked_settings(settings: object, what: str) -> dict:
    """`settings` as stored: a JSON object of sections ("decode", "tracker"), each a JSON object.
    The fields inside are checked where they are used (model/settings.py: resolve_settings)."""
    if not isinstance(settings, dict):
        raise UserFacingError(f"{what}: expected a JSON object, got {type(settings).__name__}")
    unknown = sorted(set(settings) - set(SECTIONS))
    if unknown:
        raise UserFacingError(f"{what}: unknown section {unknown[0]!r} (known: {', '.join(SECTIONS)})")
    for section, values in settings.items():
        if not isinstance(values, dict):
            raise UserFacingError(f"{what}: section {section!r} must be a JSON object")
    return settings


def _parse_settings(path: Path, header: dict[str, str]) -> dict:
    if _KEY_SETTINGS not in header:
        return {}
    try:
        settings = json.loads(header[_KEY_SETTINGS])
    except ValueError as error:
        raise UserFacingError(f"checkpoint {path} has invalid settings JSON: {error}") from error
    return _checked_settings(settings, f"checkpoint {path} settings")


def _check_schema(path: Path, schema: KeypointSchema, expected: KeypointSchema | None) -> None:
    if expected is None or schema == expected:
        return
    if schema.name != expected.name:
        raise UserFacingError(
            f"checkpoint {path} is for keypoint schema '{schema.name}' ({schema.num_keypoints} keypoints), "
            f"this app uses '{expected.name}'"
        )
    raise UserFacingError(
        f"checkpoint {path} has a keypoint schema named '{schema.name}' that differs from this app's "
        f"'{expected.name}' (names, flip pairs, skeleton, sigmas or grouping order)"
    )


def _check_tensors(path: Path, model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mis_shaped = sorted(
        name for name in set(expected) & set(tensors) if tuple(expected[name].shape) != tuple(tensors[name].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    if mis_shaped:
        name = mis_shaped[0]
        problems.append(
            f"{len(mis_shaped)} tensors of the wrong shape (e.g. {name}: "
            f"{tuple(tensors[name].shape)} instead of {tuple(expected[name].shape)})"
        )
    if problems:
        raise UserFacingError(f"checkpoint {path} does not match its model config: {'; '.join(problems)}")
