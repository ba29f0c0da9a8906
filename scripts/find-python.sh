#!/bin/sh
# Print the path of a Python >= 3.12 interpreter, or explain what was tried and fail.
# Order: $PYTHON, python3.13 / python3.12 / python3 on PATH, then pyenv's installed versions.
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
tried=""
for cand in "${PYTHON:-}" python3.12 python3.13 python3; do
  [ -n "$cand" ] || continue
  path=$(command -v "$cand" 2>/dev/null) || { tried="$tried $cand"; continue; }
  if ok "$path"; then echo "$path"; exit 0; fi
  tried="$tried $path"
done
root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
# 3.12 first (the version the backends' facts were checked on), then newer ones.
versions=$(ls "$root/versions" 2>/dev/null | grep '^3\.[0-9]*\.[0-9]*$' | sort -V -r)
for v in $(echo "$versions" | grep '^3\.12\.'; echo "$versions" | grep -v '^3\.12\.'); do
  path="$root/versions/$v/bin/python3"
  if ok "$path"; then echo "$path"; exit 0; fi
  tried="$tried $path"
done
echo "error: echonext-balancer needs Python >= 3.12; tried:${tried:- nothing} (set PYTHON=/path/to/python3.12)" >&2
exit 1
