"""What the TensorFlow files share: the seed/thread/device setup (the model is
keras_model.sequential).

Works with TF 2.21 (Keras 3) and TF 2.15 (Keras 2 as tf.keras, the legacy image).
"""
import json
import os
from importlib.metadata import version as dist_version
from typing import Any

import tensorflow as tf
from tensorflow import keras

from contract.models import ADAM

from .harness import Implementation as Base
from .keras_model import lstm_options, mixed_policy


def make_optimizer(spec):
    """spec["optimizer"]: "adam" (Adam with the contract's parameters) or "sgd" (plain SGD:
    no momentum, no Nesterov), both at the spec's learning rate."""
    if spec.get("optimizer", "adam") == "sgd":
        return keras.optimizers.SGD(spec["learning_rate"], momentum=0.0, nesterov=False)
    return keras.optimizers.Adam(spec["learning_rate"], **ADAM)


class TensorFlowBase(Base):
    data_layout = "NHWC"
    strategy: Any = None  # tf.distribute.MultiWorkerMirroredStrategy when self.world.parallel

    @property
    def parallel(self):
        return self.world.parallel

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
        if self.parallel and len(gpus) > 1:  # one GPU per worker (MWMS would take them all)
            if len(gpus) < self.world.local_size:
                raise RuntimeError(f"{self.world.local_size} workers on this node but TensorFlow "
                                   f"sees {len(gpus)} GPUs")
            gpus = [gpus[self.world.local_rank]]
            tf.config.set_visible_devices(gpus if self.gpu else [], "GPU")
        elif self.parallel and not self.gpu and gpus:
            tf.config.set_visible_devices([], "GPU")  # a CPU run uses no GPU at all
            gpus = []
        for gpu in gpus:  # allocate as needed, as PyTorch does, so peak memory compares
            tf.config.experimental.set_memory_growth(gpu, True)
        self.device = "/GPU:0" if self.gpu else "/CPU:0"
        # the strategy before any op runs: MWMS configures the collective ops at context start
        parallel = self.start_strategy() if self.parallel else {}
        tf.config.experimental.enable_tensor_float_32_execution(self.precision == "tf32")
        keras.mixed_precision.set_global_policy(mixed_policy(self.precision))  # before any layer
        if parallel:
            parallel["device"] = self.strategy.extended.worker_devices[0]
        return {**({"parallel": parallel} if parallel else {}),
                "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                "keras_version": dist_version("keras"), "gpu_memory_growth": bool(gpus),
                **lstm_options(self.model_spec, self.gpu)}

    def start_strategy(self):
        """tf.distribute.MultiWorkerMirroredStrategy from a TF_CONFIG built from self.world
        (worker r at world.worker_address(r), this task = rank); ring all-reduce over gRPC on
        CPUs, NCCL on GPUs. Must run before any TensorFlow op (TensorFlow's own rule)."""
        world = self.world
        workers = [world.worker_address(r) for r in range(world.size)]
        os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers},
                                              "task": {"type": "worker", "index": world.rank}})
        impl = tf.distribute.experimental.CommunicationImplementation
        chosen = impl.NCCL if self.gpu else impl.RING
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(implementation=chosen))
        used = self.strategy.extended._communication_options.implementation  # noqa: SLF001
        if self.strategy.num_replicas_in_sync != world.size:
            raise RuntimeError(f"MultiWorkerMirroredStrategy has {self.strategy.num_replicas_in_sync} "
                               f"replicas, the run {world.size} workers (one device each)")
        return {"mechanism": "tf.distribute.MultiWorkerMirroredStrategy (TF_CONFIG)",
                "collective": f"CommunicationImplementation.{used.name}: "
                              + ("NCCL" if used == impl.NCCL else "ring all-reduce over gRPC"),
                "replicas_in_sync": self.strategy.num_replicas_in_sync,
                "tf_config_workers": workers,
                "gradient_reduction": "Keras optimizer all-reduce (SUM) of gradients of the loss "
                                      "scaled by 1/global batch (tf.nn.compute_average_loss)"}

    def scope(self):
        """Where the model and optimizer are built: the strategy's scope in a parallel run,
        this file's device otherwise."""
        return self.strategy.scope() if self.strategy else tf.device(self.device)

    def barrier(self):
        """Every rank waits here: a one-element all-reduce through the strategy, read back."""
        if not self.strategy:
            return
        ctx = lambda: tf.distribute.get_replica_context().all_reduce(  # noqa: E731
            tf.distribute.ReduceOp.SUM, tf.ones(()))
        self.strategy.experimental_local_results(self.strategy.run(ctx))[0].numpy()

    def communication(self):
        return {"time_s": None,
                "source": "not exposed by tf.distribute: the gradient all-reduce is a collective op "
                          "inside the training step (CollectiveReduceV2), with no per-op timer in "
                          "the API; only the profiler's trace would show it"}

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
