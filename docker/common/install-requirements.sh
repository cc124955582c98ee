#!/bin/sh
# Build stage only: install one hash-locked requirements file into the venv /opt/venv.
#
#   sh install-requirements.sh /build/requirements-cpu.txt
#
# Optional build inputs next to the lock (orchestrator/images.py puts them there from
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

/opt/venv/bin/python -m pip install --no-cache-dir --require-hashes --no-deps \
    --only-binary=:all: -r "$lock"
/opt/venv/bin/python -m pip check
rm -f /tmp/dlbench-ca-bundle.pem
