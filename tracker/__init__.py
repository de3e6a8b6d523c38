"""Linking poses across frames into tracks: `PoseTracker(TrackerConfig()).update(poses, timestamp)`."""

from tracker.config import TrackerConfig
from tracker.tracker import PoseTracker, TrackedPose, TrackState

__all__ = ["PoseTracker", "TrackerConfig", "TrackedPose", "TrackState"]
