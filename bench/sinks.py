"""Where the post thread's CPU goes: decode + track against each sink (drawing + video encoding, JSON
Lines), measured as thread CPU time inside a real pipeline run, next to the network's CPU per frame.

``python -m tagtrack.bench.sinks VIDEO [--max-frames N]`` prints CPU ms per frame (docs/realtime.md, "Sinks").
Thread CPU time (``time.thread_time``) is what a core spends on the work, whatever else the machine runs;
the network's CPU is the process CPU of ``engine.infer`` calls in a loop (all its threads).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TimedSink:
    """Wraps a sink; adds up the calling thread's CPU time spent in its write()."""

    sink: object
    cpu_seconds: float = 0.0
    writes: int = 0

    def write(self, result) -> None:
        started = time.thread_time()
        self.sink.write(result)
        self.cpu_seconds += time.thread_time() - started
        self.writes += 1

    def close(self) -> None:
        self.sink.close()


@dataclass
class PostThreadClock:
    """A sink after the timed ones: the post thread's CPU time at each frame (decode + track + sinks)."""

    first: float | None = None
    last: float = 0.0
    writes: int = 0

    def write(self, result) -> None:
        now = time.thread_time()
        if self.first is None:
            self.first = now
        self.last = now
        self.writes += 1

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    from tagtrack.bench.machine import cpu_description
    from tagtrack.model.transforms import Preprocessor
    from tagtrack.realtime.run import LimitedSource, RunOptions, build_pipeline, run_model
    from tagtrack.realtime.sources import open_source

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--max-frames", type=int, default=150)
    parser.add_argument("--engine", default="auto")
    args = parser.parse_args(argv)
    print(cpu_description())
    engine, _ = run_model(RunOptions(source=args.video, engine=args.engine, device="cpu"))
    source = LimitedSource(open_source(args.video), args.max_frames + 1)
    first = source.read()  # for the network's timing; the run gets the frames after it
    _, network_input = Preprocessor(tuple(engine.input_hw))(first.image)
    for _ in range(5):
        engine.infer(network_input[None])
    started = time.process_time()
    for _ in range(20):
        engine.infer(network_input[None])
    infer_ms = (time.process_time() - started) / 20 * 1e3
    with tempfile.TemporaryDirectory(prefix="tagtrack-sinks-") as folder:
        options = RunOptions(source=args.video, out=Path(folder) / "out.mp4", json=Path(folder) / "out.jsonl",
                             progress=False)
        # The clock is the last sink: between its first and last reading the post thread did frames - 1 whole
        # frames (decode + track + every sink) either way round.
        clock = PostThreadClock()
        sinks: list[TimedSink] = []

        def time_sink(sink) -> TimedSink:
            sinks.append(TimedSink(sink))
            return sinks[-1]

        summary = build_pipeline(options, engine, [clock], source=source, wrap_sink=time_sink).run()
    frames = max(clock.writes - 1, 1)
    sink_ms = {type(timed.sink).__name__: timed.cpu_seconds / timed.writes * 1e3 for timed in sinks}
    # Between the first and the last clock reading the post thread did `frames` x (decode + track + sinks);
    # the sinks' share is known, the rest is decode + track.
    post_ms = (clock.last - clock.first) / frames * 1e3
    decode_track_ms = post_ms - sum(sink_ms.values())
    print(f"{summary.frames} frames of {args.video}, engine {getattr(engine, 'name', '?')}")
    print(f"CPU ms per frame: network {infer_ms:.2f} (all its threads); post thread {post_ms:.2f} = decode + track "
          f"{decode_track_ms:.2f} + " + " + ".join(f"{name} {ms:.2f}" for name, ms in sink_ms.items()))


if __name__ == "__main__":
    main()
