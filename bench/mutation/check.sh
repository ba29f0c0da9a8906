#!/bin/sh
# Check named mutants against chosen test files, without a full `make mutation` run:
#   bench/mutation/check.sh NAMES_FILE tests/test_x.py [more pytest args]
# NAMES_FILE holds one mutant name a line (as `mutmut results` prints them). Uses the mutated
# sources of the last `mutmut run` (mutants/balancer) with the CURRENT tests/, in a scratch
# copy, so new tests can be seen killing their mutants. Prints `name: killed|survived`.
set -eu
names=$1; shift
root=$(pwd)
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
cp -r mutants/balancer "$tree/balancer"
cp -r backends config tests pyproject.toml "$tree/"
cd "$tree"
while read -r name; do
    [ -n "$name" ] || continue
    if MUTANT_UNDER_TEST=$name "$root/.venv/bin/python" -m pytest -x -q -p no:cacheprovider \
        -p no:randomly "$@" >/dev/null 2>&1; then
        echo "$name: survived"
    else
        echo "$name: killed"
    fi
done < "$names"
