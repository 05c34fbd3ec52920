"""CompareConfig: the settings of `pcae compare-decoders` (eval.compare), torch-free.

It lives apart from the comparison so that the command line reads its defaults (and --quick's) by
import without loading torch.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CompareConfig:
    """Settings of one comparison. Every model gets `steps` AdamW steps of `batch_size` images."""

    bottlenecks: tuple[int, ...] = (10, 100)  # (): read from the given checkpoints
    data: str = "fashion-mnist"
    data_root: str | None = None
    out: str = "reports/compare-decoders"
    steps: int = 2000
    batch_size: int = 32
    lr: float = 4e-3
    seed: int = 0
    channels: int = 24  # PixelCNN decoder and unconditional reference: feature maps per stack
    n_layers: int = 1  # gated layers after the first
    encoder_channels: int = 32
    deconv_channels: int = 32
    eval_images: int = 2000  # test images for NLL, gains, probe/k-NN test set, MSE (0: all)
    probe_images: int = 10000  # train images: the probe's training set, the k-NN database (0: all)
    figure_images: int = 8  # rows of the figure (and images for the sample PSNR)
    samples_per_image: int = 4
    judge_images: int = 200  # test sources for the sample judge (0: off)
    global_pixelcnn: bool = False  # also train the PixelCNN-AE with global conditioning only
    eval_batch: int = 100  # h is shuffled inside batches of this size
    knn_k: int = 20
    active_threshold: float = 0.01
    device: str = "cpu"
    quick: bool = False

    def __post_init__(self):
        object.__setattr__(self, "bottlenecks", tuple(int(m) for m in self.bottlenecks))
        checks = [
            ("bottlenecks", min(self.bottlenecks, default=1) >= 1, "sizes >= 1"),
            ("steps", self.steps >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("eval_images", self.eval_images >= 0, ">= 0"),
            ("probe_images", self.probe_images >= 0, ">= 0"),
            ("figure_images", self.figure_images >= 1, ">= 1"),
            ("samples_per_image", self.samples_per_image >= 1, ">= 1"),
            ("judge_images", self.judge_images >= 0, ">= 0"),
            ("eval_batch", self.eval_batch >= 2, ">= 2 (h is shuffled inside a batch)"),
            ("knn_k", self.knn_k >= 1, ">= 1"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")
        if len(set(self.bottlenecks)) != len(self.bottlenecks):
            raise ValueError(f"bottlenecks must be distinct, got {self.bottlenecks}")


# Tiny models, few steps, small subsets: the whole pipeline in about a minute on a CPU.
QUICK = dict(steps=20, batch_size=16, channels=8, n_layers=2, encoder_channels=8, deconv_channels=8,
             eval_images=64, probe_images=256, figure_images=2, samples_per_image=2, eval_batch=32,
             judge_images=8, quick=True)
