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
