# find_python X.Y: the path of a CPython X.Y interpreter with its C headers,
# for engine/build_pycaffe.sh and scripts/build_wheel.sh (sourced). Looked
# for in this order: DECONVNET_PYTHON_X_Y (e.g. DECONVNET_PYTHON_3_12=/opt/py/bin/python3.12),
# pythonX.Y on the PATH, pyenv's builds (newest patch release first), then
# /usr/local/bin and /usr/bin. Fails naming how to get one.
find_python() {
  local version="$1" override candidate
  [[ "$version" =~ ^3\.[0-9]+$ ]] || { echo "find_python: '$version' is not a Python version like 3.12" >&2; return 2; }
  override="DECONVNET_PYTHON_${version/./_}"
  local candidates=()
  [ -n "${!override:-}" ] && candidates+=("${!override}")
  candidates+=("$(command -v "python$version" 2>/dev/null || true)")
  local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
  if [ -d "$pyenv_root/versions" ]; then
    while IFS= read -r dir; do candidates+=("$dir/bin/python$version"); done \
      < <(find "$pyenv_root/versions" -mindepth 1 -maxdepth 1 -name "$version.*" | sort -rV)
  fi
  candidates+=("/usr/local/bin/python$version" "/usr/bin/python$version")
  for candidate in "${candidates[@]}"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    # A virtualenv's interpreter is its base's; its headers are the base's too.
    # sys.executable: the real interpreter behind a pyenv shim.
    if "$candidate" -c 'import sys, sysconfig, os
ok = ("%d.%d" % sys.version_info[:2] == sys.argv[1] and sys.implementation.name == "cpython"
      and os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))
print(sys.executable) if ok else sys.exit(1)' "$version" 2>/dev/null; then
      return 0
    fi
  done
  echo "find_python: no CPython $version with its C headers (Python.h) found; install one (Debian 13: apt-get install python$version-dev; Ubuntu: the deadsnakes PPA; anywhere: pyenv install $version) or set $override=/path/to/python$version" >&2
  return 1
}
