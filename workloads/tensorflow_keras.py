"""TensorFlow, Keras API: model.compile + model.fit.

Data-parallel (self.world.parallel): the model is built and compiled in the scope of
tf.distribute.MultiWorkerMirroredStrategy (tensorflow_common.start_strategy), and fit and
evaluate get this worker's own shard as a distributed data set
(strategy.distribute_datasets_from_function: no auto-sharding, batched at the per-worker
batch). Keras scales each replica's mean loss by 1/replicas and its optimizer all-reduces the
gradients with a SUM: the global batch's mean gradient. Keras' metrics are sync-on-read
variables, so the loss and accuracy fit and evaluate return are already every rank's
(all-reduced each step by Keras itself): the same figure on every rank, the global mean."""
import tensorflow as tf
from tensorflow import keras

from .keras_fit import fit_epoch, step_counter
from .keras_model import dtype_settings, sequential
from .tensorflow_common import TensorFlowBase, make_optimizer


class Implementation(TensorFlowBase):
    framework, api = "tensorflow", "keras"
    optimizers = ("adam", "sgd")
    supports_parallel = True

    def configure(self):
        # XLA off unless asked, as in tensorflow/eager and /graph (Keras' "auto" would turn it
        # on with a GPU present); "auto" is still accepted
        self.jit_compile = self.spec["options"].get("jit_compile", False)
        options = super().configure()
        if self.strategy:
            options["parallel"]["figures"] = ("loss and accuracy of fit/evaluate: Keras' metrics, "
                                              "all-reduced over the ranks (global mean)")
        return {**options, "jit_compile": self.jit_compile}

    def build(self, m):
        with self.scope():  # tf.device(self.device), or the strategy's scope when parallel
            # keras_fit.compiled_sequential's compile, with the spec's optimizer (adam or sgd);
            # under mixed_float16 Keras 3's compile wraps it in a LossScaleOptimizer itself
            self.model = sequential(keras, m, self.spec["seed"])
            self.model.compile(optimizer=make_optimizer(self.spec),
                               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                               metrics=["accuracy"], jit_compile=self.jit_compile)
        if self.strategy and __import__("os").environ.get("DLBENCH_TF_KERAS_HACK"):
            self.model._distribute_strategy = None  # EXPERIMENT: skip _maybe_symbolic_build
        return self.model.count_params()

    def precision_settings(self):
        return {**super().precision_settings(), "jit_compile": self.model.jit_compile,
                **dtype_settings(keras, self.model, self.model.optimizer)}

    def _local_batches(self, x, y, batch_size):
        """This worker's rows, in order, as the strategy's distributed data set: the function
        runs once per worker (one replica each) and is not sharded again."""
        def dataset(_context):
            return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
        return self.strategy.distribute_datasets_from_function(dataset)

    def train_epoch(self, x, y, batch_size):
        if self.strategy:
            with self.strategy.scope():
              logs = self.model.fit(self._local_batches(x, y, batch_size), epochs=1, verbose=0,
                                  callbacks=[step_counter(keras, self.step_windows)]).history
            return logs["loss"][-1], logs["accuracy"][-1]
        with tf.device(self.device):
            return fit_epoch(keras, self.model, x, y, batch_size, self.step_windows)

    def evaluate(self, x, y, batch_size):
        if self.strategy:
            with self.strategy.scope():
                return self.model.evaluate(self._local_batches(x, y, batch_size), verbose=0)
        with tf.device(self.device):
            return self.model.evaluate(x, y, batch_size=batch_size, verbose=0)  # [loss, accuracy]

    def logits(self, x):
        with tf.device(self.device):
            return self.model(x, training=False).numpy()
