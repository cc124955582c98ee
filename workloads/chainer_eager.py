"""Chainer, define-by-run training loop (CPU: numpy + its OpenBLAS)."""
import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np
from threadpoolctl import threadpool_info

from .harness import Implementation as Base, batches
from .models import ADAM


class Net(chainer.Chain):
    def __init__(self, m):
        super().__init__()
        self.pool, self.dropout = m.pool, m.dropout
        glorot = {"initialW": chainer.initializers.GlorotUniform(), "initial_bias": 0}
        channels = [m.input_shape[2]] + [filters for filters, _ in m.conv_layers]
        with self.init_scope():
            self.convs = chainer.ChainList(*[L.Convolution2D(c_in, c_out, k, **glorot) for c_in, (c_out, k)
                                             in zip(channels, m.conv_layers)])
            self.hidden = L.Linear(m.flatten_size(), m.dense_units, **glorot)
            self.out = L.Linear(m.dense_units, m.classes, **glorot)

    def forward(self, x):
        for conv in self.convs:  # cover_all=False: floor, as Keras' valid pooling
            x = F.max_pooling_2d(F.relu(conv(x)), self.pool, cover_all=False)
        return self.out(F.dropout(F.relu(self.hidden(x)), self.dropout))  # dropout only if config.train


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
                "dtype": str(chainer.config.dtype)}

    def build(self, m):
        self.model = Net(m)
        self.optimizer = chainer.optimizers.Adam(
            alpha=self.spec["learning_rate"], beta1=ADAM["beta_1"], beta2=ADAM["beta_2"], eps=ADAM["epsilon"])
        self.optimizer.setup(self.model)
        return sum(p.size for p in self.model.params())

    def train_epoch(self, x, y, batch_size):
        loss_sum, correct = 0.0, 0
        for s in batches(len(x), batch_size):
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
