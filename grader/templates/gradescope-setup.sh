#!/usr/bin/env bash
# The Gradescope autograder of @@assignment@@, made with grader @@version@@ (`grade gradescope`).
# Gradescope runs this once, as root, when it builds the autograder's image (Ubuntu, 22.04 or newer):
# Python's venv, bubblewrap (the sandbox of student code), the CPU build of the PyTorch the kit was
# made with, the packages of which the quick profile reads only a data file (`--no-deps`), then the
# kit in this folder (`pip install .`) with its other dependencies.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-venv python3-pip bubblewrap
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "the kit needs Python 3.10 or newer: choose a newer base image in the autograder's settings" >&2
    exit 1
fi
python3 -m venv .venv
.venv/bin/pip install --upgrade pip
.venv/bin/pip install @@torch@@ --index-url https://download.pytorch.org/whl/cpu
@@data_install@@
.venv/bin/pip install .
