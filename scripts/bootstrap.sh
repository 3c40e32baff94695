#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks, then the Python packages into .venv.
#   scripts/bootstrap.sh          what `make run` needs
#   scripts/bootstrap.sh --dev    also the test tools and headless Chromium
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

debian_packages=(libmariadb-dev pkg-config gcc)
# prometheus: promtool checks a scrape; wrk: the load generator of `make bench` (C, so the figures are the server's)
(( dev )) && debian_packages+=(chromium faketime prometheus wrk)
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

# The locks (`make lock`) pin every package, direct or not, with the hashes of PyPI's files.
lock=requirements.lock
(( dev )) && lock=requirements-dev.lock
# A pin in requirements*.txt that the lock lacks means someone forgot `make lock`: say so
# rather than install something else.
stale=$(awk '
  function pin(spec,  part) {  # "Name[extra]==1.0" -> "name==1.0", names normalized as PyPI does
    split(spec, part, "==")
    sub(/\[.*/, "", part[1])
    part[1] = tolower(part[1])
    gsub(/[-_.]+/, "-", part[1])
    return part[1] "==" part[2]
  }
  FNR == NR { if ($0 ~ /^[A-Za-z0-9]/) locked[pin($1)] = 1; next }
  /^[A-Za-z0-9]/ && !(pin($1) in locked) { print FILENAME ": " $1 }
' "$lock" requirements.txt $( (( dev )) && echo requirements-dev.txt ))
if [[ -n "$stale" ]]; then
  echo "$lock does not match the requirements (run \`make lock\` and commit the lock): ${stale//$'\n'/, }" >&2
  exit 1
fi
# One stamp per lock, named after the lock's content: `make run` (requirements.lock) and
# `make test` (requirements-dev.lock) each find their own and install nothing the next time.
stamp=".venv/.installed-$(sha256sum "$lock" | cut -c1-16).$lock"
if [[ ! -f "$stamp" ]]; then
  echo "Installing Python packages from $lock"
  .venv/bin/pip install -q --disable-pip-version-check --require-hashes -r "$lock"
  rm -f .venv/.installed-*."$lock" .venv/.installed-????????????????  # this lock's older stamps
  touch "$stamp"
fi
