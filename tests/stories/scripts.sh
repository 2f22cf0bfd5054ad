#!/usr/bin/env bash
# The run and test scripts' own plumbing (scripts/lib/common.sh): a failing stage makes the
# script exit non-zero and report FAILED with the stage's name, also when another EXIT handler
# (the throwaway PostgreSQL cluster's) was chained in front of the summary. A run that failed
# once printed "OK" because the chained handler swallowed the exit status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

fail() {
  printf 'scripts story: %s\n' "$*" >&2
  exit 1
}

# run_probe NAME BODY: runs BODY in a script that sources common.sh; sets status and output.
run_probe() {
  local script="$work/$1"
  printf 'set -euo pipefail\nsource %q/scripts/lib/common.sh\n%s\n' "$root" "$2" >"$script"
  status=0
  output="$(bash "$script" 2>&1)" || status=$?
}

run_probe succeeds 'stage "first"; true'
((status == 0)) || fail "a script whose stages pass exited $status: $output"
[[ "$output" == *'] OK, total'* ]] || fail "a passing script did not say OK: $output"

run_probe dies 'stage "doomed"; die "this stage fails on purpose"'
((status == 1)) || fail "a script that called die exited $status, not 1: $output"
[[ "$output" == *'FAILED in stage "doomed" (exit 1)'* ]] ||
  fail "a failed script did not name its failed stage: $output"
[[ "$output" != *'] OK, total'* ]] || fail "a failed script also said OK: $output"

run_probe chained "stage \"chained\"
chain_exit_trap 'echo cleanup ran'
die 'fails after a cleanup handler was chained'"
((status == 1)) || fail "a chained EXIT handler changed the exit status to $status: $output"
[[ "$output" == *'cleanup ran'* ]] || fail "the chained cleanup did not run: $output"
[[ "$output" == *'FAILED in stage "chained" (exit 1)'* ]] ||
  fail "with a chained cleanup the failure was not reported: $output"
[[ "$output" != *'] OK, total'* ]] || fail "with a chained cleanup a failed script said OK: $output"

run_probe chained_ok "stage \"chained ok\"
chain_exit_trap 'echo cleanup ran'
chain_exit_trap 'false'
true"
((status == 0)) || fail "a failing cleanup turned a passing script into exit $status: $output"
[[ "$output" == *'] OK, total'* ]] || fail "a passing script with cleanups did not say OK: $output"

echo "scripts story: failures are reported as failures, also through chained exit handlers"
