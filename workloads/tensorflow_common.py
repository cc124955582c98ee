"""What the TensorFlow files share: the seed/thread/device setup (the model is
keras_model.sequential).

Works with TF 2.21 (Keras 3) and TF 2.15 (Keras 2 as tf.keras, the legacy image).
"""
from importlib.metadata import version as dist_version

import tensorflow as tf
from tensorflow import keras

from .harness import Implementation as Base
from .keras_model import lstm_options, mixed_policy


class TensorFlowBase(Base):
    data_layout = "NHWC"

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
        tf.config.experimental.enable_tensor_float_32_execution(self.precision == "tf32")
        keras.mixed_precision.set_global_policy(mixed_policy(self.precision))  # before any layer
        return {"intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                "keras_version": dist_version("keras"), "gpu_memory_growth": bool(gpus),
                **lstm_options(self.model_spec, self.gpu)}

    def precision_settings(self):
        return {"tensor_float_32_execution": tf.config.experimental.tensor_float_32_execution_enabled(),
                "dtype_policy": keras.mixed_precision.global_policy().name}

    def gpu_libraries(self):
        build = tf.sysconfig.get_build_info()  # the versions TensorFlow was built against
        return {"cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version")}

    device_memory_kind = ("allocator peak: tf.config.experimental.get_memory_info peak (BFC "
                          "allocator bytes in use; memory growth on, excludes the CUDA context)")

    def synchronize(self):
        if self.gpu:
            tf.test.experimental.sync_devices()

    def device_name(self):
        if self.gpu:
            gpu = tf.config.list_physical_devices("GPU")[0]
            return tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")
        return super().device_name()

    def peak_device_memory_mb(self):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20 if self.gpu else None

    def is_out_of_memory(self, exc):
        return isinstance(exc, tf.errors.ResourceExhaustedError) or super().is_out_of_memory(exc)
