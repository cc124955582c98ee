"""Keras 3 standalone on JAX, PyTorch or TensorFlow: model.compile + model.fit, the same
Sequential as tensorflow_keras.py. One file serves the three APIs: the harness sets
KERAS_BACKEND (registry.IMPORT_ENVIRONMENT) before this import; Keras reads it on import.

Data-parallel (self.world.parallel), JAX backend only: jax.distributed.initialize (gloo CPU
collectives), then keras.distribution.DataParallel over every process' devices, set before
the model is built, so its variables are replicated and fit's batches are global arrays made
of each process' own rows (auto_shard_dataset=False: the harness shards). Evaluation and
logits run a local jit of model.stateless_call on this process' copy of the weights."""
import contextlib
import importlib
import os
import random

import keras

from .harness import Implementation as Base
from .harness import batches
from .keras_fit import compiled_sequential, fit_epoch
from .keras_model import dtype_settings, lstm_options, mixed_policy
from .xla_threads import cuda_libraries, limit_xla_cpu_threads, start_distributed

BACKEND = keras.config.backend()
fw = importlib.import_module(BACKEND)  # the backend framework: jax, torch or tensorflow


class Implementation(Base):
    framework, api, data_layout = "keras", BACKEND, "NHWC"
    optimizers = ("adam", "sgd")
    device_memory_kind = {
        "jax": "allocator peak: XLA's memory_stats()['peak_bytes_in_use'] (preallocation off)",
        "torch": "allocator peak: torch.cuda.max_memory_allocated (excludes the cache's reserve)",
        "tensorflow": "allocator peak: tf.config.experimental.get_memory_info (memory growth on)"}[BACKEND]

    def version(self):
        return keras.__version__

    def configure(self):
        threads = self.spec["threads"]
        # data-parallel on JAX only (the harness refuses the others: contract/registry.py)
        self.parallel = self.world.parallel
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
        if self.parallel:
            # every process' devices; variables replicated, batches split along the batch axis
            devices = keras.distribution.list_devices("gpu" if self.gpu else "cpu")
            self.distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
            keras.distribution.set_distribution(self.distribution)  # before the model is built
            options["parallel"] = {
                "mechanism": "keras.distribution.DataParallel (JAX backend) over "
                             "jax.distributed.initialize: model.fit's batches are global arrays "
                             "sharded on the batch axis, variables replicated; gradient "
                             "all-reduce inserted by XLA's SPMD partitioner",
                **self.parallel_settings, "devices": len(devices),
                "devices_per_process": fw.local_device_count()}
        return {"backend": BACKEND, "backend_version": fw.__version__, **options,
                "keras_version": keras.__version__, "jit_compile": self.jit_compile,
                **lstm_options(self.model_spec, self.gpu)}

    def device_scope(self):
        # keras.device("cpu") is jax.devices("cpu")[0]: process 0's device when parallel; the
        # distribution places everything then
        return contextlib.nullcontext() if self.parallel else keras.device(self.device)

    # Each backend: threads and its own TF32 switch (on for tf32 only); returns the options and
    # the switch as the backend reports it
    def _setup_jax(self, intra, inter, tf32):
        pool = limit_xla_cpu_threads(intra)  # before the first JAX operation starts XLA
        if self.parallel:
            # jax.distributed.initialize itself, as keras.distribution.initialize does, without
            # that wrapper's initialize_rng: with no Keras global seed it agrees on a random one
            # (a psum) and sets it through keras.utils.set_random_seed, which imports TensorFlow;
            # here every process seeds Python's random from the spec (configure), so the default
            # seeds already agree
            self.parallel_settings = start_distributed(self.world, self.gpu)
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
        with self.device_scope():
            self.model = compiled_sequential(keras, m, self.spec["seed"],
                                             self.spec["learning_rate"], self.jit_compile)
            if self.spec.get("optimizer", "adam") == "sgd":  # plain SGD, no momentum
                self.model.compile(optimizer=keras.optimizers.SGD(self.spec["learning_rate"]),
                                   loss=self.model.loss, metrics=["accuracy"], jit_compile=self.jit_compile)
        if self.parallel:
            self.local_forward = fw.jit(lambda tv, ntv, x: self.model.stateless_call(tv, ntv, x, training=False)[0])
        return self.model.count_params()

    def local_weights(self):
        """This process' copy of the replicated variables (trainable, non-trainable)."""
        local = lambda vs: [v.value.addressable_data(0) for v in vs]  # noqa: E731
        return local(self.model.trainable_variables), local(self.model.non_trainable_variables)

    def _local_evaluate(self, x, y, batch_size):
        """Local: softmax cross-entropy and accuracy on this process' copy of the weights."""
        jnp = fw.numpy
        tv, ntv = self.local_weights()
        device = fw.local_devices()[0]
        loss_sum, correct = 0.0, 0
        for s in batches(len(x), batch_size):
            logits = self.local_forward(tv, ntv, fw.device_put(x[s], device)).astype(jnp.float32)
            labels = fw.device_put(y[s].astype("int32"), device)
            logp = fw.nn.log_softmax(logits)
            loss_sum = loss_sum - jnp.take_along_axis(logp, labels[:, None], axis=1).sum()
            correct = correct + (logits.argmax(1) == labels).sum()
        loss_sum, correct = fw.device_get((loss_sum, correct))
        return float(loss_sum) / len(x), int(correct) / len(x)

    def precision_settings(self):
        return {**self.tf32_settings, "jit_compile": self.model.jit_compile,  # as Keras resolved it
                **dtype_settings(keras, self.model, self.model.optimizer)}

    def gpu_libraries(self):  # TensorFlow: the versions it was built against
        if BACKEND == "torch":
            return {"cuda": fw.version.cuda, "cudnn": fw.backends.cudnn.version()}
        return cuda_libraries() if BACKEND == "jax" else {
            lib: fw.sysconfig.get_build_info().get(f"{lib}_version") for lib in ("cuda", "cudnn")}

    def train_epoch(self, x, y, batch_size):
        # parallel: fit's loss and accuracy are over the GLOBAL batches (Keras' metrics run
        # inside the sharded step), the same figure on every rank
        with self.device_scope():
            return fit_epoch(keras, self.model, x, y, batch_size, self.step_windows)

    def evaluate(self, x, y, batch_size):
        if self.parallel:
            return self._local_evaluate(x, y, batch_size)
        with keras.device(self.device):
            return self.model.evaluate(x, y, batch_size=batch_size, verbose=0)  # [loss, accuracy]

    def logits(self, x):
        if self.parallel:
            return fw.device_get(self.local_forward(*self.local_weights(), fw.device_put(x, fw.local_devices()[0])))
        with keras.device(self.device):
            return keras.ops.convert_to_numpy(self.model(x, training=False))

    def barrier(self):
        if self.parallel:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("dlbench barrier")

    def communication(self):
        return {"time_s": None,
                "source": "not exposed by Keras/JAX: the gradient all-reduce is an XLA collective "
                          "fused into fit's compiled train step; only a profiler trace would time it"}

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
