"""What the JAX-based files share: XLA's CPU threads and the CUDA libraries JAX loaded.

XLA has no thread-count option (XLA_FLAGS has none that sets a pool size): its CPU client
sizes its thread pool from the CPUs the process may run on, read once when the client
starts, i.e. at the first JAX operation."""
import importlib
import os


def limit_xla_cpu_threads(intra_op):
    """Pin this thread (and so the threads XLA starts from it) to `intra_op` of its CPUs,
    if given, before XLA starts; return the size of the pool XLA will use."""
    if intra_op:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:intra_op])
    return len(os.sched_getaffinity(0))


def cuda_libraries():
    """CUDA runtime and cuDNN versions as JAX's CUDA plugin reports them (e.g. 12090, 90800);
    jax._src.lib is private, and its cuda_versions is None without the plugin."""
    versions = getattr(importlib.import_module("jax._src.lib"), "cuda_versions", None)
    return {"cuda": versions.cuda_runtime_get_version(), "cudnn": versions.cudnn_get_version()} if versions else {}
