"""TensorFlow, Keras API: model.compile + model.fit.

No data-parallel run: contract/registry.py PARALLEL_UNSUPPORTED says why."""
import tensorflow as tf
from tensorflow import keras

from .keras_fit import fit_epoch
from .keras_model import dtype_settings, sequential
from .tensorflow_common import TensorFlowBase, make_optimizer


class Implementation(TensorFlowBase):
    framework, api = "tensorflow", "keras"
    optimizers = ("adam", "sgd")

    def configure(self):
        # XLA off unless asked, as in tensorflow/eager and /graph (Keras' "auto" would turn it
        # on with a GPU present); "auto" is still accepted
        self.jit_compile = self.spec["options"].get("jit_compile", False)
        return {**super().configure(), "jit_compile": self.jit_compile}

    def build(self, m):
        with tf.device(self.device):
            # keras_fit.compiled_sequential's compile, with the spec's optimizer (adam or sgd);
            # under mixed_float16 Keras 3's compile wraps it in a LossScaleOptimizer itself
            self.model = sequential(keras, m, self.spec["seed"])
            self.model.compile(optimizer=make_optimizer(self.spec),
                               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                               metrics=["accuracy"], jit_compile=self.jit_compile)
        return self.model.count_params()

    def precision_settings(self):
        return {**super().precision_settings(), "jit_compile": self.model.jit_compile,
                **dtype_settings(keras, self.model, self.model.optimizer)}

    def train_epoch(self, x, y, batch_size):
        with tf.device(self.device):
            return fit_epoch(keras, self.model, x, y, batch_size, self.step_windows)

    def evaluate(self, x, y, batch_size):
        with tf.device(self.device):
            return self.model.evaluate(x, y, batch_size=batch_size, verbose=0)  # [loss, accuracy]

    def logits(self, x):
        with tf.device(self.device):
            return self.model(x, training=False).numpy()
