"""The README's "Running one image by hand" commands, run with bash as printed (plus the
small --train-limit/--test-limit the README says one may add), as an ordinary user in the
docker group and as root (with the substitution the README gives root): each run must
write its metrics, leave files that user may delete, and never need a world-writable
directory or run the workload as root.

The ordinary user is made here (useradd, in the docker group) when the tests run as root,
as CI does; run as an ordinary user, they run the user cases as that user.
"""
from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from orchestrator import images
from orchestrator.paths import REPO_ROOT

pytestmark = pytest.mark.docker

TEST_USER = "dlbench-byhand"
IMAGE_UID = 10001          # the images' own user
USER_FLAG = '--user "$(id -u):$(id -g)"'


def section(text: str, title: str = "## Running one image by hand") -> str:
    start = text.index(title + "\n")
    end = text.find("\n## ", start + len(title))
    return text[start:] if end < 0 else text[start:end]


README = section((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
QUICK = re.search(r"add `(--train-limit \d+ --test-limit \d+)` to any of these", README)
ROOT_RULE = re.search(r"As root, use `(--user [^`]+)` instead and `(chown [^`]+)` after the `mkdir`",
                      README.replace("\n", " "))


def commands(text: str) -> list[str]:
    """The shell commands of every ```sh block, continuation lines joined."""
    out: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for command in re.sub(r"\\\n\s*", "", block).splitlines():
            command = command.strip()
            if command and not command.startswith("#"):
                out.append(command)
    return out


COMMANDS = commands(README)
SETUP = [c for c in COMMANDS if not c.startswith("docker run")]
RUNS = [c for c in COMMANDS if c.startswith("docker run")]


def image_of(command: str) -> str:
    return re.search(r"\b(dlbench/[\w.-]+:[\w.+-]+)", command).group(1)


def script(command: str, as_root: bool) -> str:
    """What the README tells that caller to type, and the quick-try limits appended."""
    lines = ["set -eu", *SETUP]
    if as_root:
        user_flag, chown = ROOT_RULE.groups()
        lines.append(chown)
        command = command.replace(USER_FLAG, user_flag)
    return "\n".join([*lines, f"{command} {QUICK.group(1)}"])


def test_the_section_is_what_these_tests_run():
    assert QUICK, "the README no longer says which limits one may add for a quick try"
    assert ROOT_RULE, "the README no longer says what root types instead of --user \"$(id -u):$(id -g)\""
    assert ROOT_RULE.group(1) == f"--user {IMAGE_UID}:{IMAGE_UID}"
    assert SETUP == ["mkdir -p out"], SETUP
    assert len(RUNS) >= 4 and all(USER_FLAG in c for c in RUNS), RUNS
    assert "chmod" not in README and "777" not in README
    # the tags printed are the ones `dlbench images build` makes
    tags = {images.image_tag(framework, "cpu") for framework in images.load_images(check_locks=False)}
    assert {image_of(c) for c in RUNS} <= tags


@pytest.fixture(scope="session")
def ordinary_user():
    """(name, uid, gid) of an ordinary user in the docker group: made here when running as
    root (and removed after), else the user running the tests."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return me.pw_name, me.pw_uid, me.pw_gid
    try:
        grp.getgrnam("docker")
    except KeyError:
        pytest.fail("no docker group: the engine's socket must be reachable to the docker group")
    made = False
    try:
        pwd.getpwnam(TEST_USER)
        subprocess.run(["usermod", "-aG", "docker", TEST_USER], check=True)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--user-group", "--groups", "docker",
                        "--shell", "/bin/bash", TEST_USER], check=True)
        made = True
    entry = pwd.getpwnam(TEST_USER)
    yield TEST_USER, entry.pw_uid, entry.pw_gid
    if made:
        subprocess.run(["userdel", TEST_USER], check=False)


@pytest.fixture(scope="session")
def by_hand_images(docker_client, base_image):
    """The images the section names, built or reused (the equivalence test has built them
    all by then in CI): every command of the section runs, none is skipped."""
    for tag in sorted({image_of(c) for c in RUNS}):
        framework = tag.split("/")[1].split(":")[0]
        images.ensure_image(docker_client, framework, "cpu", images.BuildOptions.from_env(
            base_image=base_image))
        docker_client.images.get(tag)  # the README's tag is the one built
    return True


@pytest.fixture()
def workdir(ordinary_user):
    """A directory the caller may write (pytest's own tmp dirs are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="dlbench-byhand-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_caller(who, uid, workdir: Path, text: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(workdir),
           "LANG": "C.UTF-8"}
    if os.environ.get("DOCKER_HOST"):
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    argv = ["bash", "-c", text]
    if who is not None and uid != os.geteuid():
        argv = ["runuser", "-u", who, "--", *argv]
    return subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("caller", ["user", "root"])
@pytest.mark.parametrize("index", range(len(RUNS)),
                         ids=[f"{i + 1}-{image_of(c).split('/')[1]}" for i, c in enumerate(RUNS)])
def test_by_hand_command_leaves_files_the_caller_can_delete(caller, index, ordinary_user, by_hand_images,
                                                            workdir):
    command = RUNS[index]
    assert "/usr/share/datasets/fashion-mnist" not in command or \
        Path("/usr/share/datasets/fashion-mnist").is_dir(), "needs Debian's dataset-fashion-mnist (.ci/run installs it)"
    assert os.geteuid() == 0, "runs as root, to create the unprivileged caller (as CI does)"
    as_root = caller == "root"
    name, uid, gid = ordinary_user
    who, owner = (None, (IMAGE_UID, IMAGE_UID)) if as_root else (name, (uid, gid))
    if not as_root:
        os.chown(workdir, uid, gid)

    proc = as_caller(who, uid, workdir, script(command, as_root))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = workdir / "out"
    assert not out.stat().st_mode & stat.S_IWOTH, oct(out.stat().st_mode)
    metrics = list(out.glob("*/metrics.json"))
    assert len(metrics) == 1, list(out.rglob("*"))
    assert json.loads(metrics[0].read_text())["status"] == "ok"
    for path in [out, *out.rglob("*")]:
        assert (path.stat().st_uid, path.stat().st_gid) == owner, (path, path.stat())

    proc = as_caller(who, uid, workdir, "rm -rf out")
    assert proc.returncode == 0 and not out.exists(), proc.stderr
