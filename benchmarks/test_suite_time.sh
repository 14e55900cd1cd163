#!/usr/bin/env bash
# The default test run of an earlier commit and of this checkout, one after the other on this
# machine, with the wall time of each and their ratio: how a change to the tests' layout is
# shown to pay (issue 25 asked for at most half).
#
#   bash benchmarks/test_suite_time.sh [BASELINE_REV]      (default: e824b52, before issue 25)
#
# The baseline runs from `git archive BASELINE_REV` in a temporary folder, with this
# checkout's .venv packages (a .pth file puts the baseline's package first), each under its own
# pytest settings. Run it on a quiet machine: anything else running shifts both figures.
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:-e824b52}"
root="$PWD"
site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

git archive "$rev" | tar -x -C "$work" --one-top-level=tree
python3 -m venv "$work/venv"
venv_site="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\n%s\n' "$work/tree" "$site" > "$venv_site/baseline.pth"

run() {  # name, folder, python: prints "name wall_s summary"
  local start summary
  start=$SECONDS
  summary=$(cd "$2" && "$3" -m pytest -q 2>&1 | tail -1) || true
  printf '%-9s %5d s  %s\n' "$1" "$((SECONDS - start))" "$summary"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ); baseline $rev vs $(git rev-parse --short HEAD)"
before=$(run "$rev" "$work/tree" "$work/venv/bin/python")
echo "$before"
after=$(run "HEAD" "$root" "$root/.venv/bin/python")
echo "$after"
b=$(echo "$before" | awk '{print $2}')
a=$(echo "$after" | awk '{print $2}')
python3 -c "print(f'ratio after/before: {$a / $b:.3f}')"
