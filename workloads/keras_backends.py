"""Keras 3 standalone on JAX, PyTorch or TensorFlow: model.compile + model.fit, the same
Sequential as tensorflow_keras.py. One file serves the three APIs: the harness sets
KERAS_BACKEND (registry.IMPORT_ENVIRONMENT) before this import; Keras reads it on import."""
import importlib
import os
import random

import keras

from .harness import Implementation as Base
from .keras_fit import compiled_sequential, fit_epoch
from .keras_model import dtype_settings, lstm_options, mixed_policy
from .xla_threads import cuda_libraries, limit_xla_cpu_threads

BACKEND = keras.config.backend()
fw = importlib.import_module(BACKEND)  # the backend framework: jax, torch or tensorflow


class Implementation(Base):
    framework, api, data_layout = "keras", BACKEND, "NHWC"
    device_memory_kind = {
        "jax": "allocator peak: XLA's memory_stats()['peak_bytes_in_use'] (preallocation off)",
        "torch": "allocator peak: torch.cuda.max_memory_allocated (excludes the cache's reserve)",
        "tensorflow": "allocator peak: tf.config.experimental.get_memory_info (memory growth on)"}[BACKEND]

    def version(self):
        return keras.__version__

    def configure(self):
        threads = self.spec["threads"]
        # jit_compile when the run does not say (Keras' "auto" still accepted): on for JAX, which
        # only runs jitted; off on torch (torch.compile there), as pytorch/eager's default; off on
        # TensorFlow as in tensorflow/* (Keras' "auto" would turn XLA on with a GPU present)
        self.jit_compile = self.spec["options"].get("jit_compile", BACKEND == "jax")
        options, self.tf32_settings = getattr(self, f"_setup_{BACKEND}")(
            threads["intra_op"], threads["inter_op"], self.precision == "tf32")
        if self.gpu and not self.gpu_found:
            raise RuntimeError(f"device gpu requested but Keras' {BACKEND} backend sees no GPU")
        # no device index: Keras' torch backend would copy its Parameters to "cpu:0"
        self.device = "gpu" if self.gpu else "cpu"
        keras.mixed_precision.set_global_policy(mixed_policy(self.precision))  # before any layer
        # keras.utils.set_random_seed would import TensorFlow (seconds, ~450 MB) into a JAX
        # or torch run just to seed it; Keras draws its default seeds from Python's random
        random.seed(self.spec["seed"])
        if BACKEND == "tensorflow":
            keras.utils.set_random_seed(self.spec["seed"])
        elif BACKEND == "torch":
            fw.manual_seed(self.spec["seed"])
        return {"backend": BACKEND, "backend_version": fw.__version__, **options,
                "keras_version": keras.__version__, "jit_compile": self.jit_compile,
                **lstm_options(self.model_spec, self.gpu)}

    # Each backend: threads and its own TF32 switch (on for tf32 only); returns the options and
    # the switch as the backend reports it
    def _setup_jax(self, intra, inter, tf32):
        pool = limit_xla_cpu_threads(intra)  # before the first JAX operation starts XLA
        self.gpu_found = fw.default_backend() == "gpu"
        fw.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
        return ({"intra_op_threads": pool, "inter_op_threads": None, "xla_flags": os.environ.get("XLA_FLAGS", "")},
                {"default_matmul_precision": fw.config.jax_default_matmul_precision})

    def _setup_torch(self, intra, inter, tf32):
        if intra:
            fw.set_num_threads(intra)
        if inter:
            fw.set_num_interop_threads(inter)
        self.gpu_found = fw.cuda.is_available()
        fw.backends.cuda.matmul.allow_tf32 = fw.backends.cudnn.allow_tf32 = tf32  # as pytorch_eager.py
        fw.set_float32_matmul_precision("high" if tf32 else "highest")
        return ({"intra_op_threads": fw.get_num_threads(), "inter_op_threads": fw.get_num_interop_threads(),
                 "cudnn_benchmark": fw.backends.cudnn.benchmark},
                {"matmul_allow_tf32": fw.backends.cuda.matmul.allow_tf32,
                 "cudnn_allow_tf32": fw.backends.cudnn.allow_tf32,
                 "float32_matmul_precision": fw.get_float32_matmul_precision()})

    def _setup_tensorflow(self, intra, inter, tf32):
        if intra:
            fw.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            fw.config.threading.set_inter_op_parallelism_threads(inter)
        gpus = fw.config.list_physical_devices("GPU")
        for gpu in gpus:  # allocate as needed, as tensorflow_keras.py does
            fw.config.experimental.set_memory_growth(gpu, True)
        self.gpu_found = bool(gpus)
        fw.config.experimental.enable_tensor_float_32_execution(tf32)
        return ({"intra_op_threads": fw.config.threading.get_intra_op_parallelism_threads(),
                 "inter_op_threads": fw.config.threading.get_inter_op_parallelism_threads(),
                 "gpu_memory_growth": bool(gpus)},
                {"tensor_float_32_execution": fw.config.experimental.tensor_float_32_execution_enabled()})

    def build(self, m):
        with keras.device(self.device):
            self.model = compiled_sequential(keras, m, self.spec["seed"],
                                             self.spec["learning_rate"], self.jit_compile)
        return self.model.count_params()

    def precision_settings(self):
        return {**self.tf32_settings, "jit_compile": self.model.jit_compile,  # as Keras resolved it
                **dtype_settings(keras, self.model, self.model.optimizer)}

    def gpu_libraries(self):  # TensorFlow: the versions it was built against
        if BACKEND == "torch":
            return {"cuda": fw.version.cuda, "cudnn": fw.backends.cudnn.version()}
        return cuda_libraries() if BACKEND == "jax" else {
            lib: fw.sysconfig.get_build_info().get(f"{lib}_version") for lib in ("cuda", "cudnn")}

    def train_epoch(self, x, y, batch_size):
        with keras.device(self.device):
            return fit_epoch(keras, self.model, x, y, batch_size, self.step_windows)

    def evaluate(self, x, y, batch_size):
        with keras.device(self.device):
            return self.model.evaluate(x, y, batch_size=batch_size, verbose=0)  # [loss, accuracy]

    def logits(self, x):
        with keras.device(self.device):
            return keras.ops.convert_to_numpy(self.model(x, training=False))

    def synchronize(self):
        # fit/evaluate return host floats, but JAX and torch dispatch GPU work asynchronously
        if self.gpu and BACKEND == "jax" and hasattr(self, "model"):
            fw.block_until_ready([v.value for v in self.model.variables])
        elif self.gpu and BACKEND == "torch":
            fw.cuda.synchronize()

    def device_name(self):
        if not self.gpu:
            return super().device_name()
        if BACKEND == "jax":
            return fw.devices("gpu")[0].device_kind
        if BACKEND == "torch":
            return fw.cuda.get_device_name()
        gpu = fw.config.list_physical_devices("GPU")[0]
        return fw.config.experimental.get_device_details(gpu).get("device_name", "GPU")

    def peak_device_memory_mb(self):
        if not self.gpu:
            return None
        if BACKEND == "jax":
            return fw.devices("gpu")[0].memory_stats()["peak_bytes_in_use"] / 2**20
        if BACKEND == "torch":
            return fw.cuda.max_memory_allocated() / 2**20
        return fw.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
