"""Architectures shared by every framework, defined once so no file restates a number.

Two families, each a frozen description that every framework file turns into its own
layers (the same loop in each: `ConvNetSpec.blocks`, then the dense head; or embedding
-> LSTM -> dense for `RecurrentSpec`). `parameters` is the count every implementation
must report; it is written out by hand from the papers and checked against
`count_parameters()` by a unit test, so a change to either shows.

MNIST CNN: "An Analytical Study of Major Deep Learning Framework & APIs", Fig. 5.
  Per-layer parameters 832 / 18,496 / 1,639,424 / 10,250 = 1,669,002.
CIFAR CNN: the CIFAR-10 network of the framework "Rosetta Stone" comparison
  (github.com/ilkarman/DeepLearningFrameworks, *_CIFAR.ipynb): two blocks of two 3x3
  'same' convolutions (50, then 100 filters), each block max-pooled and dropped out
  (0.25), then Dense 512 + dropout 0.5. 3,441,592 parameters for 10 classes,
  3,487,762 for CIFAR-100's 100.
IMDB LSTM: embedding -> LSTM -> dense, the sizes of the same comparison's IMDB
  sentiment RNN (common/params_lstm.py: embedding 125, hidden 100, sequences of 150
  tokens), with the vocabulary capped at 30,000 words. Keras' LSTM form: one bias
  vector per gate (frameworks with cuDNN's two keep the second at zero, untrained).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConvBlock:
    convs: tuple[tuple[int, int], ...]  # (filters, kernel size) per convolution, each + ReLU
    padding: str                        # "valid" | "same" (odd kernels: pad kernel // 2)
    pool: int                           # max-pool size (= stride) after the convolutions
    dropout: float = 0.0                # after the pool; 0: no dropout layer


@dataclass(frozen=True)
class ConvNetSpec:
    """Conv blocks -> flatten -> Dense(dense_units) + ReLU -> dropout -> Dense(classes)."""
    name: str
    input_shape: tuple[int, int, int]  # H, W, C
    classes: int
    blocks: tuple[ConvBlock, ...]
    dense_units: int
    dropout: float
    parameters: int
    input_dtype = "float32"

    def block_layers(self):
        """(block, [(in_channels, filters, kernel), ...]) per block, in order: what a
        framework needs to build each convolution (padding, pool, dropout: the block's)."""
        channels = self.input_shape[2]
        for block in self.blocks:
            convs = []
            for filters, kernel in block.convs:
                convs.append((channels, filters, kernel))
                channels = filters
            yield block, convs

    def conv_layers(self):
        """(in_channels, filters, kernel, padding) of every convolution, in order."""
        for block, convs in self.block_layers():
            for c_in, filters, kernel in convs:
                yield c_in, filters, kernel, block.padding

    def flatten_size(self) -> int:
        h, w, channels = self.input_shape
        for block in self.blocks:
            for filters, kernel in block.convs:
                if block.padding == "valid":
                    h, w = h - kernel + 1, w - kernel + 1
                channels = filters
            h, w = h // block.pool, w // block.pool
        return h * w * channels

    def count_parameters(self) -> int:
        convs = sum(k * k * c_in * c_out + c_out for c_in, c_out, k, _ in self.conv_layers())
        dense = self.flatten_size() * self.dense_units + self.dense_units
        return convs + dense + self.dense_units * self.classes + self.classes


@dataclass(frozen=True)
class RecurrentSpec:
    """Embedding(vocab, embedding_dim) -> LSTM(hidden_units), last hidden state ->
    Dense(classes). Inputs are int32 token ids, 0 = padding (it is embedded like any
    other id, as in the source comparison: no masking anywhere)."""
    name: str
    vocab_size: int
    sequence_length: int
    embedding_dim: int
    hidden_units: int
    classes: int
    parameters: int
    input_dtype = "int32"

    @property
    def input_shape(self) -> tuple[int]:
        return (self.sequence_length,)

    def count_parameters(self) -> int:
        e, h = self.embedding_dim, self.hidden_units
        lstm = 4 * (e * h + h * h + h)  # kernel, recurrent kernel, one bias; gates i, f, c, o
        return self.vocab_size * e + lstm + h * self.classes + self.classes


MNIST_CNN = ConvNetSpec(
    name="mnist_cnn",
    input_shape=(28, 28, 1),
    classes=10,
    blocks=(ConvBlock(((32, 5),), "valid", 2), ConvBlock(((64, 3),), "valid", 2)),
    dense_units=1024,
    dropout=0.25,
    parameters=1_669_002,
)


def _cifar_cnn(name: str, classes: int, parameters: int) -> ConvNetSpec:
    return ConvNetSpec(
        name=name, input_shape=(32, 32, 3), classes=classes,
        blocks=(ConvBlock(((50, 3), (50, 3)), "same", 2, 0.25),
                ConvBlock(((100, 3), (100, 3)), "same", 2, 0.25)),
        dense_units=512, dropout=0.5, parameters=parameters)


CIFAR10_CNN = _cifar_cnn("cifar10_cnn", 10, 3_441_592)
CIFAR100_CNN = _cifar_cnn("cifar100_cnn", 100, 3_487_762)

IMDB_LSTM = RecurrentSpec(
    name="imdb_lstm",
    vocab_size=30_000,
    sequence_length=150,
    embedding_dim=125,
    hidden_units=100,
    classes=2,
    parameters=3_840_602,
)

MODELS = {m.name: m for m in (MNIST_CNN, CIFAR10_CNN, CIFAR100_CNN, IMDB_LSTM)}

# Adam as Keras defines it; every framework is configured with these values.
ADAM = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}

# Keras' default initialisation, which every implementation reproduces:
#   Conv / Dense kernels: Glorot uniform; biases: zero.
#   Embedding: uniform in [-0.05, 0.05].
#   LSTM: input kernel Glorot uniform, recurrent kernel orthogonal, bias zero except
#   the forget gate's, which starts at 1 (Keras' unit_forget_bias).
EMBEDDING_INIT_RANGE = 0.05
LSTM_FORGET_BIAS = 1.0
