"""What the JAX-based files share: XLA's CPU threads, the CUDA libraries JAX loaded, and
the address gloo listens on in a multi-process (data-parallel) run.

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


def gloo_on_node_address(address):
    """Have gloo listen on this node's address from DLBENCH_HOSTS. JAX creates its gloo
    collectives without a hostname, and gloo then resolves gethostname(): that fails in a
    container without a network (EAI_AGAIN, gloo/transport/tcp/device.cc:99) and may give an
    address other nodes cannot reach (Debian's 127.0.1.1). jaxlib's make_gloo_tcp_collectives
    takes the hostname, but jax only calls it inside its CPU backend factory (private
    jax._src.xla_bridge, pinned jax version): re-register that factory with the collectives
    made our way. Must run before the CPU backend starts."""
    from jax._src import distributed, xla_bridge
    from jax._src.lib import _jax

    def make_cpu_client():
        return xla_bridge.make_cpu_client(collectives=_jax.make_gloo_tcp_collectives(
            distributed_client=distributed.global_state.client, hostname=address))
    xla_bridge.register_backend_factory("cpu", make_cpu_client, priority=0, fail_quietly=False)


def start_distributed(world, gpu):
    """jax.distributed.initialize for this worker (a workloads.parallel.World), before any JAX
    operation: on CPU with gloo collectives over TCP and one CPU device per process, on GPU
    with this worker's own GPU. Returns the settings for options["parallel"]."""
    import jax
    if not gpu:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.config.update("jax_num_cpu_devices", 1)
        gloo_on_node_address(world.hosts[world.node_rank])
    jax.distributed.initialize(coordinator_address=world.coordinator, num_processes=world.size,
                               process_id=world.rank,
                               local_device_ids=[world.local_rank] if gpu else None)
    if jax.process_index() != world.rank or jax.process_count() != world.size:
        raise RuntimeError(f"jax.distributed: process {jax.process_index()} of "
                           f"{jax.process_count()}, expected {world.rank} of {world.size}")
    return {"collective": "nccl" if gpu else jax.config.jax_cpu_collectives_implementation,
            "coordinator": world.coordinator, "processes": jax.process_count(),
            **({} if gpu else {"gloo_hostname": world.hosts[world.node_rank]})}
