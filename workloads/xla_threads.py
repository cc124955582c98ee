"""XLA's CPU threads, for the JAX-based files. XLA has no thread-count option (XLA_FLAGS
has none that sets a pool size): its CPU client sizes its thread pool from the CPUs the
process may run on, read once when the client starts, i.e. at the first JAX operation."""
import os


def limit_xla_cpu_threads(intra_op):
    """Pin this thread (and so the threads XLA starts from it) to `intra_op` of its CPUs,
    if given, before XLA starts; return the size of the pool XLA will use."""
    if intra_op:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:intra_op])
    return len(os.sched_getaffinity(0))
