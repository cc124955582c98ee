"""MXNet Gluon: HybridSequential + Trainer, hybridized (compiled graph) by default.

Data-parallel (self.world.parallel): kvstore dist_sync (ps-lite). Rank 0 starts the
scheduler on the coordinator's port, local rank 0 of every node one server (child processes
that die with it); the Trainer pushes each gradient and pulls back the SUM over workers
(update_on_kvstore=False: no optimizer on the servers, each worker updates its replica),
and step(b x workers) makes it the global batch's mean gradient. The kvstore's init (in
build) broadcasts rank 0's weights. Blocking waits run in a helper thread, so that a rank
stuck on a lost peer still takes the launcher's SIGTERM; such a rank then exits at once."""
import atexit
import ctypes
import glob
import os
import socket
import subprocess
import sys
import sysconfig
import threading
from importlib.metadata import distributions
from typing import Any


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


# A ps-lite scheduler or server (importing mxnet with DMLC_ROLE set runs one: mxnet/kvstore/
# kvstore_server.py). It dies with the worker that started it (PR_SET_DEATHSIG SIGKILL), or
# at once if that worker is gone already; it may run on any CPU, not on its parent's only.
PS_NODE = """import ctypes, os, sys
ctypes.CDLL(None).prctl(1, 9)
if os.getppid() != {parent}:
    sys.exit(1)
try:
    os.sched_setaffinity(0, range(os.cpu_count()))
except OSError:
    pass
import mxnet"""


_KVSTORES: list = []  # kvstores alive until exit
_BROKEN: list = []    # the failed waits of this process


@atexit.register
def _exit_if_broken():
    """A rank whose kvstore wait failed or was stopped ends here, before the kvstore's
    destructor, which would wait for ever for its pending push/pull to a lost peer."""
    if _BROKEN:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def _outcome(call, out):
    try:
        out.append((call(), None))
    except Exception as exc:  # noqa: BLE001 - re-raised in the calling thread
        out.append((None, exc))


class Implementation(Base):
    framework, api, data_layout = "mxnet", "gluon", "NCHW"
    optimizers = ("adam", "sgd")
    kv: Any = None       # a parallel run's dist_sync kvstore
    ps_nodes: dict = {}  # the ps-lite nodes it started

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
        self.ctx = mx.gpu(self.world.local_rank) if self.gpu else mx.cpu()  # a GPU per worker
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
        if self.world.parallel:
            options["parallel"] = self._start_kvstore()
        return options

    def _start_kvstore(self):
        w = self.world
        host, port = w.coordinator.rsplit(":", 1)
        env = {"DMLC_PS_ROOT_URI": socket.gethostbyname(host), "DMLC_PS_ROOT_PORT": port,
               "DMLC_NUM_SERVER": str(w.nodes), "DMLC_NUM_WORKER": str(w.size),
               "DMLC_NODE_HOST": socket.gethostbyname(w.hosts[w.node_rank])}
        os.environ.update(env)
        roles = ["scheduler"] * (w.rank == 0) + ["server"] * (w.local_rank == 0)
        self.ps_nodes = {role: subprocess.Popen([sys.executable, "-c", PS_NODE.format(parent=os.getpid())],
                                                env={**os.environ, "DMLC_ROLE": role}) for role in roles}
        # this worker listens on its own port: ps-lite ranks one node's workers by port
        os.environ.update(DMLC_ROLE="worker", PORT=str(w.base_port + 1 + w.rank))
        self.kv = self._wait(lambda: mx.kv.create("dist_sync"))  # every node joins the scheduler
        _KVSTORES.append(self.kv)  # destroyed after _exit_if_broken, at the interpreter's end
        # no ps-lite barrier in the destructor: a rank that failed must exit (the launcher
        # then stops the others); the harness's last barrier() ends a good run
        mx.base.check_call(mx.base._LIB.MXKVStoreSetBarrierBeforeExit(self.kv.handle, ctypes.c_int(0)))
        return {"mechanism": "kvstore dist_sync (ps-lite)", "kvstore": self.kv.type,
                "servers": w.nodes, "update_on_kvstore": False, "kvstore_rank": self.kv.rank,
                "scheduler": f"{env['DMLC_PS_ROOT_URI']}:{port}", "transport": "zmq tcp",
                "reduction": "sum on the server, / global batch in Trainer.step"}

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
        adam = {"beta1": ADAM["beta_1"], "beta2": ADAM["beta_2"], "epsilon": ADAM["epsilon"]}
        sgd = self.spec["optimizer"] == "sgd"  # plain: MXNet's SGD has momentum 0 by default
        kv: dict = {"kvstore": self.kv, "update_on_kvstore": False} if self.kv else {}
        self.trainer = gluon.Trainer(self.net.collect_params(), "sgd" if sgd else "adam", {
            "learning_rate": self.spec["learning_rate"], **({} if sgd else adam)}, **kv)
        if self.kv:  # kvstore init (rank 0's weights) and every worker's pull of them, done now:
            # left to the first step(), the pulls race its gradient push on the same keys
            self.trainer._init_kvstore()
            self._wait(self.trainer._init_params)  # ps-lite barriers: rank 0 pushes each first
            self.synchronize()
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
            # gradients of the sum (over every worker's rows when parallel) / the global
            # batch length = of the global batch mean
            self.trainer.step(len(yb) * self.world.size)
            loss_sum += loss.sum()
            correct += (logits.argmax(axis=1) == yb).sum()
        self._wait(correct.wait_to_read)
        return loss_sum.asscalar() / len(x), correct.asscalar() / len(x)  # asscalar waits

    def evaluate(self, x, y, batch_size):
        loss_sum, correct = mx.nd.zeros(1, ctx=self.ctx), mx.nd.zeros(1, ctx=self.ctx)
        for s in batches(len(x), batch_size):
            xb, yb = self._arrays(x, y, s)
            logits = self.net(xb)  # outside autograd.record: predict mode, no dropout
            loss_sum += self.loss_fn(logits, yb).sum()
            correct += (logits.argmax(axis=1) == yb).sum()
        self._wait(correct.wait_to_read)
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
        self._wait(mx.nd.waitall)  # the engine is asynchronous on CPU too

    def barrier(self):
        if self.kv:
            self.synchronize()
            self._wait(self.kv._barrier)  # ps-lite barrier of the worker group

    def _wait(self, wait):
        """wait() (blocking: engine, kvstore); when parallel, in a helper thread: ps-lite waits
        for ever on a lost peer, and the main thread must stay free to take the launcher's
        SIGTERM (the harness's StopRequested, which records this rank as stopped)."""
        if not self.world.parallel:
            return wait()
        out: list = []
        helper = threading.Thread(target=_outcome, args=(wait, out), daemon=True)
        helper.start()
        try:
            while helper.is_alive():
                helper.join(1.0)  # a signal's handler runs (and may raise) during the join
                for role, node in self.ps_nodes.items():  # a dead one never answers
                    if node.poll() is not None:
                        raise RuntimeError(f"the ps-lite {role} this rank started exited ({node.returncode})")
            result, exc = out[0]
            if exc:
                raise exc
            return result
        except BaseException:
            _BROKEN.append(True)
            raise

    def communication(self):
        return {"time_s": None, "source": "not exposed by MXNet: kvstore push/pull run asynchronously "
                                          "in its engine, overlapping backward; neither MXNet nor "
                                          "ps-lite reports their time"}

    def device_name(self):
        if not self.gpu:
            return super().device_name()
        try:  # MXNet has no device-name query; the driver's /proc entry names it
            info = sorted(os.listdir("/proc/driver/nvidia/gpus"))[0]
            with open(f"/proc/driver/nvidia/gpus/{info}/information", encoding="utf-8") as fh:
                return fh.readline().split(":", 1)[1].strip()
        except (OSError, IndexError):
            return "GPU 0"
