"""Architectures shared by every framework, defined once so no file restates a number.

MNIST CNN: "An Analytical Study of Major Deep Learning Framework & APIs", Fig. 5.
Per-layer parameters 832 / 18,496 / 1,639,424 / 10,250 = 1,669,002.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConvNetSpec:
    name: str
    input_shape: tuple[int, int, int]      # H, W, C
    classes: int
    conv_layers: tuple[tuple[int, int], ...]  # (filters, kernel size), valid padding, ReLU, then max-pool
    pool: int
    dense_units: int
    dropout: float
    parameters: int                        # what every implementation must report

    def flatten_size(self) -> int:
        h, w, _ = self.input_shape
        for _, kernel in self.conv_layers:
            h, w = (h - kernel + 1) // self.pool, (w - kernel + 1) // self.pool
        return h * w * self.conv_layers[-1][0]


MNIST_CNN = ConvNetSpec(
    name="mnist_cnn",
    input_shape=(28, 28, 1),
    classes=10,
    conv_layers=((32, 5), (64, 3)),
    pool=2,
    dense_units=1024,
    dropout=0.25,
    parameters=1_669_002,
)

MODELS = {MNIST_CNN.name: MNIST_CNN}

# Adam as Keras defines it; every framework is configured with these values.
ADAM = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
