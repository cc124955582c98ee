"""Theano, symbolic graph compiled to C: theano.function for the train step (Adam written
out, as Theano has no optimizers), evaluation and inference."""
import os
import sys
import tempfile

# Theano reads its flags once, at import: compiled C goes to the run's shared cache when the
# orchestrator mounts one (repeats reuse it), else to /tmp; empty blas.ldflags makes Theano
# call BLAS through numpy's C API instead of probing for a system BLAS (numpy.distutils).
_CACHE = os.environ.get("DLBENCH_COMPILE_CACHE")
COMPILEDIR = os.path.join(_CACHE or tempfile.gettempdir(), "theano")
CACHE_WARM = os.path.isdir(COMPILEDIR) and bool(os.listdir(COMPILEDIR))
FLAGS = f"device=cpu,floatX=float32,blas.ldflags=,base_compiledir={COMPILEDIR}"
os.environ["THEANO_FLAGS"] = FLAGS
# Scan's C loop (scan_perform.c, from a 2017 Cython) does not compile against Python 3.11: an
# absent module makes Scan fall back to its Python loop around the compiled step function
sys.modules["theano.scan_module.scan_perform_ext"] = None  # type: ignore[assignment]

import numpy as np  # noqa: E402
import theano  # noqa: E402
import theano.tensor as T  # noqa: E402
from theano.sandbox.rng_mrg import M2, MRG_RandomStreams  # noqa: E402
from theano.tensor.signal.pool import pool_2d  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

from contract.models import ADAM, EMBEDDING_INIT_RANGE, LSTM_FORGET_BIAS, RecurrentSpec  # noqa: E402

from .harness import Implementation as Base  # noqa: E402
from .harness import batches

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
                "mode": theano.config.mode, "cxx": theano.config.cxx,
                "lstm_kernel": "theano.scan: Python loop over the C step; input projection outside it"}

    def _glorot(self, shape, fan_in, fan_out):  # Keras' GlorotUniform
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return theano.shared(self.rng.uniform(-limit, limit, shape).astype(FLOAT))

    def _orthogonal(self, rows, cols):  # Keras' Orthogonal: QR of a normal matrix, signs fixed by R
        q, r = np.linalg.qr(self.rng.normal(size=(max(rows, cols), min(rows, cols))))
        q *= np.sign(np.diag(r))
        return theano.shared((q.T if rows < cols else q).astype(FLOAT))

    def _dense(self, n_in, n_out):
        return self._glorot((n_in, n_out), n_in, n_out), theano.shared(np.zeros(n_out, FLOAT))

    def _dropout(self, x, rate, train):  # inverted dropout, training graph only
        if not train or not rate:
            return x
        return x * self.srng.binomial(x.shape, p=1.0 - rate, dtype=FLOAT) / (1.0 - rate)

    def _build_convnet(self, m):
        self.blocks = []
        for block, convs in m.block_layers():
            layers = []
            for c_in, c_out, k in convs:
                w = self._glorot((c_out, c_in, k, k), c_in * k * k, c_out * k * k)
                layers.append((w, theano.shared(np.zeros(c_out, FLOAT))))
            self.blocks.append((block, layers))
        self.hidden = self._dense(m.flatten_size(), m.dense_units)
        self.out = self._dense(m.dense_units, m.classes)
        return [p for _, layers in self.blocks for pair in layers for p in pair] + [*self.hidden, *self.out]

    def _convnet(self, x, train):
        for block, layers in self.blocks:
            border = "half" if block.padding == "same" else "valid"  # half: k // 2, 'same' for odd k
            for w, b in layers:  # filter_flip=False: cross-correlation, as every other framework
                x = T.nnet.relu(T.nnet.conv2d(x, w, border_mode=border, filter_flip=False)
                                + b.dimshuffle("x", 0, "x", "x"))
            x = self._dropout(pool_2d(x, (block.pool,) * 2, ignore_border=True, mode="max"),
                              block.dropout, train)
        h = T.nnet.relu(T.dot(x.flatten(2), self.hidden[0]) + self.hidden[1])
        return T.dot(self._dropout(h, self.m.dropout, train), self.out[0]) + self.out[1]

    def _build_recurrent(self, m):
        e, h = m.embedding_dim, m.hidden_units
        self.embedding = theano.shared(self.rng.uniform(
            -EMBEDDING_INIT_RANGE, EMBEDDING_INIT_RANGE, (m.vocab_size, e)).astype(FLOAT))
        # Keras' LSTM: gates i, f, c, o side by side in one kernel, one bias, forget bias 1
        self.kernel, self.recurrent = self._glorot((e, 4 * h), e, 4 * h), self._orthogonal(h, 4 * h)
        bias = np.zeros(4 * h, FLOAT)
        bias[h:2 * h] = LSTM_FORGET_BIAS
        self.bias = theano.shared(bias)
        self.out = self._dense(h, m.classes)
        return [self.embedding, self.kernel, self.recurrent, self.bias, *self.out]

    def _recurrent(self, tokens, train):
        h, (n, length) = self.m.hidden_units, tokens.shape
        steps = self.embedding[tokens.T.flatten()].reshape((length, n, self.m.embedding_dim))
        inputs = T.dot(steps, self.kernel) + self.bias  # (T, N, 4H): every step's input part at once

        def step(z, h_prev, c_prev):
            z = z + T.dot(h_prev, self.recurrent)
            i, f, g, o = (z[:, k * h:(k + 1) * h] for k in range(4))
            c = T.nnet.sigmoid(f) * c_prev + T.nnet.sigmoid(i) * T.tanh(g)
            return T.nnet.sigmoid(o) * T.tanh(c), c

        zeros = T.zeros((n, h), dtype=FLOAT)
        (hs, _), _ = theano.scan(step, sequences=inputs, outputs_info=[zeros, zeros])
        return T.dot(hs[-1], self.out[0]) + self.out[1]  # the last hidden state

    def build(self, m):
        self.m = m
        if isinstance(m, RecurrentSpec):
            params, forward, x = self._build_recurrent(m), self._recurrent, T.imatrix("x")
        else:
            params, forward, x = self._build_convnet(m), self._convnet, T.tensor4("x")
        y = T.lvector("y")
        logits = forward(x, train=True)
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
        infer = forward(x, train=False)
        self.eval_fn = theano.function(
            [x, y], [T.nnet.categorical_crossentropy(T.nnet.softmax(infer), y).sum(), correct(infer)])
        self.logits_fn = theano.function([x], infer)
        return sum(p.get_value().size for p in params)

    def precision_settings(self):  # fp32 only: no bfloat16 dtype, float16 experimental
        return {"floatX": theano.config.floatX}

    def train_epoch(self, x, y, batch_size):
        loss_sum, correct = 0.0, 0
        for s in self.train_batches(len(x), batch_size):
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
