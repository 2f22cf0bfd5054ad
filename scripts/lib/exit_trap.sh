# shellcheck shell=bash
# Exit handlers that compose. Source it; do not execute it. Sourced by common.sh (the set-up
# commands) and postgres.sh, so a script that uses a throwaway cluster without common.sh
# (bench/proxy.sh) has it too.

# chain_exit_trap COMMAND: run COMMAND on exit before the EXIT trap already set, which still
# sees the script's exit status (so a failed run is still reported as failed). Errexit is off
# while exiting: every handler runs even if one fails, and restoring the status must not end
# the shell.
chain_exit_trap() {
  local previous
  previous="$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\\1/")"
  # shellcheck disable=SC2064 # expand now: the previous handler is fixed text
  trap "_latchkey_exit_status=\$?; set +e; $1; (exit \$_latchkey_exit_status); ${previous:-:}" EXIT
}
