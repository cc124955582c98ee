"""MXNet Gluon: HybridSequential + Trainer, hybridized (compiled graph) by default."""
import ctypes
import glob
import os
import sysconfig
from importlib.metadata import distributions


def preload_cuda_wheels():
    """The CUDA image's libmxnet.so links CUDA 11 libraries that come as nvidia-*-cu11
    wheels, which it has no RPATH to: load them first (the CPU image has none)."""
    pending = glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "*", "lib", "lib*.so*"))
    while pending:  # dependency order unknown: retry until a pass loads nothing new
        failed = []
        for path in pending:
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(path)
        if len(failed) == len(pending):
            break
        pending = failed


preload_cuda_wheels()
import mxnet as mx  # noqa: E402 - after the preload
from mxnet import autograd, gluon
from mxnet.gluon import nn, rnn

from contract.models import ADAM, EMBEDDING_INIT_RANGE, LSTM_FORGET_BIAS, RecurrentSpec

from .harness import Implementation as Base
from .harness import batches


def omp_threads_in_force():
    """MXNet fixes its OpenMP pool at import: MXNET_OMP_MAX_THREADS, else OMP_NUM_THREADS,
    else half the usable CPUs on x86 (it assumes hyperthreading; src/engine/openmp.cc)."""
    for var in ("MXNET_OMP_MAX_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var):
            return int(os.environ[var])
    return max(1, len(os.sched_getaffinity(0)) // 2)


class Implementation(Base):
    framework, api, data_layout = "mxnet", "gluon", "NCHW"

    def version(self):
        return mx.__version__

    def configure(self):
        mx.random.seed(self.spec["seed"])
        # the engine's worker threads are created at import: inter_op cannot change now
        workers = int(os.environ.get("MXNET_CPU_WORKER_NTHREADS", 1))
        wanted = self.spec["threads"]["inter_op"]
        if wanted and wanted != workers:
            raise RuntimeError(f"threads.inter_op={wanted} needs MXNET_CPU_WORKER_NTHREADS="
                               f"{wanted} before mxnet is imported (in force: {workers})")
        if self.gpu and mx.context.num_gpus() == 0:
            raise RuntimeError("device gpu requested but MXNet sees no GPU")
        self.ctx = mx.gpu(0) if self.gpu else mx.cpu()
        self.hybridize = bool(self.spec["options"].get("hybridize", True))
        onednn = mx.runtime.Features().is_enabled("MKLDNN")
        options = {"intra_op_threads": omp_threads_in_force(), "inter_op_threads": workers,
                   "hybridize": self.hybridize, "engine": os.environ.get(
                       "MXNET_ENGINE_TYPE", "ThreadedEnginePerDevice"),
                   "onednn": onednn,
                   "cudnn_autotune": self.gpu and os.environ.get("MXNET_CUDNN_AUTOTUNE_DEFAULT", "1") != "0"}
        if isinstance(self.model_spec, RecurrentSpec):  # rnn.LSTM runs the fused RNN operator
            onednn_rnn = onednn and os.environ.get("MXNET_USE_MKLDNN_RNN", "1") != "0"
            options["lstm_kernel"] = ("cudnn fused RNN" if self.gpu else
                                      "onednn fused RNN" if onednn_rnn else "mxnet native CPU RNN")
        return options

    def build(self, m):
        self.net = nn.HybridSequential()
        if isinstance(m, RecurrentSpec):
            self.net.add(*self._lstm_layers(m))
        else:
            self.net.add(*self._cnn_layers(m))
        # Glorot uniform: sqrt(3 / ((fan_in + fan_out) / 2)); Gluon's biases start at zero
        self.net.initialize(mx.init.Xavier(rnd_type="uniform", factor_type="avg", magnitude=3), ctx=self.ctx)
        if self.hybridize:
            self.net.hybridize(static_alloc=True, static_shape=True)
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
        self.trainer = gluon.Trainer(self.net.collect_params(), "adam", {
            "learning_rate": self.spec["learning_rate"], "beta1": ADAM["beta_1"],
            "beta2": ADAM["beta_2"], "epsilon": ADAM["epsilon"]})
        return sum(p.data().size for p in self.net.collect_params().values() if p.grad_req != "null")

    @staticmethod
    def _cnn_layers(m):
        for block, convs in m.block_layers():
            for c_in, filters, kernel in convs:
                yield nn.Conv2D(filters, kernel, padding=kernel // 2 if block.padding == "same" else 0,
                                activation="relu", in_channels=c_in)
            yield nn.MaxPool2D(block.pool)
            if block.dropout:
                yield nn.Dropout(block.dropout)
        yield nn.Flatten()
        yield nn.Dense(m.dense_units, activation="relu", in_units=m.flatten_size())
        yield nn.Dropout(m.dropout)
        yield nn.Dense(m.classes, in_units=m.dense_units)

    @staticmethod
    def _lstm_layers(m):
        # Keras' LSTM init on cuDNN's layout (gates i, f, c, o in both): the (4H, E) input
        # kernel gets the net's Glorot, the (4H, H) recurrent one an orthogonal matrix (normal
        # draws, gain 1, as Keras), i2h_bias Keras' bias; h2h_bias, cuDNN's second bias, stays
        # zero and untrained so the trainable count is Keras' (one bias per gate).
        lstm = rnn.LSTM(m.hidden_units, layout="NTC", input_size=m.embedding_dim,
                        h2h_weight_initializer=mx.init.Orthogonal(scale=1.0, rand_type="normal"),
                        i2h_bias_initializer=mx.init.LSTMBias(LSTM_FORGET_BIAS),
                        h2h_bias_initializer="zeros")
        lstm.l0_h2h_bias.grad_req = "null"
        return (nn.Embedding(m.vocab_size, m.embedding_dim,
                             weight_initializer=mx.init.Uniform(EMBEDDING_INIT_RANGE)),
                lstm,
                nn.HybridLambda(lambda F, x: F.slice_axis(x, axis=1, begin=-1, end=None)),  # last step
                nn.Dense(m.classes, in_units=m.hidden_units))  # flattens (N, 1, H)

    def _arrays(self, x, y, s):  # x keeps its dtype (token ids stay int32); y as before, float32
        return mx.nd.array(x[s], ctx=self.ctx, dtype=x.dtype), mx.nd.array(y[s], ctx=self.ctx)

    def train_epoch(self, x, y, batch_size):
        loss_sum, correct = mx.nd.zeros(1, ctx=self.ctx), mx.nd.zeros(1, ctx=self.ctx)
        for s in self.train_batches(len(x), batch_size):
            xb, yb = self._arrays(x, y, s)
            with autograd.record():
                logits = self.net(xb)
                loss = self.loss_fn(logits, yb)  # one value per sample
            loss.backward()
            self.trainer.step(len(yb))  # gradients of the sum / batch length = of the batch mean
            loss_sum += loss.sum()
            correct += (logits.argmax(axis=1) == yb).sum()
        return loss_sum.asscalar() / len(x), correct.asscalar() / len(x)  # asscalar waits

    def evaluate(self, x, y, batch_size):
        loss_sum, correct = mx.nd.zeros(1, ctx=self.ctx), mx.nd.zeros(1, ctx=self.ctx)
        for s in batches(len(x), batch_size):
            xb, yb = self._arrays(x, y, s)
            logits = self.net(xb)  # outside autograd.record: predict mode, no dropout
            loss_sum += self.loss_fn(logits, yb).sum()
            correct += (logits.argmax(axis=1) == yb).sum()
        return loss_sum.asscalar() / len(x), correct.asscalar() / len(x)

    def logits(self, x):
        return self.net(mx.nd.array(x, ctx=self.ctx, dtype=x.dtype)).asnumpy()

    def precision_settings(self):
        # fp32 only. No TF32 switch of MXNet's own (NVIDIA_TF32_OVERRIDE=0 decides); this one,
        # off by default, would let cuDNN/cuBLAS compute float32 work in float16 on tensor cores
        return {"parameter_dtypes": sorted({p.data().dtype.__name__ for p in self.net.collect_params().values()}),
                "cuda_tensor_op_math_allow_conversion": os.environ.get(
                    "MXNET_CUDA_TENSOR_OP_MATH_ALLOW_CONVERSION", "0") != "0"}

    def gpu_libraries(self):  # the CUDA image loads them from nvidia-*-cu11 wheels (preload above)
        installed = {dist.metadata["Name"]: dist.version for dist in distributions()}
        return {"cuda": installed.get("nvidia-cuda-runtime-cu11"), "cudnn": installed.get("nvidia-cudnn-cu11")}

    def synchronize(self):
        mx.nd.waitall()  # the engine is asynchronous on CPU too

    def device_name(self):
        if not self.gpu:
            return super().device_name()
        try:  # MXNet has no device-name query; the driver's /proc entry names it
            info = sorted(os.listdir("/proc/driver/nvidia/gpus"))[0]
            with open(f"/proc/driver/nvidia/gpus/{info}/information", encoding="utf-8") as fh:
                return fh.readline().split(":", 1)[1].strip()
        except (OSError, IndexError):
            return "GPU 0"
