"""Training throughput: images/s of a preset's training step (training.step: forward, every loss term, backward,
clipping, optimiser step), data included.

Runs on synthetic stick-figure scenes generated into a temporary folder at the config's input size, through the
same dataset and step as training.train (single process, no checkpoints, no learning-rate schedule).
An "image" is one network input, so a pair of views counts as two.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, replace

import torch
from torch.utils.data import DataLoader

from tagtrack.training.config import TrainConfig, preset
from tagtrack.training.dataset import CocoKeypointDataset, TargetConfig
from tagtrack.training.step import TrainingStep, all_stacks, batch_on_device, build_optimizer, learning_parameters
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
    """The preset's training step timed (see benchmark_config)."""
    return benchmark_config(preset(preset_name), preset_name, steps, batch_size, threads, warmup)


def synthetic_training_set(config: TrainConfig, folder: str, num_images: int) -> CocoKeypointDataset:
    """`num_images` stick-figure scenes at the config's input size, generated into `folder`, read as training reads
    its data (the config's targets, augmentation and views)."""
    height, width = config.input_hw
    annotations = generate_dataset(folder, num_images=num_images, config=SceneConfig(width=width, height=height),
                                   seed=0)
    return CocoKeypointDataset(annotations, f"{folder}/images", TargetConfig.of_training(config), config.augment,
                               views=2 if config.pairs else 1)


def benchmark_config(config: TrainConfig, name: str, steps: int = 5, batch_size: int = 4, threads: int = 0,
                     warmup: int = 2) -> TrainBenchmark:
    """Seconds per training step of `config` (at `batch_size`) on synthetic scenes, loading and augmenting its batch
    included: the step of training.train with every loss option of the config (AMP as the config says, on CUDA)."""
    # imported here, after training.config: model.networks imported first meets model.config's import of it
    from tagtrack.model.networks import build_network

    if threads > 0:
        torch.set_num_threads(threads)
    config = replace(config, batch_size=batch_size)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="tagtrack-bench-") as folder:
        dataset = synthetic_training_set(config, folder, batch_size * 2)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
        model = build_network(config.model).to(device)
        parameters = learning_parameters(model, config.trainable)
        scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
        step = TrainingStep.for_config(config, all_stacks(model, config), parameters,
                                       build_optimizer(parameters, config), scaler, dataset.schema.flip_index)
        times: list[float] = []
        while len(times) < warmup + steps:
            batches = iter(loader)
            start = time.perf_counter()
            for batch in batches:  # the timed step includes loading and augmenting its batch
                step(batch_on_device(batch, device, config.channels_last), len(times))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
                log.info("step %d: %.3f s", len(times), times[-1])
                if len(times) >= warmup + steps:
                    break
                start = time.perf_counter()
    return TrainBenchmark(name, config.input_hw, batch_size * (2 if config.pairs else 1),
                          torch.get_num_threads(), str(device), times[warmup:])
