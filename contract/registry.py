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
IMPORT_ENVIRONMENT = {
    ("keras", "jax"): {"KERAS_BACKEND": "jax"},
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
