"""tagtrack: real-time multi-person pose estimation and tracking with associative embedding.

The repository root is this package: its folders install as ``tagtrack.model``, ``tagtrack.training``,
``tagtrack.tracker``, ``tagtrack.realtime`` and ``tagtrack.bench``; the command line is ``tagtrack.main``.
"""

__version__ = "0.1.0"
