"""JAX + Flax (linen) + Optax: jax.jit train and eval steps, a Python loop over batches.

Linen rather than NNX: the model is a pure function of an explicit parameter pytree, so
a train step is one plain jax.jit of (parameters, optimizer state, batch), the way JAX
itself is written; NNX's stateful modules go through nnx.jit, which walks the object
graph in Python on every call, a per-step cost this small model would feel."""
import math
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from contract.models import ADAM, EMBEDDING_INIT_RANGE, LSTM_FORGET_BIAS, ConvNetSpec, RecurrentSpec

from .harness import Implementation as Base
from .harness import batches
from .xla_threads import cuda_libraries, limit_xla_cpu_threads

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


class Implementation(Base):
    framework, api, data_layout = "jax", "flax", "NHWC"

    def version(self):
        return jax.__version__

    def configure(self):
        pool = limit_xla_cpu_threads(self.spec["threads"]["intra_op"])  # before XLA starts
        if self.gpu and jax.default_backend() != "gpu":
            raise RuntimeError("device gpu requested but JAX sees no GPU")
        self.device = jax.devices("gpu" if self.gpu else "cpu")[0]
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
        return options

    def build(self, m):
        recurrent = isinstance(m, RecurrentSpec)
        self.model = (LSTMClassifier if recurrent else CNN)(m, dtype=self.compute_dtype)
        self.sample = sample = jnp.zeros((1, *m.input_shape), m.input_dtype)
        params = self.model.init(self.init_key, sample, train=False)["params"]
        if recurrent:
            params = with_forget_bias(params)
        self.tx = optax.adam(self.spec["learning_rate"], b1=ADAM["beta_1"], b2=ADAM["beta_2"],
                             eps=ADAM["epsilon"])
        self.state = (params, self.tx.init(params), jnp.zeros((), jnp.uint32))  # + step count
        self.train_step = jax.jit(self._train_step, donate_argnums=0)  # update in place
        self.eval_step = jax.jit(self._eval_step)
        self.forward = jax.jit(lambda p, x: self.model.apply({"params": p}, x, train=False))
        return sum(leaf.size for leaf in jax.tree.leaves(params))

    def precision_settings(self):
        params = self.state[0]
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

    def _eval_step(self, params, totals, x, y):
        logits = self.model.apply({"params": params}, x, train=False)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()
        return totals[0] + loss, totals[1] + (logits.argmax(1) == y).sum()

    def train_epoch(self, x, y, batch_size):
        totals = zero_totals()
        for s in self.train_batches(len(x), batch_size):
            self.state, totals = self.train_step(self.state, totals, x[s], y[s])
        loss_sum, correct = jax.device_get(totals)  # the epoch's one transfer (and wait)
        return float(loss_sum) / len(x), int(correct) / len(x)

    def evaluate(self, x, y, batch_size):
        totals = zero_totals()
        for s in batches(len(x), batch_size):
            totals = self.eval_step(self.state[0], totals, x[s], y[s])
        loss_sum, correct = jax.device_get(totals)
        return float(loss_sum) / len(x), int(correct) / len(x)

    def logits(self, x):
        return np.asarray(self.forward(self.state[0], x))

    def synchronize(self):
        if hasattr(self, "state"):  # dispatch is asynchronous: wait for the last update
            jax.block_until_ready(self.state)

    def device_name(self):
        return self.device.device_kind if self.gpu else super().device_name()

    def peak_device_memory_mb(self):
        return self.device.memory_stats()["peak_bytes_in_use"] / 2**20 if self.gpu else None
