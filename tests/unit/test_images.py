"""docker/images.yaml, the lock files and the Dockerfiles agree with each other and
with workloads/registry.py; bad input gives a one-line error naming the field."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from contract.registry import IMPLEMENTATIONS
from orchestrator import images
from orchestrator.errors import DlbenchError
from orchestrator.fileio import sha256_file
from orchestrator.images import context
from orchestrator.images.spec import version_key
from orchestrator.paths import DOCKER_DIR, REPO_ROOT

SPECS = images.load_images()
FLAVOURS = [(fw, fl) for fw, spec in SPECS.items() for fl in spec.flavours]

# The package each framework's lock must pin at framework_version (per flavour).
FRAMEWORK_PACKAGE = {
    ("pytorch", "cpu"): "torch", ("pytorch", "cuda"): "torch",
    ("tensorflow", "cpu"): "tensorflow-cpu", ("tensorflow", "cuda"): "tensorflow",
    ("tensorflow-legacy", "cpu"): "tensorflow-cpu", ("tensorflow-legacy", "cuda"): "tensorflow",
    ("keras", "cpu"): "keras", ("keras", "cuda"): "keras",
    ("jax", "cpu"): "jax", ("jax", "cuda"): "jax",
    ("mxnet", "cpu"): "mxnet", ("mxnet", "cuda"): "mxnet-cu112",
    ("chainer", "cpu"): "chainer",
    ("theano", "cpu"): "theano",
    ("paddle", "cpu"): "paddlepaddle", ("paddle", "cuda"): "paddlepaddle-gpu",
}


def test_images_yaml_loads():
    assert set(SPECS) == {"pytorch", "tensorflow", "tensorflow-legacy", "keras", "jax", "mxnet",
                          "chainer", "theano", "paddle"}
    for spec in SPECS.values():
        assert spec.python == "3.11"
        assert "cpu" in spec.flavours
        # every image has a CUDA flavour, or says why it cannot
        assert set(spec.flavours) | set(spec.unavailable) == {"cpu", "cuda"}
        for flavour in spec.flavours.values():
            assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", flavour.base)
        if "cuda" in spec.flavours:
            assert spec.flavours["cuda"].cuda and spec.flavours["cuda"].cudnn
        else:
            assert len(spec.unavailable["cuda"]) > 20


def test_an_unavailable_flavour_says_why():
    with pytest.raises(DlbenchError, match="chainer has no cuda image: .*CuPy"):
        images.get_spec("chainer", "cuda")


def test_source_builds_pin_their_build_tools():
    for spec in SPECS.values():
        for flavour in spec.flavours.values():
            pins = {r.name for r in images.parse_lock(flavour.lock)}
            assert set(spec.source_builds) <= pins
            if spec.source_builds:
                text = images.build_tools_requirements(flavour.lock)
                assert text.startswith("setuptools==") and "--hash=sha256:" in text


def test_apis_match_the_workload_registry():
    in_yaml = {(fw, api) for fw, spec in SPECS.items() for api in spec.apis}
    assert in_yaml == set(IMPLEMENTATIONS)


def test_image_tag():
    assert images.image_tag("pytorch", "cpu") == "dlbench/pytorch:2.13.0-cpu"
    assert images.image_tag("tensorflow", "cuda") == "dlbench/tensorflow:2.21.0-cuda"
    with pytest.raises(DlbenchError, match="known: chainer, jax, keras, mxnet, paddle, pytorch"):
        images.image_tag("caffe", "cpu")
    with pytest.raises(DlbenchError, match="flavours has no 'rocm'"):
        images.image_tag("pytorch", "rocm")


@pytest.mark.parametrize("framework,flavour", FLAVOURS)
def test_lock_hashes_every_requirement_and_pins_the_framework(framework, flavour):
    spec = SPECS[framework]
    lock = spec.flavours[flavour].lock
    reqs = images.parse_lock(lock)
    assert reqs, lock
    unhashed = [r.name for r in reqs if not r.hashes]
    assert not unhashed, f"{lock}: no --hash for {unhashed}"
    pins = {r.name: r.version for r in reqs}
    package = FRAMEWORK_PACKAGE[(framework, flavour)]
    assert pins[package].split("+")[0] == spec.framework_version
    assert "numpy" in pins
    assert "jsonschema" in pins
    # every requirement line of the file was parsed (none unpinned or skipped)
    text = lock.read_text()
    assert len(re.findall(r"^[A-Za-z0-9][^\s#]*==", text, re.MULTILINE)) == len(reqs)


def test_lock_specifics():
    def pins(fw, fl):
        return {r.name: r.version for r in images.parse_lock(SPECS[fw].flavours[fl].lock)}

    assert pins("pytorch", "cpu")["torch"] == "2.13.0+cpu"
    assert not any(name.startswith("nvidia") for name in pins("pytorch", "cpu"))
    assert any(name.startswith("nvidia-cudnn") for name in pins("pytorch", "cuda"))
    assert pins("tensorflow", "cpu")["keras"] == pins("tensorflow", "cuda")["keras"] == "3.15.1"
    assert any(name.startswith("nvidia-cudnn") for name in pins("tensorflow", "cuda"))
    assert "tensorflow" not in pins("tensorflow", "cpu")


@pytest.mark.parametrize("framework,flavour", [k for k in FLAVOURS if k[1] == "cuda"])
def test_cuda_versions_recorded_match_the_lock(framework, flavour):
    fl = SPECS[framework].flavours[flavour]
    pins = {r.name: r.version for r in images.parse_lock(fl.lock)}
    cudnn = next(v for n, v in pins.items() if n.startswith("nvidia-cudnn"))
    assert cudnn.startswith(fl.cudnn + "."), (cudnn, fl.cudnn)
    runtime = next(v for n, v in pins.items() if n.startswith("nvidia-cuda-runtime"))
    assert runtime.startswith(fl.cuda.split(".")[0] + "."), (runtime, fl.cuda)


@pytest.mark.parametrize("framework", [fw for fw, fl in FLAVOURS if fl == "cuda"])
def test_cuda_images_record_their_gpu_support(framework):
    """Every cuda image names the driver branch and GPU architectures it needs (gpu_compat
    refuses a host outside them), and passes them to its build."""
    fl = SPECS[framework].flavours["cuda"]
    assert re.fullmatch(r"[0-9]{3}", fl.min_driver or "")
    assert fl.cuda_arches and all(re.fullmatch(r"[0-9]+\.[0-9]", a) for a in fl.cuda_arches)
    assert fl.ptx is None or version_key(fl.ptx) >= version_key(fl.cuda_arches[0])
    args = context.build_args(SPECS[framework], fl, fl.base, "0" * 64)
    assert {k: args[k] for k in ("CUDA_VERSION", "CUDNN_VERSION", "MIN_DRIVER", "CUDA_ARCHES", "CUDA_PTX")} == {
        "CUDA_VERSION": fl.cuda, "CUDNN_VERSION": fl.cudnn, "MIN_DRIVER": fl.min_driver,
        "CUDA_ARCHES": ",".join(fl.cuda_arches), "CUDA_PTX": fl.ptx or "none"}


def test_cpu_images_get_no_cuda_build_args():
    for framework, flavour in FLAVOURS:
        if flavour == "cpu":
            fl = SPECS[framework].flavours["cpu"]
            args = context.build_args(SPECS[framework], fl, fl.base, "0" * 64)
            assert not {"CUDA_VERSION", "MIN_DRIVER", "CUDA_ARCHES"} & set(args), framework
            assert fl.cuda is None and fl.min_driver is None and fl.cuda_arches == () and fl.ptx is None


def test_the_dockerfile_makes_the_toolkit_refuse_an_old_driver():
    """Only a cuda image carries NVIDIA_REQUIRE_CUDA (the last stage is picked by FLAVOUR), with
    its two constraints ANDed by a comma: a space would OR them, and refuse nothing."""
    text = (DOCKER_DIR / "Dockerfile").read_text()
    cuda_stage = text[text.index("FROM runtime AS runtime-cuda"):text.index("FROM runtime AS runtime-cpu")]
    assert 'ENV NVIDIA_REQUIRE_CUDA="cuda>=${CUDA_VERSION},driver>=${MIN_DRIVER}"' in cuda_stage
    for label in ("org.dlbench.cuda=", "org.dlbench.cudnn=", "org.dlbench.min-driver=",
                  "org.dlbench.cuda-arches=", "org.dlbench.ptx="):
        assert label in cuda_stage
    assert text.count("NVIDIA_REQUIRE_CUDA") == 1
    assert text.rstrip().endswith("FROM runtime-${FLAVOUR}")
    assert re.search(r"^ARG FLAVOUR=cpu$", text[:text.index("FROM ")], re.MULTILINE)  # global: FROM sees it


def test_one_dockerfile_builds_every_framework():
    text = (DOCKER_DIR / "Dockerfile").read_text()
    assert not re.search(r"^RUN\s+--mount", text, re.MULTILINE)  # classic builder builds it
    bases = {fl.base for spec in SPECS.values() for fl in spec.flavours.values()}
    assert len(bases) == 1 and f"ARG BASE_IMAGE={bases.pop()}\n" in text
    assert "docker/${FRAMEWORK}/requirements-${FLAVOUR}.txt" in text
    assert "DLBENCH_FRAMEWORK=${FRAMEWORK} DLBENCH_API=${DEFAULT_API}" in text
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert 'ENTRYPOINT ["python", "-m", "workloads"]' in text
    assert not list(DOCKER_DIR.glob("*/Dockerfile"))  # no per-framework copies to drift apart
    for spec in SPECS.values():
        assert spec.dockerfile == DOCKER_DIR / "Dockerfile"


def test_every_lock_has_its_input():
    for fw, fl in FLAVOURS:
        lock = SPECS[fw].flavours[fl].lock
        assert lock.with_suffix(".in").is_file()


def test_the_package_has_no_import_cycle():
    """Each module imports only modules that do not import it back, and none imports the
    package (its __init__ only re-exports)."""
    import grimp

    graph = grimp.build_graph("orchestrator", cache_dir=None)
    modules = graph.find_descendants("orchestrator.images")
    for module in modules:
        imported = graph.find_modules_directly_imported_by(module)
        assert "orchestrator.images" not in imported, module
        for other in imported & modules:
            assert not graph.chain_exists(importer=other, imported=module), (module, other)


# -- bad images.yaml -----------------------------------------------------------

def _write(tmp_path: Path, data) -> Path:
    """A copy of images.yaml (with its lock files) modified by `data(dict)`."""
    raw = yaml.safe_load(images.IMAGES_FILE.read_text())
    data(raw)
    for fw in SPECS:
        (tmp_path / fw).mkdir(exist_ok=True)
        for fl in SPECS[fw].flavours.values():
            (tmp_path / fw / fl.lock.name).write_text("x==1 --hash=sha256:" + "0" * 64 + "\n")
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _set(*keys, value=None, delete=False):
    def apply(raw):
        node = raw
        for key in keys[:-1]:
            node = node[key]
        if delete:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return apply


@pytest.mark.parametrize("change,field", [
    (_set("schema_version", value=2), "schema_version"),
    (_set("images", "pytorch", "framework_version", value=2.13), "images.pytorch.framework_version"),
    (_set("images", "pytorch", "framework_version", delete=True), "images.pytorch.framework_version"),
    (_set("images", "pytorch", "apis", value=[]), "images.pytorch.apis"),
    (_set("images", "pytorch", "pyton", value="3.11"), "images.pytorch.pyton"),
    (_set("images", "pytorch", "python", value="3"), "images.pytorch.python"),
    (_set("images", "tensorflow", "flavours", "cpu", "base", value="python:3.11-slim"),
     "images.tensorflow.flavours.cpu.base"),
    (_set("images", "tensorflow", "flavours", "rocm", value={"base": "x", "lock": "y.txt"}),
     "images.tensorflow.flavours.rocm"),
    (_set("images", "tensorflow", "flavours", "cuda", "cudnn", delete=True),
     "images.tensorflow.flavours.cuda.cudnn"),
    (_set("images", "tensorflow", "flavours", "cpu", "lock", value="missing.txt"),
     "images.tensorflow.flavours.cpu.lock"),
    (_set("images", value=[]), "images"),
    (_set("images", "pytorch", "system_packages", value="g++"), "images.pytorch.system_packages"),
    (_set("images", "theano", "source_builds", value=["theano; rm -rf /"]),
     "images.theano.source_builds"),
    (_set("images", "theano", "compile_cache", value="yes"), "images.theano.compile_cache"),
    (_set("images", "chainer", "flavours", "cuda", value={"unavailable": 3}),
     "images.chainer.flavours.cuda.unavailable"),
    (_set("images", "chainer", "flavours", value={"cuda": {"unavailable": "no wheels"}}),
     "images.chainer.flavours"),
    (_set("images", "pytorch", "flavours", "cuda", "min_driver", delete=True),
     "images.pytorch.flavours.cuda.min_driver"),
    (_set("images", "pytorch", "flavours", "cuda", "min_driver", value="580.x"),
     "images.pytorch.flavours.cuda.min_driver"),
    (_set("images", "pytorch", "flavours", "cuda", "cuda", value="13"), "images.pytorch.flavours.cuda.cuda"),
    (_set("images", "mxnet", "flavours", "cuda", "cuda_arches", delete=True),
     "images.mxnet.flavours.cuda.cuda_arches"),
    (_set("images", "mxnet", "flavours", "cuda", "cuda_arches", value=[8.0, 8.6]),
     "images.mxnet.flavours.cuda.cuda_arches"),
    (_set("images", "mxnet", "flavours", "cuda", "cuda_arches", value=["8.6", "8.0"]),
     "images.mxnet.flavours.cuda.cuda_arches"),
    (_set("images", "mxnet", "flavours", "cuda", "ptx", value=True), "images.mxnet.flavours.cuda.ptx"),
    (_set("images", "mxnet", "flavours", "cuda", "ptx", delete=True), "images.mxnet.flavours.cuda.ptx"),
    (_set("images", "mxnet", "flavours", "cpu", "cuda_arches", value=["8.0"]),
     "images.mxnet.flavours.cpu.cuda_arches"),
])
def test_bad_images_yaml_names_the_field(tmp_path, change, field):
    path = _write(tmp_path, change)
    with pytest.raises(DlbenchError) as err:
        images.load_images(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {field}:"), message


def test_images_yaml_that_is_not_yaml(tmp_path):
    path = tmp_path / "images.yaml"
    path.write_text("images: [unclosed\n")
    with pytest.raises(DlbenchError, match=r"images.yaml: not valid YAML at line \d"):
        images.load_images(path)


# -- locks, wheelhouse, options, input hash -------------------------------------

def test_parse_lock_and_select_wheels(tmp_path):
    wheel = tmp_path / "wh" / "Foo_Bar-1.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"wheel")
    other = tmp_path / "wh" / "foo_bar-1.0+cpu-cp311-cp311-win_amd64.whl"
    other.write_bytes(b"other bytes")
    (tmp_path / "wh" / "unrelated-2.0-py3-none-any.whl").write_bytes(b"x")
    lock = tmp_path / "requirements-cpu.txt"
    lock.write_text(
        "# header\n"
        f"foo-bar==1.0+cpu \\\n    --hash=sha256:{sha256_file(wheel)}\n    # via -r x.in\n"
        "numpy==2.4.6 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64 + "\n")
    reqs = images.parse_lock(lock)
    assert [(r.name, r.version, len(r.hashes)) for r in reqs] == [("foo-bar", "1.0+cpu", 1),
                                                                  ("numpy", "2.4.6", 2)]
    assert images.select_wheels(lock, tmp_path / "wh") == [wheel]


def test_unpinned_lock_is_an_error(tmp_path):
    lock = tmp_path / "requirements-cpu.txt"
    lock.write_text("numpy>=2\n")
    with pytest.raises(DlbenchError, match="not pinned"):
        images.parse_lock(lock)


def test_build_options_from_env(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("---")
    env = {"DLBENCH_BASE_IMAGE": "local/bookworm-python:3.11", "DLBENCH_EXTRA_CA": str(ca),
           "DLBENCH_WHEELHOUSE": str(tmp_path), "DLBENCH_PIP_INDEX_URL": "https://mirror.example/simple"}
    opts = images.BuildOptions.from_env(env, host_pip=False)
    assert opts.base_image == "local/bookworm-python:3.11"
    assert opts.extra_ca == ca and opts.wheelhouse == tmp_path
    assert opts.pip_index_url == "https://mirror.example/simple" and opts.pip_extra_index_url is None
    assert opts.network_mode == "host" and not opts.no_cache
    assert images.BuildOptions.from_env({}, host_pip=False) == images.BuildOptions()
    with pytest.raises(DlbenchError, match="DLBENCH_EXTRA_CA"):
        images.BuildOptions.from_env({"DLBENCH_EXTRA_CA": str(tmp_path / "nope")}, host_pip=False)
    with pytest.raises(DlbenchError, match="DLBENCH_WHEELHOUSE"):
        images.BuildOptions.from_env({"DLBENCH_WHEELHOUSE": str(ca)}, host_pip=False)


def test_host_pip_settings_from_environment(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("---")
    env = {"PIP_FIND_LINKS": f"https://example.invalid/links file://{tmp_path}", "PIP_CERT": str(ca)}
    assert images.host_pip_settings(env) == (tmp_path, ca)
    opts = images.BuildOptions.from_env(env)
    assert opts.wheelhouse == tmp_path and opts.extra_ca == ca and len(opts.notes) == 2
    assert images.BuildOptions.from_env({**env, "DLBENCH_BUILD_HOST_PIP": "0"}).wheelhouse is None


def test_local_version_pin_needs_a_wheel_source(tmp_path):
    fl = SPECS["pytorch"].flavours["cpu"]
    empty = tmp_path / "wheelhouse"
    empty.mkdir()
    opts = images.BuildOptions(wheelhouse=empty)
    with pytest.raises(DlbenchError, match=r"torch==2\.13\.0\+cpu is not on PyPI.*DLBENCH_WHEELHOUSE"):
        context.write_build_inputs(fl, opts, tmp_path / "build-inputs")
    opts = images.BuildOptions(pip_extra_index_url="https://download.pytorch.org/whl/cpu")
    notes = context.write_build_inputs(fl, opts, tmp_path / "build-inputs")
    assert notes == ["pip index settings"]
    assert (tmp_path / "build-inputs" / "pip.env").read_text() == \
        "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu\n"


def test_inputs_hash_covers_context_not_transport(tmp_path, monkeypatch):
    spec, fl = images.get_spec("tensorflow", "cpu")
    files = context.context_files(spec, fl)
    assert "workloads/harness.py" in files and "docker/Dockerfile" in files
    assert "docker/common/install-requirements.sh" in files
    assert not any("__pycache__" in rel or rel.endswith(".pyc") for rel in files)
    args = context.build_args(spec, fl, fl.base, sha256_file(fl.lock))
    first = images.compute_inputs_sha256(files, args, "sha256:base")
    assert first == images.compute_inputs_sha256(dict(reversed(files.items())), args, "sha256:base")
    assert first != images.compute_inputs_sha256(files, args, "sha256:other-base")
    assert first != images.compute_inputs_sha256(files, {**args, "FLAVOUR": "cuda"}, "sha256:base")
    changed = tmp_path / "harness.py"
    changed.write_text(files["workloads/harness.py"].read_text() + "\n# edit\n")
    assert first != images.compute_inputs_sha256({**files, "workloads/harness.py": changed},
                                                  args, "sha256:base")


# -- a build by hand: dlbench images build --print --------------------------------

def print_command(capsys, image: str) -> tuple[list[str], str]:
    from orchestrator.cli import main

    assert main(["images", "build", "--print", image]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1, out            # one line: `bash -c "$(dlbench ... --print X)"`
    return shlex.split(out), err


def build_arg_values(argv: list[str]) -> dict[str, str]:
    values = [argv[i + 1] for i, word in enumerate(argv) if word == "--build-arg"]
    return dict(v.split("=", 1) for v in values if "=" in v)


@pytest.mark.parametrize("base", [None, "local/bookworm-python:3.11"])
@pytest.mark.parametrize("framework,flavour", FLAVOURS)
def test_printed_build_command_has_the_sdk_build_args(framework, flavour, base, capsys, monkeypatch):
    """The by-hand command passes exactly what ensure_image passes (context.build_args), so
    the two cannot drift; it runs from the repository root."""
    monkeypatch.setenv("DLBENCH_BUILD_HOST_PIP", "0")
    monkeypatch.delenv("DLBENCH_BUILD_NETWORK", raising=False)
    for name in context.PROXY_ARGS:
        monkeypatch.delenv(name, raising=False)
    if base:
        monkeypatch.setenv("DLBENCH_BASE_IMAGE", base)
    else:
        monkeypatch.delenv("DLBENCH_BASE_IMAGE", raising=False)
    argv, _ = print_command(capsys, f"{framework}/{flavour}")
    spec, fl = images.get_spec(framework, flavour)
    expected = context.build_args(spec, fl, base or fl.base, sha256_file(fl.lock))
    assert build_arg_values(argv) == expected
    assert argv.count("--build-arg") == len(expected)
    assert argv[:2] == ["docker", "build"] and argv[-1] == "."
    assert argv[argv.index("-f") + 1] == "docker/Dockerfile" and (REPO_ROOT / "docker/Dockerfile").is_file()
    assert argv[argv.index("-t") + 1] == images.image_tag(framework, flavour)
    assert argv[argv.index("--network") + 1] == "host"


def test_printed_pytorch_command_installs_the_compiler(capsys, monkeypatch):
    """What the Dockerfile's old by-hand example lacked: torch.compile needs g++ on CPU."""
    monkeypatch.setenv("DLBENCH_BUILD_HOST_PIP", "0")
    argv, _ = print_command(capsys, "pytorch")           # flavour: --flavour's default, cpu
    assert build_arg_values(argv)["SYSTEM_PACKAGES"] == "g++ libpython3-dev"
    assert "dlbench images build --print pytorch/cpu" in images.DOCKERFILE.read_text()


def test_printed_command_names_proxies_without_their_values(capsys, monkeypatch):
    monkeypatch.setenv("DLBENCH_BUILD_HOST_PIP", "0")
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.example:3128")
    argv, _ = print_command(capsys, "mxnet/cpu")
    assert argv[argv.index("HTTPS_PROXY") - 1] == "--build-arg"
    assert not any("secret" in word for word in argv)


def test_by_hand_notes_say_what_build_inputs_lack(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("---")
    inputs = tmp_path / "build-inputs"
    options = images.BuildOptions(extra_ca=ca)
    notes = images.by_hand_notes("pytorch", "cpu", options, inputs)
    assert len(notes) == 2
    assert "torch==2.13.0+cpu" in notes[0] and "build-inputs/wheelhouse/" in notes[0]
    assert str(ca) in notes[1] and "build-inputs/ca.crt" in notes[1]
    inputs.mkdir()
    (inputs / "pip.env").write_text("PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu\n")
    (inputs / "ca.crt").write_text("---")
    assert images.by_hand_notes("pytorch", "cpu", options, inputs) == []
    assert images.by_hand_notes("mxnet", "cpu", images.BuildOptions(), tmp_path / "none") == []


def test_print_needs_no_engine_and_refuses_bad_input():
    from tests.integration.helpers import dlbench

    proc = dlbench("images", "build", "--print", "chainer/cpu",
                   env={"DOCKER_HOST": "unix:///nonexistent/docker.sock", "DLBENCH_BUILD_HOST_PIP": "0"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("docker build ") and "dlbench/chainer:7.8.1-cpu" in proc.stdout
    for argv, expected in ((["caffe"], "no image for framework 'caffe'"),
                           (["pytorch/rocm"], "flavours has no 'rocm'"),
                           (["chainer/cuda"], "chainer has no cuda image"),
                           (["pytorch", "tensorflow"], "--print shows one image's build command")):
        proc = dlbench("images", "build", "--print", *argv)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        message = proc.stderr.strip()
        assert "\n" not in message and message.startswith("dlbench: error: ") and expected in message
