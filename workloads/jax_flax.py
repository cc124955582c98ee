"""JAX + Flax (linen) + Optax: jax.jit train and eval steps, a Python loop over batches.

Linen rather than NNX: the model is a pure function of an explicit parameter pytree, so
a train step is one plain jax.jit of (parameters, optimizer state, batch), the way JAX
itself is written; NNX's stateful modules go through nnx.jit, which walks the object
graph in Python on every call, a per-step cost this small model would feel.

Data-parallel (self.world.parallel): one process per worker, jax.distributed.initialize with
gloo CPU collectives, one device per process in a Mesh with axis "data". Parameters and
optimizer state are replicated (NamedSharding P()); the train step is the same jax.jit with
its batch sharded along "data": each process hands in its own rows
(jax.make_array_from_process_local_data), the loss mean inside the jit is the global batch
mean, and XLA's SPMD partitioner inserts the gradient all-reduce. Evaluation and logits run
a local jit on this process' copy of the replicated parameters (no communication)."""
import math
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from contract.models import ADAM, EMBEDDING_INIT_RANGE, LSTM_FORGET_BIAS, ConvNetSpec, RecurrentSpec

from .harness import Implementation as Base
from .harness import batches
from .xla_threads import cuda_libraries, limit_xla_cpu_threads, start_distributed

# Keras' init everywhere; flax's own default kernel init is lecun_normal.
KERAS_INIT = {"kernel_init": nn.initializers.glorot_uniform(), "bias_init": nn.initializers.zeros}


def symmetric_uniform(limit):
    """Uniform in [-limit, limit] (flax's initializers.uniform draws from [0, scale))."""
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -limit, limit)


class CNN(nn.Module):
    m: ConvNetSpec
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32 (flax's param_dtype)

    @nn.compact
    def __call__(self, x, train):
        for block in self.m.blocks:
            for filters, kernel in block.convs:
                conv = nn.Conv(filters, (kernel, kernel), padding=block.padding.upper(),
                               dtype=self.dtype, **KERAS_INIT)
                x = nn.relu(conv(x))
            x = nn.max_pool(x, (block.pool, block.pool), strides=(block.pool, block.pool))
            if block.dropout:
                x = nn.Dropout(block.dropout, deterministic=not train)(x)
        x = nn.relu(nn.Dense(self.m.dense_units, dtype=self.dtype, **KERAS_INIT)(x.reshape((x.shape[0], -1))))
        x = nn.Dropout(self.m.dropout, deterministic=not train)(x)
        return nn.Dense(self.m.classes, dtype=self.dtype, **KERAS_INIT)(x).astype(jnp.float32)


class LSTMClassifier(nn.Module):
    m: RecurrentSpec
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train):
        e, h = self.m.embedding_dim, self.m.hidden_units
        x = nn.Embed(self.m.vocab_size, e, dtype=self.dtype,
                     embedding_init=symmetric_uniform(EMBEDDING_INIT_RANGE))(x)
        # The cell keeps one (E, H) / (H, H) kernel per gate (hidden ones with the bias: one
        # bias per gate, as in Keras) and initialises each alone. Keras' Glorot limit over the
        # whole (E, 4H) kernel is sqrt(6 / (E + 4H)); orthogonal blocks scaled by 1/2 make the
        # (H, 4H) recurrent kernel row-orthonormal, as Keras' is (though not Haar-distributed).
        cell = nn.OptimizedLSTMCell(h, kernel_init=symmetric_uniform(math.sqrt(6 / (e + 4 * h))),
                                    recurrent_kernel_init=nn.initializers.orthogonal(0.5), dtype=self.dtype)
        x = nn.RNN(cell)(x)[:, -1]  # last hidden state, all steps (no masking)
        return nn.Dense(self.m.classes, dtype=self.dtype, **KERAS_INIT)(x).astype(jnp.float32)


def with_forget_bias(params):
    """Keras' unit_forget_bias: the cell's bias_init cannot tell the gates apart."""
    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict(
        {k: v + LSTM_FORGET_BIAS if k[-2:] == ("hf", "bias") else v for k, v in flat.items()})


def zero_totals():
    return jnp.zeros(()), jnp.zeros((), jnp.int32)  # loss sum, correct count (on the device)


def zero_shard_totals(sharding):
    """Per-worker loss sum and correct count, shape (workers,), one entry on each device."""
    return (jax.make_array_from_process_local_data(sharding, np.zeros(1, np.float32)),
            jax.make_array_from_process_local_data(sharding, np.zeros(1, np.int32)))


class Implementation(Base):
    framework, api, data_layout = "jax", "flax", "NHWC"
    optimizers = ("adam", "sgd")

    def version(self):
        return jax.__version__

    def configure(self):
        pool = limit_xla_cpu_threads(self.spec["threads"]["intra_op"])  # before XLA starts
        self.parallel = self.world.parallel
        if self.parallel:  # before any JAX operation: the backends start with the cluster known
            parallel = start_distributed(self.world, self.gpu)
        if self.gpu and jax.default_backend() != "gpu":
            raise RuntimeError("device gpu requested but JAX sees no GPU")
        # this process' own device (jax.devices() lists every process' devices when parallel)
        self.device = jax.local_devices(backend="gpu" if self.gpu else "cpu")[0]
        jax.config.update("jax_default_device", self.device)
        # fp32: full-precision float32 matmuls and convolutions (on GPU XLA's default may use TF32)
        jax.config.update("jax_default_matmul_precision",
                          "tensorfloat32" if self.precision == "tf32" else "highest")
        # bf16: bfloat16 compute, float32 parameters and optimizer state, logits cast to float32
        self.compute_dtype = jnp.bfloat16 if self.precision == "bf16" else jnp.float32
        self.init_key, self.dropout_key = jax.random.split(jax.random.key(self.spec["seed"]))
        options = {"intra_op_threads": pool, "inter_op_threads": None, "jit": True,
                   "platform": self.device.platform, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                   "flax_api": "linen", "flax_version": flax.__version__,
                   "optax_version": optax.__version__}
        if isinstance(self.model_spec, RecurrentSpec):  # XLA on GPU too: no cuDNN RNN here
            options["lstm_kernel"] = "flax OptimizedLSTMCell in nn.RNN (lax.scan, XLA-compiled)"
        if self.parallel:
            # one device per process, in rank order (process_index == world.rank)
            devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
            self.mesh = Mesh(np.array(devices), ("data",))
            self.replicated = NamedSharding(self.mesh, P())
            self.sharded = NamedSharding(self.mesh, P("data"))
            options["parallel"] = {
                "mechanism": "jax.distributed.initialize + jax.jit over a Mesh('data'): batch "
                             "sharded P('data'), parameters and optimizer state replicated; "
                             "gradient all-reduce inserted by XLA's SPMD partitioner",
                **parallel, "devices": len(devices), "devices_per_process": jax.local_device_count()}
        return options

    def build(self, m):
        recurrent = isinstance(m, RecurrentSpec)
        self.model = (LSTMClassifier if recurrent else CNN)(m, dtype=self.compute_dtype)
        self.sample = sample = jnp.zeros((1, *m.input_shape), m.input_dtype)
        params = self.model.init(self.init_key, sample, train=False)["params"]
        if recurrent:
            params = with_forget_bias(params)
        lr = self.spec["learning_rate"]
        if self.spec.get("optimizer", "adam") == "sgd":  # plain SGD, no momentum
            self.tx = optax.sgd(lr)
        else:
            self.tx = optax.adam(lr, b1=ADAM["beta_1"], b2=ADAM["beta_2"], eps=ADAM["epsilon"])
        self.state = (params, self.tx.init(params), jnp.zeros((), jnp.uint32))  # + step count
        if self.parallel:
            # every process built the same initial state from the same seed: its copy is the
            # replica on its own device of one global, replicated array
            self.state = jax.tree.map(
                lambda a: jax.make_array_from_process_local_data(self.replicated, np.asarray(a)),
                self.state)
            self.train_step = jax.jit(
                self._train_step_parallel, donate_argnums=0,
                in_shardings=(self.replicated, self.sharded, self.sharded, self.sharded),
                out_shardings=(self.replicated, self.sharded))
        else:
            self.train_step = jax.jit(self._train_step, donate_argnums=0)  # update in place
        self.eval_step = jax.jit(self._eval_step)
        self.forward = jax.jit(lambda p, x: self.model.apply({"params": p}, x, train=False))
        return sum(leaf.size for leaf in jax.tree.leaves(params))

    def local_params(self):
        """This process' copy of the parameters (a replica of the global array when parallel)."""
        if not self.parallel:
            return self.state[0]
        return jax.tree.map(lambda a: a.addressable_data(0), self.state[0])

    def precision_settings(self):
        params = self.local_params()
        return {"default_matmul_precision": jax.config.jax_default_matmul_precision,
                "compute_dtype": jnp.dtype(self.compute_dtype).name,
                "param_dtypes": sorted({leaf.dtype.name for leaf in jax.tree.leaves(params)}),
                "logits_dtype": jax.eval_shape(self.forward, params, self.sample).dtype.name}

    def gpu_libraries(self):
        return cuda_libraries()

    device_memory_kind = ("allocator peak: device.memory_stats() peak_bytes_in_use (XLA's allocator, "
                          "preallocation off; excludes the CUDA context)")

    def _loss(self, params, x, y, key):
        logits = self.model.apply({"params": params}, x, train=True, rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    def _train_step(self, state, totals, x, y):
        params, opt_state, step = state
        key = jax.random.fold_in(self.dropout_key, step)  # a new dropout mask every step
        (loss, logits), grads = jax.value_and_grad(self._loss, has_aux=True)(params, x, y, key)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        totals = totals[0] + loss * len(y), totals[1] + (logits.argmax(1) == y).sum()
        return (optax.apply_updates(params, updates), opt_state, step + 1), totals

    def _train_step_parallel(self, state, totals, x, y):
        """The same update on the global batch (x, y sharded along "data"): the mean loss is the
        global batch mean, so the gradients are averaged over the workers. totals hold one
        loss sum and correct count per worker, each summed over that worker's rows only."""
        params, opt_state, step = state
        key = jax.random.fold_in(self.dropout_key, step)
        (_, logits), grads = jax.value_and_grad(self._loss, has_aux=True)(params, x, y, key)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        workers = self.world.size
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y).reshape(workers, -1)
        correct = (logits.argmax(1) == y).reshape(workers, -1)
        totals = totals[0] + losses.sum(1), totals[1] + correct.sum(1, dtype=jnp.int32)
        return (optax.apply_updates(params, updates), opt_state, step + 1), totals

    def _eval_step(self, params, totals, x, y):
        logits = self.model.apply({"params": params}, x, train=False)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()
        return totals[0] + loss, totals[1] + (logits.argmax(1) == y).sum()

    def train_epoch(self, x, y, batch_size):
        if self.parallel:
            return self._train_epoch_parallel(x, y, batch_size)
        totals = zero_totals()
        for s in self.train_batches(len(x), batch_size):
            self.state, totals = self.train_step(self.state, totals, x[s], y[s])
        loss_sum, correct = jax.device_get(totals)  # the epoch's one transfer (and wait)
        return float(loss_sum) / len(x), int(correct) / len(x)

    def _train_epoch_parallel(self, x, y, batch_size):
        # the harness gives every rank the same number of whole batches of its own rows
        global_batch = lambda a: jax.make_array_from_process_local_data(self.sharded, a)  # noqa: E731
        totals = zero_shard_totals(self.sharded)
        for s in self.train_batches(len(x), batch_size):
            self.state, totals = self.train_step(self.state, totals, global_batch(x[s]), global_batch(y[s]))
        # this worker's own sums: the local shard, the epoch's one transfer (and wait)
        loss_sum, correct = jax.device_get(tuple(t.addressable_data(0) for t in totals))
        return float(loss_sum[0]) / len(x), int(correct[0]) / len(x)

    def evaluate(self, x, y, batch_size):
        totals = zero_totals()
        params = self.local_params()  # local: no communication
        for s in batches(len(x), batch_size):
            totals = self.eval_step(params, totals, x[s], y[s])
        loss_sum, correct = jax.device_get(totals)
        return float(loss_sum) / len(x), int(correct) / len(x)

    def logits(self, x):
        return np.asarray(self.forward(self.local_params(), x))

    def barrier(self):
        if self.parallel:
            multihost_utils.sync_global_devices("dlbench barrier")

    def communication(self):
        return {"time_s": None,
                "source": "not exposed by JAX: the gradient all-reduce is an XLA collective "
                          "fused into the compiled train step; only a profiler trace would time it"}

    def synchronize(self):
        if hasattr(self, "state"):  # dispatch is asynchronous: wait for the last update
            jax.block_until_ready(self.state)

    def device_name(self):
        return self.device.device_kind if self.gpu else super().device_name()

    def peak_device_memory_mb(self):
        return self.device.memory_stats()["peak_bytes_in_use"] / 2**20 if self.gpu else None
