#!/usr/bin/env bash
# Installs libtorch 2.13.0 (the version tch 0.26 needs) from the PyPI wheel `torch==2.13.0`
# into a Python virtual environment kept OUTSIDE the checkout, so every clone shares it, and
# links it into the checkout as `.libtorch` (which .cargo/config.toml hands to torch-sys).
#
# Idempotent: a second run only checks the version (a few seconds).
#
# Environment:
#   RNMT_CACHE   where the venv lives (default: ${XDG_CACHE_HOME:-$HOME/.cache}/rnmt)
#   LIBTORCH     use an existing libtorch 2.13.0 instead (a directory with lib/ and include/);
#                no libtorch is installed then.
#   RNMT_GLOO_INCLUDE  a directory with Gloo's headers (gloo/context.h), instead of the
#                system's /usr/include.
#
# Also Gloo's headers, which data-parallel training on CPU needs at build time and the
# libtorch wheel lacks (build.rs and csrc/distributed.cpp say why these fit): Debian's
# libgloo-dev, installed with apt-get when missing (as root, or through passwordless sudo).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
want=2.13.0
link="$here/.libtorch"

gloo_headers() {
    local dir=${RNMT_GLOO_INCLUDE:-/usr/include}
    [[ -f "$dir/gloo/context.h" ]] && return 0
    if [[ -n "${RNMT_GLOO_INCLUDE:-}" ]]; then
        echo "setup: RNMT_GLOO_INCLUDE=$RNMT_GLOO_INCLUDE has no gloo/context.h" >&2
        exit 1
    fi
    local sudo=()
    [[ $(id -u) -ne 0 ]] && sudo=(sudo -n)
    if command -v apt-get >/dev/null && { [[ ${#sudo[@]} -eq 0 ]] || sudo -n true 2>/dev/null; }; then
        echo "setup: installing libgloo-dev (Gloo's headers, for data-parallel training)"
        export DEBIAN_FRONTEND=noninteractive
        "${sudo[@]}" apt-get install -y -q --no-install-recommends libgloo-dev >/dev/null ||
            { "${sudo[@]}" apt-get update -q >/dev/null &&
              "${sudo[@]}" apt-get install -y -q --no-install-recommends libgloo-dev >/dev/null; }
    fi
    if [[ ! -f /usr/include/gloo/context.h ]]; then
        echo "setup: Gloo's headers are missing and could not be installed: rnmt-train builds without data-parallel training on CPU (install libgloo-dev, or set RNMT_GLOO_INCLUDE, and rebuild)" >&2
        if [[ "${CI:-}" == true ]]; then
            exit 1
        fi
    fi
}
gloo_headers

if [[ -n "${LIBTORCH:-}" ]]; then
    if [[ ! -f "$LIBTORCH/lib/libtorch_cpu.so" ]]; then
        echo "setup: LIBTORCH=$LIBTORCH has no lib/libtorch_cpu.so" >&2
        exit 1
    fi
    # LIBTORCH may be this checkout's own .libtorch (as scripts/test.sh users export it):
    # relinking it to itself would leave a link that points at itself.
    if [[ ! "$LIBTORCH" -ef "$link" ]]; then
        ln -sfn "$(cd "$LIBTORCH" && pwd -P)" "$link"
    fi
    echo "setup: using LIBTORCH=$LIBTORCH"
    exit 0
fi

cache=${RNMT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rnmt}
venv="$cache/venv"
py="$venv/bin/python"

installed_version() {
    "$py" - <<'PY' 2>/dev/null
import importlib.metadata as m
print(m.version("torch").split("+")[0])
PY
}

if [[ ! -x "$py" ]]; then
    echo "setup: creating virtual environment $venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
fi

have=$(installed_version || true)
if [[ "$have" != "$want" ]]; then
    echo "setup: installing torch==$want into $venv (about 2 minutes and 4.7 GB, once per machine)"
    # A lock so that two clones setting up at once do not install over each other.
    exec 9>"$cache/.install.lock"
    flock 9
    have=$(installed_version || true)
    if [[ "$have" != "$want" ]]; then
        "$py" -m pip install --quiet --disable-pip-version-check "torch==$want"
    fi
    flock -u 9
    have=$(installed_version || true)
fi
if [[ "$have" != "$want" ]]; then
    echo "setup: torch $want expected in $venv, found '${have:-none}'" >&2
    exit 1
fi

torch_dir=$("$py" -c 'import os, importlib.util as u; print(os.path.dirname(u.find_spec("torch").origin))')
if [[ ! -f "$torch_dir/lib/libtorch_cpu.so" ]]; then
    echo "setup: $torch_dir/lib/libtorch_cpu.so is missing" >&2
    exit 1
fi
ln -sfn "$torch_dir" "$link"
echo "setup: libtorch $want at $torch_dir (linked as .libtorch)"
