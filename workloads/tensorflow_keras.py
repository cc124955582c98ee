"""TensorFlow, Keras API: model.compile + model.fit."""
import tensorflow as tf
from tensorflow import keras

from .keras_fit import compiled_sequential, fit_epoch
from .keras_model import dtype_settings
from .tensorflow_common import TensorFlowBase


class Implementation(TensorFlowBase):
    framework, api = "tensorflow", "keras"

    def configure(self):
        # XLA off unless asked, as in tensorflow/eager and /graph (Keras' "auto" would turn it
        # on with a GPU present); "auto" is still accepted
        self.jit_compile = self.spec["options"].get("jit_compile", False)
        return {**super().configure(), "jit_compile": self.jit_compile}

    def build(self, m):
        with tf.device(self.device):
            self.model = compiled_sequential(keras, m, self.spec["seed"],
                                             self.spec["learning_rate"], self.jit_compile)
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
