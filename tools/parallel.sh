#!/usr/bin/env bash
# Run labelled commands side by side, prefixing each output line with its label; fail if
# any fails. Usage: tools/parallel.sh "label:command" ...
set -uo pipefail
pids=(); labels=()
for spec in "$@"; do
  label="${spec%%:*}"; cmd="${spec#*:}"
  ( bash -c "$cmd" 2>&1 | sed -u "s/^/[$label] /"; exit "${PIPESTATUS[0]}" ) &
  pids+=($!); labels+=("$label")
done
rc=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then echo "FAILED: ${labels[$i]}" >&2; rc=1; fi
done
exit $rc
