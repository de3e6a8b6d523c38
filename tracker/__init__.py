"""Linking poses across frames into tracks: `PoseTracker(TrackerConfig()).update(poses, timestamp)`."""

from tagtrack.tracker.config import TrackerConfig
from tagtrack.tracker.tracker import PoseTracker, TrackedPose, TrackState

__all__ = ["PoseTracker", "TrackerConfig", "TrackedPose", "TrackState"]
