"""Keras 3 standalone on JAX, PyTorch or TensorFlow: model.compile + model.fit, the same
Sequential as tensorflow_keras.py. One file serves the three APIs: the harness sets
KERAS_BACKEND (registry.IMPORT_ENVIRONMENT) before this import; Keras reads it on import."""
import importlib
import os
import random

import keras

from .harness import Implementation as Base
from .keras_model import compiled_sequential, evaluate, fit_epoch, lstm_options
from .xla_threads import limit_xla_cpu_threads

BACKEND = keras.config.backend()
fw = importlib.import_module(BACKEND)  # the backend framework: jax, torch or tensorflow


class Implementation(Base):
    framework, api, data_layout = "keras", BACKEND, "NHWC"

    def version(self):
        return keras.__version__

    def configure(self):
        threads, jit = self.spec["threads"], self.spec["options"].get("jit_compile", "auto")
        options = {"backend": BACKEND, "backend_version": fw.__version__,
                   **getattr(self, f"_setup_{BACKEND}")(threads["intra_op"], threads["inter_op"])}
        if self.gpu and not self.gpu_found:
            raise RuntimeError(f"device gpu requested but Keras' {BACKEND} backend sees no GPU")
        # no device index: Keras' torch backend would copy its Parameters to "cpu:0"
        self.device = "gpu" if self.gpu else "cpu"
        probe = keras.Sequential()  # what jit_compile="auto" resolves to on this backend/host
        probe.compile(jit_compile=jit)
        self.jit_compile = probe.jit_compile
        # keras.utils.set_random_seed would import TensorFlow (seconds, ~450 MB) into a JAX
        # or torch run just to seed it; Keras draws its default seeds from Python's random
        random.seed(self.spec["seed"])
        if BACKEND == "tensorflow":
            keras.utils.set_random_seed(self.spec["seed"])
        elif BACKEND == "torch":
            fw.manual_seed(self.spec["seed"])
        return {**options, "keras_version": keras.__version__, "jit_compile_option": jit,
                "jit_compile": self.jit_compile, **lstm_options(self.model_spec, self.gpu)}

    def _setup_jax(self, intra, inter):
        pool = limit_xla_cpu_threads(intra)  # before the first JAX operation starts XLA
        self.gpu_found = fw.default_backend() == "gpu"
        return {"intra_op_threads": pool, "inter_op_threads": None,
                "xla_flags": os.environ.get("XLA_FLAGS", "")}

    def _setup_torch(self, intra, inter):
        if intra:
            fw.set_num_threads(intra)
        if inter:
            fw.set_num_interop_threads(inter)
        self.gpu_found = fw.cuda.is_available()
        return {"intra_op_threads": fw.get_num_threads(),
                "inter_op_threads": fw.get_num_interop_threads(),
                "cudnn_benchmark": fw.backends.cudnn.benchmark}

    def _setup_tensorflow(self, intra, inter):
        if intra:
            fw.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            fw.config.threading.set_inter_op_parallelism_threads(inter)
        gpus = fw.config.list_physical_devices("GPU")
        for gpu in gpus:  # allocate as needed, as tensorflow_keras.py does
            fw.config.experimental.set_memory_growth(gpu, True)
        self.gpu_found = bool(gpus)
        return {"intra_op_threads": fw.config.threading.get_intra_op_parallelism_threads(),
                "inter_op_threads": fw.config.threading.get_inter_op_parallelism_threads(),
                "gpu_memory_growth": bool(gpus)}

    def build(self, m):
        with keras.device(self.device):
            self.model = compiled_sequential(keras, m, self.spec["seed"],
                                             self.spec["learning_rate"], self.jit_compile)
        return self.model.count_params()

    def train_epoch(self, x, y, batch_size):
        with keras.device(self.device):
            return fit_epoch(self.model, x, y, batch_size)

    def evaluate(self, x, y, batch_size):
        with keras.device(self.device):
            return evaluate(self.model, x, y, batch_size)

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
