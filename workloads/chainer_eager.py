"""Chainer, define-by-run training loop (CPU: numpy + its OpenBLAS)."""

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np
from threadpoolctl import threadpool_info

from contract.models import ADAM, EMBEDDING_INIT_RANGE, LSTM_FORGET_BIAS, RecurrentSpec

from .harness import Implementation as Base
from .harness import batches

GLOROT = {"initialW": chainer.initializers.GlorotUniform(), "initial_bias": 0}


class ConvNet(chainer.Chain):
    def __init__(self, m):
        super().__init__()
        self.m = m
        with self.init_scope():
            self.blocks = chainer.ChainList(*[chainer.ChainList(*[
                L.Convolution2D(c_in, c_out, k, pad=k // 2 if block.padding == "same" else 0, **GLOROT)
                for c_in, c_out, k in convs]) for block, convs in m.block_layers()])
            self.hidden = L.Linear(m.flatten_size(), m.dense_units, **GLOROT)
            self.out = L.Linear(m.dense_units, m.classes, **GLOROT)

    def forward(self, x):
        for block, convs in zip(self.m.blocks, self.blocks):
            for conv in convs:
                x = F.relu(conv(x))
            x = F.max_pooling_2d(x, block.pool, cover_all=False)  # cover_all=False: floor, as Keras
            if block.dropout:
                x = F.dropout(x, block.dropout)
        return self.out(F.dropout(F.relu(self.hidden(x)), self.m.dropout))  # dropout only if config.train


class Recurrent(chainer.Chain):
    """Embedding -> LSTM, its last hidden state -> Dense."""

    def __init__(self, m):
        super().__init__()
        e, h = m.embedding_dim, m.hidden_units
        with self.init_scope():
            uniform = chainer.initializers.Uniform(EMBEDDING_INIT_RANGE)
            self.embed = L.EmbedID(m.vocab_size, e, initialW=uniform)
            # Keras' LSTM form: one bias per gate (upward's; lateral has none), the forget gate's 1
            self.lstm = L.LSTM(e, h, upward_init=0, lateral_init=0, forget_bias_init=LSTM_FORGET_BIAS)
            self.out = L.Linear(h, m.classes, **GLOROT)
        # L.LSTM would draw each gate's (h, in) block apart; Keras draws each whole matrix. Glorot
        # over upward's (4h, e) has the fans of Keras' (e, 4h) kernel; orthogonal columns of
        # lateral's (4h, h) are Keras' orthogonal rows (Chainer's default scale is 1.1)
        chainer.initializers.GlorotUniform()(self.lstm.upward.W.array)
        chainer.initializers.Orthogonal(scale=1.0)(self.lstm.lateral.W.array)

    def forward(self, tokens):
        self.lstm.reset_state()
        for x in F.separate(self.embed(tokens), axis=1):  # all steps, no masking
            h = self.lstm(x)
        return self.out(h)


class Implementation(Base):
    framework, api, data_layout = "chainer", "eager", "NCHW"

    def version(self):
        return chainer.__version__

    def configure(self):
        np.random.seed(self.spec["seed"])  # Chainer's initializers and dropout draw from numpy
        if self.gpu:
            raise RuntimeError("device gpu requested but this Chainer image has no CuPy (CPU only)")
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        return {"intra_op_threads": blas[0] if blas else None, "inter_op_threads": None,
                "use_ideep": chainer.config.use_ideep, "type_check": chainer.config.type_check,
                "dtype": str(chainer.config.dtype),
                # L.LSTM stepped over time beats L.NStepLSTM on CPU: without cuDNN the latter
                # restacks its eight weight matrices at every step (about 2x slower here)
                "lstm_kernel": "L.LSTM stepped over time (F.lstm, numpy)"}

    def build(self, m):
        self.model = (Recurrent if isinstance(m, RecurrentSpec) else ConvNet)(m)
        self.optimizer = chainer.optimizers.Adam(
            alpha=self.spec["learning_rate"], beta1=ADAM["beta_1"], beta2=ADAM["beta_2"], eps=ADAM["epsilon"])
        self.optimizer.setup(self.model)
        return sum(p.size for p in self.model.params())

    def precision_settings(self):  # fp32 only: no bfloat16 dtype, mixed16 needs CuPy
        return {"dtype": str(chainer.config.dtype), "parameter_dtype": str(next(self.model.params()).dtype)}

    def train_epoch(self, x, y, batch_size):
        loss_sum, correct = 0.0, 0
        for s in self.train_batches(len(x), batch_size):
            logits = self.model(x[s])
            loss = F.softmax_cross_entropy(logits, y[s])
            self.model.cleargrads()
            loss.backward()
            self.optimizer.update()
            loss_sum += float(loss.array) * len(y[s])
            correct += int((logits.array.argmax(1) == y[s]).sum())
        return loss_sum / len(x), correct / len(x)

    def evaluate(self, x, y, batch_size):
        loss_sum, correct = 0.0, 0
        for s in batches(len(x), batch_size):
            logits = self.logits(x[s])
            loss_sum += float(F.softmax_cross_entropy(logits, y[s], reduce="no").array.sum())
            correct += int((logits.argmax(1) == y[s]).sum())
        return loss_sum / len(x), correct / len(x)

    def logits(self, x):
        with chainer.using_config("train", False), chainer.no_backprop_mode():
            return self.model(x).array
