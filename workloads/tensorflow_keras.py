"""TensorFlow, Keras API: model.compile + model.fit."""
import tensorflow as tf
from tensorflow import keras

from .keras_model import compiled_sequential, evaluate, fit_epoch
from .tensorflow_common import TensorFlowBase


class Implementation(TensorFlowBase):
    framework, api = "tensorflow", "keras"

    def configure(self):
        self.jit_compile = self.spec["options"].get("jit_compile", "auto")
        return {**super().configure(), "jit_compile": self.jit_compile}

    def build(self, m):
        with tf.device(self.device):
            self.model = compiled_sequential(keras, m, self.spec["seed"],
                                             self.spec["learning_rate"], self.jit_compile)
        return self.model.count_params()

    def train_epoch(self, x, y, batch_size):
        with tf.device(self.device):
            return fit_epoch(self.model, x, y, batch_size)

    def evaluate(self, x, y, batch_size):
        with tf.device(self.device):
            return evaluate(self.model, x, y, batch_size)

    def logits(self, x):
        with tf.device(self.device):
            return self.model(x, training=False).numpy()
