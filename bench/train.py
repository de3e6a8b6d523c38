"""Training throughput: images/s of a preset's forward + loss + backward + Adam step, data included.

Runs on synthetic stick-figure scenes generated into a temporary folder at the preset's input size,
through the same dataset, loss and optimiser as training.train (single process, no checkpoints).
An "image" is one network input, so a pair of views counts as two.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, replace

import torch
from torch.utils.data import DataLoader

from tagtrack.model.networks import build_network
from tagtrack.training.config import preset
from tagtrack.training.dataset import CocoKeypointDataset, TargetConfig, flatten_views
from tagtrack.training.losses import total_loss
from tagtrack.training.synthetic import SceneConfig, generate_dataset

log = logging.getLogger(__name__)


@dataclass
class TrainBenchmark:
    preset: str
    input_hw: tuple[int, int]
    batch_images: int  # network inputs per step (batch x views)
    threads: int
    device: str
    seconds_per_step: list[float]

    @property
    def images_per_second(self) -> float:
        return self.batch_images / min(self.seconds_per_step)

    @property
    def median_images_per_second(self) -> float:
        ordered = sorted(self.seconds_per_step)
        return self.batch_images / ordered[len(ordered) // 2]

    def summary(self) -> str:
        h, w = self.input_hw
        return (f"train {self.preset} {h}x{w} on {self.device} ({self.threads} threads): "
                f"{self.images_per_second:.2f} images/s best, {self.median_images_per_second:.2f} median "
                f"({self.batch_images} images/step, {len(self.seconds_per_step)} steps)")


def benchmark_training(preset_name: str = "small", steps: int = 5, batch_size: int = 4, threads: int = 0,
                       warmup: int = 2) -> TrainBenchmark:
    if threads > 0:
        torch.set_num_threads(threads)
    config = replace(preset(preset_name), batch_size=batch_size)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    height, width = config.input_hw
    with tempfile.TemporaryDirectory(prefix="tagtrack-bench-") as folder:
        annotations = generate_dataset(folder, num_images=batch_size * 2,
                                       config=SceneConfig(width=width, height=height), seed=0)
        dataset = CocoKeypointDataset(annotations, f"{folder}/images",
                                      TargetConfig(height, width, config.sigma, config.sigma_mode, config.max_people),
                                      config.augment, views=2 if config.pairs else 1)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
        model = build_network(config.model).to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        times: list[float] = []
        while len(times) < warmup + steps:
            batches = iter(loader)
            start = time.perf_counter()
            for batch in batches:  # the timed step includes loading and augmenting its batch
                batch = {k: v.to(device) for k, v in flatten_views(batch).items()}
                terms = total_loss(model.forward_stacks(batch["images"]), batch["heatmaps"], batch["masks"],
                                   batch["joints"], config.loss, scales=batch["scales"], ids=batch["ids"],
                                   num_views=2 if config.pairs else 1)
                optimizer.zero_grad(set_to_none=True)
                terms.total.backward()
                optimizer.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
                log.info("step %d: %.3f s", len(times), times[-1])
                if len(times) >= warmup + steps:
                    break
                start = time.perf_counter()
    return TrainBenchmark(preset_name, (height, width), batch_size * (2 if config.pairs else 1),
                          torch.get_num_threads(), str(device), times[warmup:])
