"""Which module implements each framework/API. Pure data: importing it loads no framework.

A new framework/API: add its file next to this one and a line here, and list the
API under its image in docker/images.yaml (a test checks the two agree).
"""
IMPLEMENTATIONS = {
    ("pytorch", "eager"): "workloads.pytorch_eager",
    ("tensorflow", "keras"): "workloads.tensorflow_keras",
    ("tensorflow", "eager"): "workloads.tensorflow_eager",
    ("tensorflow", "graph"): "workloads.tensorflow_graph",
    ("tensorflow-legacy", "estimator"): "workloads.tensorflow_legacy_estimator",
    ("keras", "jax"): "workloads.keras_backends",
    ("keras", "torch"): "workloads.keras_backends",
    ("keras", "tensorflow"): "workloads.keras_backends",
    ("jax", "flax"): "workloads.jax_flax",
    ("mxnet", "gluon"): "workloads.mxnet_gluon",
    ("chainer", "eager"): "workloads.chainer_eager",
    ("theano", "graph"): "workloads.theano_graph",
    ("paddle", "dygraph"): "workloads.paddle_dygraph",
}

# Environment the framework reads at import time, set by the harness before the import
# (one Keras 3 file serves three backends; the backend is fixed once keras is imported).
# XLA_PYTHON_CLIENT_PREALLOCATE=false: JAX otherwise reserves 75 % of every GPU it sees at
# start, so its peak memory would not compare with the others' allocate-as-needed.
_JAX_GPU_MEMORY = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
IMPORT_ENVIRONMENT = {
    ("jax", "flax"): _JAX_GPU_MEMORY,
    ("keras", "jax"): {"KERAS_BACKEND": "jax", **_JAX_GPU_MEMORY},
    ("keras", "torch"): {"KERAS_BACKEND": "torch"},
    ("keras", "tensorflow"): {"KERAS_BACKEND": "tensorflow"},
}

# The framework options (a suite's `options:`, `--option KEY=VALUE` by hand) each framework
# file reads, as a JSON Schema per option. Pure data: the host refuses at plan time any option
# a framework does not read (a misspelt `compil: true` would otherwise be recorded and ignored);
# a test reads each framework file's source and checks it against this table both ways.
_JIT_COMPILE = {"enum": [True, False, "auto"],
                "description": "XLA: true, false, or Keras' own choice per backend"}
OPTIONS: dict[tuple[str, str], dict[str, dict]] = {
    ("pytorch", "eager"): {"compile": {"type": "boolean", "description": "torch.compile the model"}},
    ("tensorflow", "keras"): {"jit_compile": _JIT_COMPILE},
    ("tensorflow", "eager"): {},
    ("tensorflow", "graph"): {"jit_compile": {"type": "boolean",
                                              "description": "XLA-compile the tf.function steps"}},
    ("tensorflow-legacy", "estimator"): {},
    ("keras", "jax"): {"jit_compile": _JIT_COMPILE},
    ("keras", "torch"): {"jit_compile": _JIT_COMPILE},
    ("keras", "tensorflow"): {"jit_compile": _JIT_COMPILE},
    ("jax", "flax"): {},
    ("mxnet", "gluon"): {"hybridize": {"type": "boolean",
                                       "description": "false: imperative Gluon (default true)"}},
    ("chainer", "eager"): {},
    ("theano", "graph"): {},
    ("paddle", "dygraph"): {"to_static": {"type": "boolean",
                                          "description": "paddle.jit.to_static the model"}},
}

# Precision policies (a suite's `precision:`, `--precision` by hand), the same meaning in every
# framework; each framework file applies the policy in configure() and records the settings in
# force as the framework reports them. A policy a framework/API cannot do maps to the reason:
# the run's outcome is `unsupported` with it, never a silent fp32 run.
PRECISION_POLICIES = {
    "fp32": "true FP32: TF32 off everywhere (NVIDIA_TF32_OVERRIDE=0 and each framework's switch)",
    "tf32": "FP32 storage, TF32 tensor-core matmuls and convolutions (GPU, Ampere and newer)",
    "bf16": "mixed: bfloat16 compute, float32 master weights, loss and softmax in float32",
    "fp16": "mixed: float16 compute, float32 master weights, dynamic loss scaling",
}
# Device rules shared by every framework: reasons, by (policy, device).
PRECISION_DEVICE_RULES = {
    ("tf32", "cpu"): "TF32 is an NVIDIA tensor-core format; on a CPU it would be FP32 under another name",
    ("fp16", "cpu"): "fp16 mixed precision is a GPU policy: CPU kernels emulate float16 (slower than fp32)",
}
_NO_MIXED = "no mixed-precision training API"
PRECISION_UNSUPPORTED: dict[tuple[str, str], dict[str, str]] = {
    ("jax", "flax"): {"fp16": "optax has no loss scaling; dlbench does not hand-roll one"},
    ("mxnet", "gluon"): {
        "tf32": "MXNet 1.9 has no switch that turns TF32 on for its cuBLAS matmuls",
        "bf16": "MXNet 1.9's AMP converts symbolic graphs to bfloat16 only with oneDNN builds "
                "of its hybridized ops; the Gluon model's Adam update is not covered",
        "fp16": "MXNet 1.9's AMP is not used by dlbench's Gluon trainer (its loss scaler "
                "needs amp.init_trainer before hybridization)"},
    ("chainer", "eager"): {"tf32": "Chainer 7 (CuPy) has no TF32 switch",
                           "bf16": f"Chainer has no bfloat16 dtype ({_NO_MIXED} for it)",
                           "fp16": "Chainer's mixed16 needs CuPy; the image is CPU-only"},
    ("theano", "graph"): {"tf32": "Theano has no TF32 switch",
                          "bf16": f"Theano has no bfloat16 dtype ({_NO_MIXED})",
                          "fp16": f"Theano's float16 is experimental, {_NO_MIXED}"},
}


# What a framework/API cannot do on one device only: (policy, device) -> reason.
PRECISION_UNSUPPORTED_ON: dict[tuple[str, str], dict[tuple[str, str], str]] = {
    ("paddle", "dygraph"): {("bf16", "cpu"): "Paddle 3.3's auto_cast does nothing on the CPU: "
                                             "the run would be fp32 under a bf16 label"},
}


def precision_problem(framework: str, api: str, precision: str, device: str) -> str | None:
    """Why framework/api cannot run `precision` on `device`, or None when it can."""
    if precision not in PRECISION_POLICIES:
        return f"unknown precision {precision!r} (known: {', '.join(PRECISION_POLICIES)})"
    rule = PRECISION_DEVICE_RULES.get((precision, device))
    if rule:
        return rule
    return (PRECISION_UNSUPPORTED.get((framework, api), {}).get(precision)
            or PRECISION_UNSUPPORTED_ON.get((framework, api), {}).get((precision, device)))


# Data-parallel training (a suite's `parallel:`): each framework/API's own standard mechanism,
# and how its workers are started on a node ("torchrun", or "dlbench": workloads/launcher.py
# starts one process per worker). A framework/API not listed gets the outcome `unsupported`
# with the reason below.
PARALLEL: dict[tuple[str, str], dict[str, str]] = {
    ("pytorch", "eager"): {"launcher": "torchrun",
                           "mechanism": "DistributedDataParallel (gloo on CPU, NCCL on GPU)"},
    ("tensorflow", "eager"): {"launcher": "dlbench", "mechanism": "tf.distribute.MultiWorkerMirroredStrategy"},
    ("tensorflow", "graph"): {"launcher": "dlbench", "mechanism": "tf.distribute.MultiWorkerMirroredStrategy"},
    ("jax", "flax"): {"launcher": "dlbench", "mechanism": "jax.distributed + a data-sharded jit"},
    ("mxnet", "gluon"): {"launcher": "dlbench",
                         "mechanism": "kvstore dist_sync (ps-lite scheduler and servers started by the workers)"},
    ("paddle", "dygraph"): {"launcher": "dlbench",
                            "mechanism": "paddle.distributed.init_parallel_env + paddle.DataParallel "
                                         "(gradients all-reduced after backward; gloo on CPU, NCCL on GPU)"},
    ("keras", "jax"): {"launcher": "dlbench",
                       "mechanism": "keras.distribution.DataParallel on jax.distributed (model.fit)"},
}
PARALLEL_UNSUPPORTED: dict[tuple[str, str], str] = {
    ("chainer", "eager"): "Chainer's data parallelism (ChainerMN) needs MPI and CuPy/NCCL; the "
                          "image is CPU-only without MPI, and Chainer is in maintenance mode",
    ("theano", "graph"): "Theano has no data-parallel training API (its multi-GPU 'platoon' "
                         "was an unmaintained add-on, gone with Theano 1.0)",
    ("tensorflow", "keras"): "Keras 3.15's model.fit fails under MultiWorkerMirroredStrategy before "
                             "its first step (its symbolic build reduces the (x, y) batch of "
                             "PerReplica values, which MWMS rejects: keras-team/keras#20585); "
                             "use tensorflow/eager or tensorflow/graph",
    ("tensorflow-legacy", "estimator"): "not built: the legacy image reproduces single-process "
                                        "TF 2.15 numbers; tf.estimator's RunConfig(train_distribute) "
                                        "would need its own input_fn sharding",
    ("keras", "torch"): "Keras 3's distribution API is implemented for the JAX backend only, and "
                        "its torch trainer (model.fit) has no DistributedDataParallel integration",
    ("keras", "tensorflow"): "Keras 3's distribution API is implemented for the JAX backend only; "
                             "model.fit under MultiWorkerMirroredStrategy with per-worker rows "
                             "needs a distributed tf.data pipeline (not built)",
}


def parallel_problem(framework: str, api: str, world_size: int) -> str | None:
    """Why framework/api cannot train data-parallel on world_size workers, or None."""
    pair = (framework, api)
    if world_size <= 1 or pair in PARALLEL:
        return None
    return PARALLEL_UNSUPPORTED.get(pair, "no data-parallel implementation in dlbench")
