"""TensorFlow, Keras API: model.compile + model.fit."""
import tensorflow as tf
from tensorflow import keras

from .harness import Implementation as Base
from .models import ADAM


class Implementation(Base):
    framework, api, data_layout = "tensorflow", "keras", "NHWC"

    def version(self):
        return tf.__version__

    def configure(self):
        keras.utils.set_random_seed(self.spec["seed"])
        threads = self.spec["threads"]
        if threads["intra_op"]:
            tf.config.threading.set_intra_op_parallelism_threads(threads["intra_op"])
        if threads["inter_op"]:
            tf.config.threading.set_inter_op_parallelism_threads(threads["inter_op"])
        gpus = tf.config.list_physical_devices("GPU")
        if self.gpu and not gpus:
            raise RuntimeError("device gpu requested but TensorFlow sees no GPU")
        for gpu in gpus:  # allocate as needed, as PyTorch does, so peak memory compares
            tf.config.experimental.set_memory_growth(gpu, True)
        self.device = "/GPU:0" if self.gpu else "/CPU:0"
        jit = self.spec["options"].get("jit_compile", "auto")
        self.jit_compile = jit
        return {"intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                "keras_version": keras.__version__, "jit_compile": jit,
                "gpu_memory_growth": bool(gpus)}

    def build(self, m):
        (c1, k1), (c2, k2) = m.conv_layers
        layers = keras.layers
        with tf.device(self.device):
            self.model = keras.Sequential([
                keras.Input(shape=m.input_shape),
                layers.Conv2D(c1, k1, activation="relu"), layers.MaxPooling2D(m.pool),
                layers.Conv2D(c2, k2, activation="relu"), layers.MaxPooling2D(m.pool),
                layers.Flatten(), layers.Dense(m.dense_units, activation="relu"),
                layers.Dropout(m.dropout), layers.Dense(m.classes)])
            self.model.compile(
                optimizer=keras.optimizers.Adam(self.spec["learning_rate"], **ADAM),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"], jit_compile=self.jit_compile)
        return self.model.count_params()

    def train_epoch(self, x, y, batch_size):
        with tf.device(self.device):
            history = self.model.fit(x, y, batch_size=batch_size, epochs=1,
                                     shuffle=False, verbose=0)
        return history.history["loss"][-1], history.history["accuracy"][-1]

    def evaluate(self, x, y, batch_size):
        with tf.device(self.device):
            loss, accuracy = self.model.evaluate(x, y, batch_size=batch_size, verbose=0)
        return loss, accuracy

    def logits(self, x):
        with tf.device(self.device):
            return self.model(x, training=False).numpy()

    def device_name(self):
        if self.gpu:
            details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
            return details.get("device_name", "GPU")
        return super().device_name()

    def peak_device_memory_mb(self):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20 if self.gpu else None

    def is_out_of_memory(self, exc):
        return isinstance(exc, tf.errors.ResourceExhaustedError) or super().is_out_of_memory(exc)
