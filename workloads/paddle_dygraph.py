"""PaddlePaddle, dynamic graph (dygraph) training loop; optionally paddle.jit.to_static."""
import os

import paddle
import paddle.nn.functional as F
from paddle import nn

from .harness import Implementation as Base, batches
from .models import ADAM


class Implementation(Base):
    framework, api, data_layout = "paddle", "dygraph", "NCHW"

    def version(self):
        return paddle.__version__

    def configure(self):
        paddle.seed(self.spec["seed"])
        if self.gpu and paddle.device.cuda.device_count() == 0:
            raise RuntimeError("device gpu requested but Paddle sees no CUDA device")
        paddle.set_device("gpu:0" if self.gpu else "cpu")
        if self.gpu:  # cuDNN algorithm search, as PyTorch's cudnn.benchmark (a GPU-build flag)
            paddle.set_flags({"FLAGS_cudnn_exhaustive_search": True})
        self.to_static = bool(self.spec["options"].get("to_static", False))
        # Paddle sets OMP_NUM_THREADS=1 at import unless the environment (threads.intra_op,
        # applied by the harness before the import) says otherwise; eager ops run in order,
        # so there is no inter-op pool.
        return {"intra_op_threads": int(os.environ["OMP_NUM_THREADS"]), "inter_op_threads": None,
                "to_static": self.to_static, "cudnn_exhaustive_search": self.gpu,
                "onednn": paddle.get_flags("FLAGS_use_onednn")["FLAGS_use_onednn"]}

    def build(self, m):
        (c1, k1), (c2, k2) = m.conv_layers

        def attrs():  # Keras' default init: Glorot uniform weights, zero biases
            return {"weight_attr": paddle.ParamAttr(initializer=nn.initializer.XavierUniform()),
                    "bias_attr": paddle.ParamAttr(initializer=nn.initializer.Constant(0.0))}
        self.model = nn.Sequential(
            nn.Conv2D(m.input_shape[2], c1, k1, **attrs()), nn.ReLU(), nn.MaxPool2D(m.pool),
            nn.Conv2D(c1, c2, k2, **attrs()), nn.ReLU(), nn.MaxPool2D(m.pool),
            nn.Flatten(), nn.Linear(m.flatten_size(), m.dense_units, **attrs()), nn.ReLU(),
            nn.Dropout(m.dropout), nn.Linear(m.dense_units, m.classes, **attrs()))
        self.optimizer = paddle.optimizer.Adam(
            learning_rate=self.spec["learning_rate"], beta1=ADAM["beta_1"], beta2=ADAM["beta_2"],
            epsilon=ADAM["epsilon"], parameters=self.model.parameters())
        self.forward = paddle.jit.to_static(self.model) if self.to_static else self.model
        return sum(int(p.size) for p in self.model.parameters())

    @staticmethod
    def _tensors(x, y, s):
        return paddle.to_tensor(x[s]), paddle.to_tensor(y[s])

    def train_epoch(self, x, y, batch_size):
        self.model.train()
        loss_sum, correct = paddle.zeros([]), paddle.zeros([], dtype="int64")
        for s in batches(len(x), batch_size):
            xb, yb = self._tensors(x, y, s)
            logits = self.forward(xb)
            loss = F.cross_entropy(logits, yb)  # batch mean
            loss.backward()
            self.optimizer.step()
            self.optimizer.clear_grad()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
        return loss_sum.item() / len(x), correct.item() / len(x)  # .item() synchronises

    @paddle.no_grad()
    def evaluate(self, x, y, batch_size):
        self.model.eval()
        loss_sum, correct = 0.0, 0
        for s in batches(len(x), batch_size):
            xb, yb = self._tensors(x, y, s)
            logits = self.forward(xb)
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
        return loss_sum / len(x), correct / len(x)

    @paddle.no_grad()
    def logits(self, x):
        self.model.eval()
        return self.forward(paddle.to_tensor(x)).numpy()

    def synchronize(self):
        if self.gpu:
            paddle.device.synchronize()

    def device_name(self):
        return paddle.device.cuda.get_device_name() if self.gpu else super().device_name()

    def peak_device_memory_mb(self):
        return paddle.device.cuda.max_memory_allocated() / 2**20 if self.gpu else None
