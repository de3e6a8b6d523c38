"""Network configuration, stored inside every checkpoint so loading never guesses."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from tagtrack.model.errors import UserFacingError

OUTPUT_STRIDE = 4  # every network family's trunk predicts heatmaps and tags at 1/4 of the input size
# An hourglass may add a finer heatmap head (HigherHRNet's idea): its maps, heatmaps and tags, are then at 1/2.
OUTPUT_STRIDES = (OUTPUT_STRIDE, 2)
# Input sides are multiples of this for every family (the hourglass's stem 4 times its 4 halvings; the
# MobileNet family needs 32, which 64 also is): the app's input-shape rules use it.
INPUT_MULTIPLE = 64
HOURGLASS = "hourglass"


def check_input_size(input_hw, what: str = "input size", multiple: int = INPUT_MULTIPLE) -> tuple[int, int]:
    """(height, width) as ints, both positive multiples of `multiple`, else UserFacingError naming `what`:
    the one check of a network input size (command line, engines, export)."""
    height, width = (int(side) for side in input_hw)
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise UserFacingError(f"{what} {height}x{width}: both sides must be positive multiples of {multiple}")
    return height, width


@dataclass(frozen=True)
class ModelConfig:
    """Shape of an associative-embedding network.

    family: the network family (`model/networks.py`; files from before families existed are "hourglass").
    The hourglass fields: width: channels inside the hourglasses; increase: extra channels added per down-sampling
    level (pose-ae-train uses 128 for its 4x256 model); tag_dim: L, the tag vector length; output_stride: 4, or 2
    for heatmaps from a finer head on the last stack (`hourglass.FineHeatmaps`; the tags up-sampled to match).
    Input height and width must be multiples of the family's `input_multiple` (hourglass 64: stride 4 stem
    times 4 poolings). Other families fix their own layers and use only tag_dim and num_keypoints.
    """

    family: str = HOURGLASS
    num_stacks: int = 2
    width: int = 128
    increase: int = 0
    tag_dim: int = 1
    num_keypoints: int = 17
    input_height: int = 256
    input_width: int = 256
    output_stride: int = OUTPUT_STRIDE

    def __post_init__(self) -> None:
        multiple = self.input_multiple  # an unknown family is refused here, naming it
        if self.input_height % multiple or self.input_width % multiple:
            raise ValueError(f"input size {self.input_height}x{self.input_width} must be a multiple of {multiple}")
        if self.num_stacks < 1 or self.width < 1 or self.tag_dim < 1 or self.num_keypoints < 1:
            raise ValueError(f"invalid model config {self}")
        if self.output_stride not in OUTPUT_STRIDES or (self.output_stride != OUTPUT_STRIDE and self.family != HOURGLASS):
            raise ValueError(f"output stride {self.output_stride}: the hourglass supports {OUTPUT_STRIDES}, "
                             f"other families {OUTPUT_STRIDE}")

    @property
    def input_multiple(self) -> int:
        if self.family == HOURGLASS:
            # Without the table: this module's presets are built while model/networks.py may still be importing it.
            return INPUT_MULTIPLE
        from tagtrack.model.networks import network_class  # the family table imports this module

        return network_class(self.family).input_multiple

    @property
    def output_height(self) -> int:
        return self.input_height // self.output_stride

    @property
    def output_width(self) -> int:
        return self.input_width // self.output_stride

    def same_network(self, other: "ModelConfig") -> bool:
        """Whether both describe the same weights (the input size is free: the network is fully convolutional)."""
        return replace(self, input_height=other.input_height, input_width=other.input_width) == other

    def widens_to(self, other: "ModelConfig") -> bool:
        """Whether OTHER is this network made wider (width and increase not smaller, all else equal), so that
        its weights can start from this one's (`hourglass.widened_state_dict`)."""
        grown = replace(self, width=other.width, increase=other.increase)
        return (self.family == HOURGLASS and grown.same_network(other) and other.width >= self.width and other.increase >= self.increase
                and not self.same_network(other))

    def refines_to(self, other: "ModelConfig") -> bool:
        """Whether OTHER is this stride-4 hourglass with the finer heatmap head added (all else equal), so that its
        weights can start from this one's (`hourglass.refined_state_dict`)."""
        return (self.family == HOURGLASS and self.output_stride == OUTPUT_STRIDE and other.output_stride != OUTPUT_STRIDE
                and replace(self, output_stride=other.output_stride).same_network(other))

    def describe(self) -> str:
        if self.family != HOURGLASS:
            return f"{self.family}, L={self.tag_dim}, {self.num_keypoints}-keypoint"
        fine = ", stride-2 heatmaps" if self.output_stride != OUTPUT_STRIDE else ""
        return (f"{self.num_stacks}-stack, width {self.width}+{self.increase}, L={self.tag_dim}, "
                f"{self.num_keypoints}-keypoint{fine}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**{k: str(v) if k == "family" else int(v) for k, v in data.items()})


# Named presets. tiny: tests and CI; small: the real-time default (about 4 GFLOPs at 256x384);
# paper: the 4-stack 512 model of Newell et al. / pose-ae-train.
TINY = ModelConfig(num_stacks=1, width=32, tag_dim=1, input_height=64, input_width=64)
# SMALL measured with hourglass.count_flops: 3.94 GFLOPs at 256x384, 3.6 M parameters. The increase
# puts capacity in the cheap low-resolution levels; hourglass channel counts are multiples of 8 (fp16 tensor cores).
SMALL = ModelConfig(num_stacks=2, width=80, increase=48, tag_dim=4, input_height=256, input_width=384)
PAPER = ModelConfig(num_stacks=4, width=256, increase=128, tag_dim=1, input_height=512, input_width=512)
