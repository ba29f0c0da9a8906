#!/bin/sh
# One command: `make bench-overhead` (or this script) sets up what it needs and runs the benchmark.
set -e
cd "$(dirname "$0")/../.."
exec .venv/bin/python bench/overhead/run.py "$@"
