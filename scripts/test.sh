#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, build the documentation
# strictly (mkdocs.yml), then run the whole suite.
#   bash scripts/test.sh            (extra arguments go to pytest)
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: the real Fashion-MNIST and a headless browser for the page tests.
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "note: not root; missing ${need[*]} (the tests that need them will skip)" >&2
  fi
fi

# torch==2.13.0 is the CPU build, installed from a local file on these machines.
python -m pip install -q -e '.[test]'
python -m ruff check src tests bench fuzz
# the documentation, warnings as errors, into a throw-away folder (build/ is gitignored)
python -m mkdocs build --strict --quiet --site-dir build/site
python -m pytest "$@"
