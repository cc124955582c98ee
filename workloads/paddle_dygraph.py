"""PaddlePaddle, dynamic graph (dygraph) training loop; optionally paddle.jit.to_static.
Data-parallel: paddle.distributed.init_parallel_env + paddle.DataParallel in workers started
by dlbench's launcher with the environment paddle.distributed.launch would give them."""
import contextlib
import os
import time

import numpy as np
import paddle
import paddle.distributed as dist
import paddle.nn.functional as F
from paddle import nn
from paddle.distributed.fleet.utils.hybrid_parallel_util import fused_allreduce_gradients

from contract.models import ADAM, EMBEDDING_INIT_RANGE, LSTM_FORGET_BIAS, RecurrentSpec

from .harness import Implementation as Base
from .harness import Unsupported, batches

AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}  # mixed policies; fp32/tf32: none


def _init(initializer):
    return paddle.ParamAttr(initializer=initializer)


def _keras_attrs():  # conv / dense: Glorot uniform weights, zero biases (Keras)
    return {"weight_attr": _init(nn.initializer.XavierUniform()),
            "bias_attr": _init(nn.initializer.Constant(0.0))}


def _conv_net(m):
    layers = []
    for block, convs in m.block_layers():
        for c_in, filters, kernel in convs:
            conv = nn.Conv2D(c_in, filters, kernel, padding=block.padding, **_keras_attrs())
            layers += [conv, nn.ReLU()]
        layers.append(nn.MaxPool2D(block.pool))
        if block.dropout:
            layers.append(nn.Dropout(block.dropout))
    return nn.Sequential(
        *layers, nn.Flatten(), nn.Linear(m.flatten_size(), m.dense_units, **_keras_attrs()),
        nn.ReLU(), nn.Dropout(m.dropout), nn.Linear(m.dense_units, m.classes, **_keras_attrs()))


class _Recurrent(nn.Layer):
    """Embedding -> LSTM, its last hidden state -> Dense; initialised as Keras does."""

    def __init__(self, m):
        super().__init__()
        h = m.hidden_units
        self.embedding = nn.Embedding(m.vocab_size, m.embedding_dim, weight_attr=_init(
            nn.initializer.Uniform(-EMBEDDING_INIT_RANGE, EMBEDDING_INIT_RANGE)))
        bias = np.zeros(4 * h, dtype="float32")
        bias[h:2 * h] = LSTM_FORGET_BIAS  # gates i, f, c, o: the forget gate's slice
        # weight_ih is Keras' (E, 4H) kernel transposed: same fans, same Glorot range.
        # cuDNN's second bias stays zero and untrained (learning rate 0), so bias_ih alone is
        # Keras' bias. Not bias_hh_attr=False nor trainable=False: in Paddle 3.3 the fused
        # rnn op then segfaults (3 of its 4 weights) or its backward fails (no grad to fill)
        frozen_zero = paddle.ParamAttr(initializer=nn.initializer.Constant(0.0), learning_rate=0.0)
        self.lstm = nn.LSTM(m.embedding_dim, h,
                            weight_ih_attr=_init(nn.initializer.XavierUniform()),
                            weight_hh_attr=_init(nn.initializer.Orthogonal()),
                            bias_ih_attr=_init(nn.initializer.Assign(bias)),
                            bias_hh_attr=frozen_zero)
        self.dense = nn.Linear(h, m.classes, **_keras_attrs())

    def forward(self, tokens):
        _, (h_n, _) = self.lstm(self.embedding(tokens))
        return self.dense(h_n[-1])


def _launch_environment(world, backend):
    """What paddle.distributed.launch sets for a worker (its collective controller), for
    this world: the TCP store on rank 0 at the coordinator (PADDLE_MASTER), one endpoint
    per worker, the backend (launch sets gloo when there is no device list)."""
    endpoints = [world.worker_address(r) for r in range(world.size)]
    env = {"PADDLE_TRAINER_ID": world.rank, "PADDLE_TRAINERS_NUM": world.size,
           "PADDLE_GLOBAL_RANK": world.rank, "PADDLE_GLOBAL_SIZE": world.size,
           "PADDLE_LOCAL_RANK": world.local_rank, "PADDLE_LOCAL_SIZE": world.local_size,
           "PADDLE_RANK_IN_NODE": world.local_rank, "PADDLE_NNODES": world.nodes,
           "PADDLE_MASTER": world.coordinator, "PADDLE_TRAINER_ENDPOINTS": ",".join(endpoints),
           "PADDLE_CURRENT_ENDPOINT": endpoints[world.rank], "PADDLE_DISTRI_BACKEND": backend}
    if backend == "nccl":
        env["FLAGS_selected_gpus"] = world.local_rank
    return {k: str(v) for k, v in env.items()}


class Implementation(Base):
    framework, api, data_layout = "paddle", "dygraph", "NCHW"
    optimizers = ("adam", "sgd")

    def version(self):
        return paddle.__version__

    def configure(self):
        paddle.seed(self.spec["seed"])
        if self.gpu and paddle.device.cuda.device_count() == 0:
            raise RuntimeError("device gpu requested but Paddle sees no CUDA device")
        paddle.set_device(f"gpu:{self.world.local_rank}" if self.gpu else "cpu")
        if self.gpu:  # cuDNN algorithm search, as PyTorch's cudnn.benchmark (a GPU-build flag)
            paddle.set_flags({"FLAGS_cudnn_exhaustive_search": True})
        self._apply_precision()
        self.to_static = bool(self.spec["options"].get("to_static", False))
        # Paddle sets OMP_NUM_THREADS=1 at import unless the environment (threads.intra_op,
        # applied by the harness before the import) says otherwise; eager ops run in order,
        # so there is no inter-op pool.
        options = {"intra_op_threads": int(os.environ["OMP_NUM_THREADS"]), "inter_op_threads": None,
                   "to_static": self.to_static, "cudnn_exhaustive_search": self.gpu,
                   "onednn": paddle.get_flags("FLAGS_use_onednn")["FLAGS_use_onednn"]}
        if isinstance(self.model_spec, RecurrentSpec):
            # nn.LSTM runs Paddle's fused `rnn` op: cuDNN's kernel on GPU, its own CPU kernel
            options["lstm_kernel"] = "cudnn" if self.gpu else "rnn_op_cpu"
        if self.world.parallel:
            backend = "nccl" if self.gpu else "gloo"
            os.environ.update(_launch_environment(self.world, backend))
            dist.init_parallel_env()  # ProcessGroup<backend> over the TCP store on PADDLE_MASTER
            options["parallel"] = {"mechanism": "paddle.DataParallel, no_sync + fused_allreduce_gradients",
                                   "backend": backend, "bucket_mb": 128}
        return options

    def _apply_precision(self):
        if self.gpu:  # Paddle's own TF32 switches (cuBLAS, cuDNN): on for tf32 only
            paddle.base.core.set_cublas_switch(self.precision == "tf32")
            paddle.base.core.set_cudnn_switch(self.precision == "tf32")
        self.amp_dtype = AMP_DTYPES.get(self.precision)
        # auto_cast only warns and does nothing where it cannot cast: refuse instead
        if self.amp_dtype and not self.gpu:
            raise Unsupported(f"Paddle {paddle.__version__}'s dygraph AMP (paddle.amp.auto_cast) runs "
                              "on CUDA, XPU and custom devices only; on the CPU it casts nothing")
        if self.amp_dtype and not getattr(paddle.amp, f"is_{self.amp_dtype}_supported")():
            raise Unsupported(f"paddle.amp.is_{self.amp_dtype}_supported() is False on this GPU")
        # O1: white-listed ops (conv, matmul) in the low precision, parameters stay float32
        self.scaler = paddle.amp.GradScaler(enable=self.precision == "fp16")  # dynamic loss scaling

    def _auto_cast(self):
        return paddle.amp.auto_cast(enable=self.amp_dtype is not None, dtype=self.amp_dtype or "float16")

    def precision_settings(self):
        core = paddle.base.core
        return {"cublas_tf32": core.get_cublas_switch() if self.gpu else None,
                "cudnn_tf32": core.get_cudnn_switch() if self.gpu else None,
                "amp_dtype": self.amp_dtype, "amp_level": "O1" if self.amp_dtype else None,
                "grad_scaler_enabled": self.scaler.is_enable(),
                "parameter_dtype": str(self.model.parameters()[0].dtype).removeprefix("paddle.")}

    def gpu_libraries(self):
        return {"cuda": paddle.version.cuda(), "cudnn": paddle.version.cudnn()}

    device_memory_kind = ("allocator peak: paddle.device.cuda.max_memory_allocated (excludes the "
                          "allocator's reserve and the CUDA context)")

    def build(self, m):
        self.model = _Recurrent(m) if isinstance(m, RecurrentSpec) else _conv_net(m)
        params = self.model.parameters()  # all to Adam, so clear_grad clears the frozen bias
        trainable = [p for p in params if not p.stop_gradient and p.optimize_attr["learning_rate"]]
        if self.spec["optimizer"] == "sgd":  # plain SGD, no momentum
            self.optimizer = paddle.optimizer.SGD(learning_rate=self.spec["learning_rate"], parameters=params)
        else:
            self.optimizer = paddle.optimizer.Adam(
                learning_rate=self.spec["learning_rate"], beta1=ADAM["beta_1"], beta2=ADAM["beta_2"],
                epsilon=ADAM["epsilon"], parameters=params)
        self.forward = self.train_forward = paddle.jit.to_static(self.model) if self.to_static else self.model
        self.no_sync, self.communication_s = contextlib.nullcontext, 0.0
        if self.world.parallel:
            # DataParallel broadcasts rank 0's parameters. Its reducer, all-reducing inside
            # backward, turns a lost peer's gloo::IoException into std::terminate (SIGABRT,
            # no result); so backward runs in no_sync and the gradients are all-reduced after
            # it (fused buckets, scaled by 1/world size: their mean), Paddle's gradient-
            # accumulation recipe; a lost peer is then a RuntimeError. Evaluation and logits
            # use the bare layer (no collective)
            self.train_forward = paddle.DataParallel(self.forward)
            self.no_sync = self.train_forward.no_sync
        return sum(int(p.size) for p in trainable)

    @staticmethod
    def _tensors(x, y, s):
        return paddle.to_tensor(x[s]), paddle.to_tensor(y[s])

    def train_epoch(self, x, y, batch_size):
        self.model.train()
        loss_sum, correct = paddle.zeros([]), paddle.zeros([], dtype="int64")
        for s in self.train_batches(len(x), batch_size):
            xb, yb = self._tensors(x, y, s)
            with self.no_sync():
                with self._auto_cast():
                    logits = self.train_forward(xb).astype("float32")  # softmax and loss in float32
                    loss = F.cross_entropy(logits, yb)  # batch mean
                self.scaler.scale(loss).backward()  # disabled: the loss itself
            if self.world.parallel:
                self._all_reduce_gradients()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.clear_grad()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
        return loss_sum.item() / len(x), correct.item() / len(x)  # .item() synchronises

    def _all_reduce_gradients(self):
        start = time.perf_counter()
        fused_allreduce_gradients(self.model.parameters(), None)  # hcg None: the global group, mean
        if self.step_windows.active:  # the timed epochs
            self.communication_s += time.perf_counter() - start

    @paddle.no_grad()
    def evaluate(self, x, y, batch_size):
        self.model.eval()
        loss_sum, correct = paddle.zeros([]), paddle.zeros([], dtype="int64")
        for s in batches(len(x), batch_size):
            xb, yb = self._tensors(x, y, s)
            with self._auto_cast():
                logits = self.forward(xb).astype("float32")
            loss_sum += F.cross_entropy(logits, yb, reduction="sum")
            correct += (logits.argmax(1) == yb).sum()
        return loss_sum.item() / len(x), correct.item() / len(x)  # one transfer (and wait)

    @paddle.no_grad()
    def logits(self, x):
        self.model.eval()
        with self._auto_cast():
            return self.forward(paddle.to_tensor(x)).astype("float32").numpy()

    def synchronize(self):
        if self.gpu:
            paddle.device.synchronize()

    def barrier(self):
        if self.world.parallel:
            dist.barrier()

    def communication(self):
        if self.gpu:  # NCCL runs on its own stream: the call's time is not the transfer's
            return {"time_s": None, "source": "not measured on GPU (NCCL all-reduce is asynchronous)"}
        return {"time_s": self.communication_s, "source": "wall time of fused_allreduce_gradients "
                "(gloo, synchronous) in the timed epochs; includes waiting for the slowest rank"}

    def device_name(self):
        return paddle.device.cuda.get_device_name() if self.gpu else super().device_name()

    def peak_device_memory_mb(self):
        return paddle.device.cuda.max_memory_allocated() / 2**20 if self.gpu else None
