"""Every weight and threshold of the pose tracker, in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrackerConfig:
    """Settings of `PoseTracker`. Times are in seconds (timestamps), never frames.

    The defaults were measured on the synthetic benchmark (`main.py bench track`, see docs/tracker.md):
    several seeds, both tag modes, tag dimensions 1 and 4.
    """

    # --- which people take part (ByteTrack's two rounds) ---
    high_score: float = 0.5        # people at least this confident are matched first and may start tracks
    low_score: float = 0.1         # people between low and high only extend existing tracks; below low: ignored
    new_track_score: float = 0.5   # an unmatched confident person starts a track only from this score

    # --- life cycle: tentative -> confirmed -> lost -> removed ---
    confirm_hits: int = 3          # matches needed before a tentative track is confirmed (reported)
    tentative_max_gap: float = 0.15  # a tentative track that misses longer than this is dropped
    reid_time: float = 2.0         # a lost track can be re-identified for this long, then it is removed

    # --- association cost: weighted sum of (1 - similarity) per cue ---
    use_tags: bool = True          # False: geometry only, for models whose tags mean nothing across frames
    tag_weight: float = 1.0
    oks_weight: float = 2.0
    iou_weight: float = 0.0        # box IoU adds nothing over OKS on the benchmark; kept as a cue to turn on
    # Tag distances below are in units of the learned same-person distance (PoseTracker.tag_unit).
    tag_scale: float = 1.0         # tag distance at which the tag similarity is exp(-1/2)
    tag_momentum: float = 0.9      # running tag = momentum * running + (1 - momentum) * new tag
    tag_update_gate: float = 4.0   # a new tag further than this from the running tag leaves it unchanged
                                   # (most likely two people's blend: docs/tracker.md)
    tag_trust_samples: int = 20    # unambiguous matches seen before tags are trusted at all
    tag_trust_ratio: float = 0.6   # own-tag / other-tag distance at which trust is 0 (full trust at half this)
    # What the tag statistics learn from (tracker.costs.learn_tag_statistics): pairs with OKS above
    # trust_clear_oks whose row and column hold no other OKS above trust_ambiguous_oks; running means
    # over about the last trust_memory such pairs.
    trust_clear_oks: float = 0.6
    trust_ambiguous_oks: float = 0.2
    trust_memory: float = 20.0
    max_cost: float = 0.75         # a pair costing more (per unit of total weight) is never matched

    # --- gates: each cue alone can forbid a pair, none alone can force one ---
    tag_gate: float = 10.0         # tag distance above which a pair is refused
    tag_gate_fresh: float = 6.0    # the tag gate for a track found in the previous frame ...
    tag_gate_ramp: float = 0.3     # ... widening to tag_gate over this many seconds missed (0: tag_gate always)
    motion_gate: float = 4.0       # Mahalanobis length of the joints' mean shift from the predicted pose
    min_overlap: float = 0.05      # a pair needs OKS (or IoU, when iou_weight > 0) above this

    # --- re-identification of lost tracks (by tag; by motion when tags are off) ---
    reid_tag_gate: float = 4.0     # tag distance under which a lost track may be taken back
    reid_radius: float = 1.0       # plus reid_speed * time lost, in person sizes: how far a lost person may be
    reid_speed: float = 2.5        # person sizes per second
    reid_near_weight: float = 0.25  # by tag: nearness (1 = at the edge of reach) only breaks ties
    reid_max_size_ratio: float = 2.5  # a returning person's size is within this factor of the track's

    # --- motion model (constant velocity Kalman filter on centre, size and aspect) ---
    measurement_noise: float = 0.1  # std of the measured centre and size, as a fraction of the person's size
    acceleration_noise: float = 0.3  # spectral density of the acceleration, in person sizes / s^2

    # --- keypoint smoothing of the output (One-Euro filter) ---
    smoothing: bool = True
    smooth_min_cutoff: float = 1.0   # Hz; lower: steadier when still
    smooth_beta: float = 10.0        # Hz of cutoff added per person size / s of joint speed
    smooth_d_cutoff: float = 1.0     # Hz, for the speed estimate

    # --- the reported box (TrackedPose.box_smoothed; output only, association does not use it). Measured on
    # PETS09-S2L1 frames 1-400 with the default model, across halves (docs/tracker.md, "Where MOTA is lost") ---
    box_size_time: float = 0.3       # seconds its width and height are averaged over (exponentially); 0: as detected
    box_size_jump: float = 2.0       # a width or height this many times the average (or 1 / this) restarts it
    box_lead: float = 0.02           # heights it moves ahead along a walker's horizontal motion (0: where detected)
    box_lead_speed: float = 0.6      # heights per second at which the lead is tanh(1) = 0.76 of box_lead

    # --- keypoints ---
    min_keypoint_score: float = 0.05  # a joint below this counts as not found
    min_box_aspect: float = 0.4       # a person's box is at least this wide for its height (and tall for its width)

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_score <= self.high_score:
            raise ValueError(f"need 0 <= low_score <= high_score, got {self.low_score}, {self.high_score}")
        if self.confirm_hits < 1:
            raise ValueError("confirm_hits must be at least 1")
        if not 0.0 <= self.tag_momentum < 1.0:
            raise ValueError("tag_momentum must be in [0, 1)")
        if self.reid_time < 0 or self.tentative_max_gap < 0:
            raise ValueError("times must not be negative")
        if self.trust_memory < 1.0:
            raise ValueError("trust_memory must be at least 1 (pairs)")
        if self.tag_update_gate <= 0.0:
            raise ValueError("tag_update_gate must be positive (a large value turns it off)")
        if self.tag_gate_ramp < 0.0:
            raise ValueError("tag_gate_ramp must not be negative")
        if self.box_size_time < 0.0:
            raise ValueError("box_size_time must not be negative")
        if self.box_size_jump <= 1.0:
            raise ValueError("box_size_jump must be above 1")
        if self.box_lead < 0.0 or self.box_lead_speed <= 0.0:
            raise ValueError("box_lead must not be negative and box_lead_speed must be positive")
        if self.reid_max_size_ratio <= 1.0:
            raise ValueError("reid_max_size_ratio must be above 1")
