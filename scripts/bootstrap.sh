#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks, then the Python packages into .venv.
#   scripts/bootstrap.sh          what `make run` needs
#   scripts/bootstrap.sh --dev    also the test tools and headless Chromium
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

debian_packages=(libmariadb-dev pkg-config gcc)
(( dev )) && debian_packages+=(chromium)
missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if (( ${#missing[@]} )); then
  echo "Installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python_bin=""
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    python_bin=$candidate
    break
  fi
done
[[ -n "$python_bin" ]] || { echo "Python 3.11 or newer is required." >&2; exit 1; }

[[ -x .venv/bin/python ]] || "$python_bin" -m venv .venv

requirements=requirements.txt
(( dev )) && requirements=requirements-dev.txt
stamp=".venv/.installed-$(cat requirements.txt "$requirements" | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  echo "Installing Python packages from $requirements"
  .venv/bin/pip install -q --disable-pip-version-check -r "$requirements"
  touch "$stamp"
fi
