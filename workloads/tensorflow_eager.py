"""TensorFlow, eager execution: a custom loop of GradientTape + optimizer.apply_gradients,
run op by op (no tf.function; tensorflow_graph.py wraps the same steps in one).

Data-parallel (self.world.parallel): tf.distribute.MultiWorkerMirroredStrategy (one replica
per worker process, tensorflow_common.start_strategy). Each worker holds its own shard, so
strategy.run gets the local batch as it is (one replica per worker: the replica's argument is
that tensor); the loss is tf.nn.compute_average_loss (sum / (local batch x replicas)) and the
Keras optimizer all-reduces the gradients with a SUM, which makes them the global batch's mean
gradient. Loss and accuracy returned are the worker's own shard's; evaluation is local."""
import tensorflow as tf
from tensorflow import keras

from .harness import batches
from .keras_model import dtype_settings, sequential
from .tensorflow_common import TensorFlowBase, make_optimizer


def _sums(logits, y):
    """Summed cross-entropy and number of correct predictions of one batch."""
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), y), tf.int64))
    return losses, tf.reduce_sum(losses), correct


class Implementation(TensorFlowBase):
    framework, api = "tensorflow", "eager"
    optimizers = ("adam", "sgd")

    jit_compile = False

    def configure(self):
        return {**super().configure(), "tf_function": False, "jit_compile": self.jit_compile}

    def compile(self, step):
        return step  # eager: the Python step runs as it is

    def build(self, m):
        with self.scope():  # tf.device(self.device), or the strategy's scope when parallel
            self.model = sequential(keras, m, self.spec["seed"])
            self.optimizer = make_optimizer(self.spec)
            if self.precision == "fp16":  # a custom loop: dynamic loss scaling is ours to add
                self.optimizer = keras.mixed_precision.LossScaleOptimizer(self.optimizer)
            self.optimizer.build(self.model.trainable_variables)  # slots now, not in step 1
        self.train_step = self.compile(self._distributed_train_step if self.strategy else self._train_step)
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
            loss = self.optimizer.scale_loss(self.mean_loss(losses))
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss_sum, correct

    def mean_loss(self, losses):
        """The loss to differentiate: the batch mean; when parallel, the local sum over the
        global batch (local rows x replicas, every rank's batch being the same size), so the
        optimizer's SUM all-reduce of the gradients gives the global batch's mean gradient."""
        if self.strategy:
            return tf.nn.compute_average_loss(losses)  # replica context: divides by rows x replicas
        return tf.reduce_mean(losses)

    def _distributed_train_step(self, x, y):
        """The train step on this worker's replica (its own batch, no input distribution);
        the figures are this replica's, read locally."""
        loss_sum, correct = self.strategy.run(self._train_step, args=(x, y))
        local = self.strategy.experimental_local_results
        return local(loss_sum)[0], local(correct)[0]

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
