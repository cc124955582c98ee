"""JAX + Flax (linen) + Optax: jax.jit train and eval steps, a Python loop over batches.

Linen rather than NNX: the model is a pure function of an explicit parameter pytree, so
a train step is one plain jax.jit of (parameters, optimizer state, batch), the way JAX
itself is written; NNX's stateful modules go through nnx.jit, which walks the object
graph in Python on every call, a per-step cost this small model would feel."""
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from .harness import Implementation as Base, batches
from .models import ADAM
from .xla_threads import limit_xla_cpu_threads

# Keras' init everywhere; flax's own default kernel init is lecun_normal.
KERAS_INIT = {"kernel_init": nn.initializers.glorot_uniform(), "bias_init": nn.initializers.zeros}


class CNN(nn.Module):
    m: object  # a models.ConvNetSpec

    @nn.compact
    def __call__(self, x, train):
        pool = (self.m.pool, self.m.pool)
        for filters, kernel in self.m.conv_layers:
            x = nn.relu(nn.Conv(filters, (kernel, kernel), padding="VALID", **KERAS_INIT)(x))
            x = nn.max_pool(x, pool, strides=pool)
        x = nn.relu(nn.Dense(self.m.dense_units, **KERAS_INIT)(x.reshape((x.shape[0], -1))))
        x = nn.Dropout(self.m.dropout, deterministic=not train)(x)
        return nn.Dense(self.m.classes, **KERAS_INIT)(x)


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
        self.init_key, self.dropout_key = jax.random.split(jax.random.key(self.spec["seed"]))
        return {"intra_op_threads": pool, "inter_op_threads": None, "jit": True,
                "platform": self.device.platform, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                "flax_api": "linen", "flax_version": flax.__version__,
                "optax_version": optax.__version__}

    def build(self, m):
        self.model = CNN(m)
        sample = jnp.zeros((1, *m.input_shape))
        params = self.model.init(self.init_key, sample, train=False)["params"]
        self.tx = optax.adam(self.spec["learning_rate"], b1=ADAM["beta_1"], b2=ADAM["beta_2"],
                             eps=ADAM["epsilon"])
        self.state = (params, self.tx.init(params), jnp.zeros((), jnp.uint32))  # + step count
        self.train_step = jax.jit(self._train_step, donate_argnums=0)  # update in place
        self.eval_step = jax.jit(self._eval_step)
        self.forward = jax.jit(lambda p, x: self.model.apply({"params": p}, x, train=False))
        return sum(leaf.size for leaf in jax.tree.leaves(params))

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
        for s in batches(len(x), batch_size):
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
