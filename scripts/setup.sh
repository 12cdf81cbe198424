#!/usr/bin/env bash
# Set up rlhf-harness: a Python environment with torch, the harness, its built-in plugins and
# (with --dev) the test tools. Safe to run again: it does nothing when nothing changed.
#
# Environment:
#   PYTHON=/path/to/python   install into that interpreter's environment (e.g. a conda env that
#                            already has the torch you want) instead of creating ./.venv
#   TORCH_CPU_VERSION=X.Y.Z  the CPU-only torch release to install on a machine without an
#                            NVIDIA GPU (default 2.13.0)
#
# torch is chosen before anything else is installed, so that the dependency resolver never picks
# it: an environment that already has torch keeps it; a machine with an NVIDIA GPU gets PyPI's
# default (CUDA) build; any other machine gets the CPU-only build, from a local wheel directory
# or mirror when pip is configured with one, else from PyTorch's CPU index.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

if [ -n "${PYTHON:-}" ]; then
  py="$PYTHON"
else
  if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $(python3 --version)"
    python3 -m venv .venv
  fi
  py=.venv/bin/python
fi
pip() { "$py" -m pip --disable-pip-version-check "$@"; }

# One stamp per set of extras, each holding the hash of the pyproject.toml files it was installed
# from: the base set (torch, the harness, the plugins) and "dev" (the test tools on top). `make
# quickstart` needs the base set, `make test` both; neither undoes the other, so alternating the
# two reinstalls nothing until a pyproject.toml changes.
stamp_dir=$("$py" -c 'import sys; print(sys.prefix)')
want=$(cat pyproject.toml plugins/*/pyproject.toml | sha256sum | cut -d' ' -f1)
sets="base"
[ "$dev" = 1 ] && sets="base dev"
current() {  # every stamp of the sets asked for holds $want
  for set in $sets; do
    [ -f "$stamp_dir/.rlhf-harness-setup-$set" ] \
      && [ "$(cat "$stamp_dir/.rlhf-harness-setup-$set")" = "$want" ] || return 1
  done
}
if current && "$py" -c 'import torch, harness' 2>/dev/null; then
  echo "setup: up to date ($py; installed: $sets)"
  exit 0
fi

if "$py" -c 'import torch' 2>/dev/null; then
  echo "setup: keeping torch $("$py" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found: installing torch (CUDA build)"
  pip install torch
else
  v=${TORCH_CPU_VERSION:-2.13.0}
  echo "setup: no NVIDIA GPU: installing the CPU-only torch $v"
  pip install "torch==$v+cpu" 2>/dev/null \
    || pip install "torch==$v+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
fi

extras=""
[ "$dev" = 1 ] && extras="[dev]"
args=(-e ".$extras")
for p in plugins/*/; do
  [ -f "$p/pyproject.toml" ] && args+=(-e "$p")
done
echo "setup: installing rlhf-harness$extras and the built-in plugins"
pip install -q "${args[@]}" 2> >(grep -v "^WARNING: Location" >&2)
"$py" -c 'import torch, harness'
for set in $sets; do
  echo "$want" > "$stamp_dir/.rlhf-harness-setup-$set"
done
echo "setup: done ($py)"
