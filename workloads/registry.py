"""Which module implements each framework/API. Pure data: importing it loads no framework.

A new framework/API: add its file next to this one and a line here, and list the
API under its image in docker/images.yaml (a test checks the two agree).
"""
IMPLEMENTATIONS = {
    ("pytorch", "eager"): "workloads.pytorch_eager",
    ("tensorflow", "keras"): "workloads.tensorflow_keras",
}
