"""Theano, symbolic graph compiled to C: theano.function for the train step (Adam written
out, as Theano has no optimizers), evaluation and inference."""
import os
import tempfile

# Theano reads its flags once, at import: compiled C goes to the run's shared cache when the
# orchestrator mounts one (repeats reuse it), else to /tmp; empty blas.ldflags makes Theano
# call BLAS through numpy's C API instead of probing for a system BLAS (numpy.distutils).
_CACHE = os.environ.get("DLBENCH_COMPILE_CACHE")
COMPILEDIR = os.path.join(_CACHE or tempfile.gettempdir(), "theano")
CACHE_WARM = os.path.isdir(COMPILEDIR) and bool(os.listdir(COMPILEDIR))
FLAGS = f"device=cpu,floatX=float32,blas.ldflags=,base_compiledir={COMPILEDIR}"
os.environ["THEANO_FLAGS"] = FLAGS

import numpy as np  # noqa: E402
import theano  # noqa: E402
import theano.tensor as T  # noqa: E402
from theano.sandbox.rng_mrg import M2, MRG_RandomStreams  # noqa: E402
from theano.tensor.signal.pool import pool_2d  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

from .harness import Implementation as Base, batches  # noqa: E402
from .models import ADAM  # noqa: E402

FLOAT = theano.config.floatX


class Implementation(Base):
    framework, api, data_layout = "theano", "graph", "NCHW"

    def version(self):
        return theano.__version__

    def configure(self):
        if self.gpu:
            raise RuntimeError("device gpu requested but this Theano image has no GPU backend (pygpu)")
        self.rng = np.random.RandomState(self.spec["seed"])
        self.srng = MRG_RandomStreams(int(1 + self.spec["seed"] % (M2 - 1)))  # its seed must be in [1, M2)
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        return {"intra_op_threads": blas[0] if blas else None, "inter_op_threads": None,
                "theano_flags": FLAGS, "compiledir": theano.config.compiledir,
                "compile_cache_warm": CACHE_WARM, "openmp": theano.config.openmp,
                "mode": theano.config.mode, "cxx": theano.config.cxx}

    def _glorot(self, shape, fan_in, fan_out):  # Keras' GlorotUniform
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return theano.shared(self.rng.uniform(-limit, limit, shape).astype(FLOAT))

    def _forward(self, x, train):
        for w, b in self.convs:  # filter_flip=False: cross-correlation, as every other framework
            x = T.nnet.relu(T.nnet.conv2d(x, w, filter_flip=False) + b.dimshuffle("x", 0, "x", "x"))
            x = pool_2d(x, (self.m.pool,) * 2, ignore_border=True, mode="max")
        h = T.nnet.relu(T.dot(x.flatten(2), self.dense[0]) + self.dense[1])
        if train:  # inverted dropout, training graph only
            keep = 1.0 - self.m.dropout
            h = h * self.srng.binomial(h.shape, p=keep, dtype=FLOAT) / keep
        return T.dot(h, self.out[0]) + self.out[1]

    def build(self, m):
        self.m, zeros = m, (lambda n: theano.shared(np.zeros(n, FLOAT)))
        channels = [m.input_shape[2]] + [filters for filters, _ in m.conv_layers]
        self.convs = [(self._glorot((c_out, c_in, k, k), c_in * k * k, c_out * k * k), zeros(c_out))
                      for c_in, (c_out, k) in zip(channels, m.conv_layers)]
        self.dense = (self._glorot((m.flatten_size(), m.dense_units), m.flatten_size(), m.dense_units),
                      zeros(m.dense_units))
        self.out = (self._glorot((m.dense_units, m.classes), m.dense_units, m.classes), zeros(m.classes))
        params = [p for pair in self.convs + [self.dense, self.out] for p in pair]

        x, y = T.tensor4("x"), T.lvector("y")
        logits = self._forward(x, train=True)
        loss = T.nnet.categorical_crossentropy(T.nnet.softmax(logits), y).mean()
        # Adam exactly as Keras: bias correction folded into the step size, epsilon outside the sqrt
        b1, b2, eps = ADAM["beta_1"], ADAM["beta_2"], ADAM["epsilon"]  # Python floats stay float32
        step = theano.shared(np.asarray(0, FLOAT))
        t = step + 1
        alpha = self.spec["learning_rate"] * T.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        updates = [(step, t)]
        for p, g in zip(params, T.grad(loss, params)):
            mom, vel = (theano.shared(np.zeros_like(p.get_value())) for _ in range(2))
            mom_t, vel_t = b1 * mom + (1 - b1) * g, b2 * vel + (1 - b2) * T.sqr(g)
            updates += [(mom, mom_t), (vel, vel_t), (p, p - alpha * mom_t / (T.sqrt(vel_t) + eps))]
        correct = lambda out: T.sum(T.eq(T.argmax(out, axis=1), y))  # noqa: E731
        self.train_fn = theano.function([x, y], [loss, correct(logits)], updates=updates)
        infer = self._forward(x, train=False)
        self.eval_fn = theano.function(
            [x, y], [T.nnet.categorical_crossentropy(T.nnet.softmax(infer), y).sum(), correct(infer)])
        self.logits_fn = theano.function([x], infer)
        return sum(p.get_value().size for p in params)

    def train_epoch(self, x, y, batch_size):
        loss_sum, correct = 0.0, 0
        for s in batches(len(x), batch_size):
            loss, right = self.train_fn(x[s], y[s])
            loss_sum, correct = loss_sum + float(loss) * len(y[s]), correct + int(right)
        return loss_sum / len(x), correct / len(x)

    def evaluate(self, x, y, batch_size):
        loss_sum, correct = 0.0, 0
        for s in batches(len(x), batch_size):
            loss, right = self.eval_fn(x[s], y[s])
            loss_sum, correct = loss_sum + float(loss), correct + int(right)
        return loss_sum / len(x), correct / len(x)

    def logits(self, x):
        return self.logits_fn(x)
