"""TensorFlow, eager execution: a custom loop of GradientTape + optimizer.apply_gradients,
run op by op (no tf.function; tensorflow_graph.py wraps the same steps in one)."""
import tensorflow as tf
from tensorflow import keras

from contract.models import ADAM

from .harness import batches
from .keras_model import dtype_settings, sequential
from .tensorflow_common import TensorFlowBase


def _sums(logits, y):
    """Summed cross-entropy and number of correct predictions of one batch."""
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), y), tf.int64))
    return losses, tf.reduce_sum(losses), correct


class Implementation(TensorFlowBase):
    framework, api = "tensorflow", "eager"

    jit_compile = False

    def configure(self):
        return {**super().configure(), "tf_function": False, "jit_compile": self.jit_compile}

    def compile(self, step):
        return step  # eager: the Python step runs as it is

    def build(self, m):
        with tf.device(self.device):
            self.model = sequential(keras, m, self.spec["seed"])
            self.optimizer = keras.optimizers.Adam(self.spec["learning_rate"], **ADAM)
            if self.precision == "fp16":  # a custom loop: dynamic loss scaling is ours to add
                self.optimizer = keras.mixed_precision.LossScaleOptimizer(self.optimizer)
            self.optimizer.build(self.model.trainable_variables)  # slots now, not in step 1
        self.train_step = self.compile(self._train_step)
        self.eval_step = self.compile(self._eval_step)
        return self.model.count_params()

    def precision_settings(self):
        return {**super().precision_settings(), "jit_compile": self.jit_compile,
                **dtype_settings(keras, self.model, self.optimizer)}

    def _train_step(self, x, y):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            losses, loss_sum, correct = _sums(self.model(x, training=True), y)
            # times the dynamic scale under LossScaleOptimizer (apply unscales); else the loss
            loss = self.optimizer.scale_loss(tf.reduce_mean(losses))
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss_sum, correct

    def _eval_step(self, x, y):
        return _sums(self.model(x, training=False), y)[1:]

    def _loop(self, step, x, y, slices):
        loss_sum = correct = 0
        with tf.device(self.device):
            for s in slices:
                batch_loss, batch_correct = step(tf.constant(x[s]), tf.constant(y[s]))
                loss_sum, correct = loss_sum + batch_loss, correct + batch_correct
        return float(loss_sum) / len(x), int(correct) / len(x)  # one read-back per epoch

    def train_epoch(self, x, y, batch_size):
        return self._loop(self.train_step, x, y, self.train_batches(len(x), batch_size))

    def evaluate(self, x, y, batch_size):
        return self._loop(self.eval_step, x, y, batches(len(x), batch_size))

    def logits(self, x):
        with tf.device(self.device):
            return self.model(x, training=False).numpy()
