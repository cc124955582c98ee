#!/bin/sh
# Build stage only: install one hash-locked requirements file into the venv /opt/venv.
#
#   sh install-requirements.sh /build/requirements-cpu.txt
#
# Optional build inputs next to the lock (orchestrator/images/context.py puts them there from
# build-inputs/; none of them reaches the final image, which copies only /opt/venv):
#   wheelhouse/  extra wheels (air-gapped builds, local-version wheels such as torch+cpu)
#   ca.crt       an extra CA certificate (TLS-intercepting proxies), added to the base's bundle
#   pip.env      PIP_INDEX_URL= / PIP_EXTRA_INDEX_URL= lines (a mirror, PyTorch's CPU index)
# Every file is checked against the lock's sha256, whatever index or wheelhouse served it.
set -eu

lock="$1"
inputs="$(dirname "$lock")"

python3 -m venv /opt/venv

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off PIP_ROOT_USER_ACTION=ignore
if [ -f "$inputs/pip.env" ]; then
    set -a
    . "$inputs/pip.env"
    set +a
fi
if [ -d "$inputs/wheelhouse" ]; then
    export PIP_FIND_LINKS="$inputs/wheelhouse"
fi
if [ -f "$inputs/ca.crt" ]; then
    bundle=/tmp/dlbench-ca-bundle.pem
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cat /etc/ssl/certs/ca-certificates.crt "$inputs/ca.crt" > "$bundle"
    else
        cp "$inputs/ca.crt" "$bundle"
    fi
    export PIP_CERT="$bundle"
fi

# SOURCE_BUILDS (comma-separated, from images.yaml source_builds): locked sdists to build
# here. They build without isolation, against the setuptools/wheel pinned in the same lock,
# so those two go in first; everything else stays wheels only.
source_args=""
if [ -n "${SOURCE_BUILDS:-}" ]; then
    /opt/venv/bin/python - "$lock" /tmp/build-tools.txt <<'PY'
import re, sys
blocks = re.split(r"\n(?=[A-Za-z0-9])", open(sys.argv[1]).read())
tools = [b for b in blocks if re.match(r"(setuptools|wheel)==", b)]
if not tools:
    sys.exit("source_builds need setuptools (and wheel) pinned in " + sys.argv[1])
open(sys.argv[2], "w").write("\n".join(tools) + "\n")
PY
    /opt/venv/bin/python -m pip install --no-cache-dir --require-hashes --no-deps \
        --only-binary=:all: -r /tmp/build-tools.txt
    # --use-pep517: a real wheel through setuptools' PEP 517 backend on every pip version
    # (older pips fall back to the deprecated `setup.py install` otherwise)
    source_args="--no-binary=${SOURCE_BUILDS} --no-build-isolation --use-pep517"
fi

# shellcheck disable=SC2086 # source_args is a list of options
/opt/venv/bin/python -m pip install --no-cache-dir --require-hashes --no-deps \
    --only-binary=:all: $source_args -r "$lock"
/opt/venv/bin/python -m pip check
rm -f /tmp/dlbench-ca-bundle.pem
