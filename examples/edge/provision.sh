#!/bin/sh
# A stand-in for a real provisioning script: it reads the order from
# standard input, takes a moment, and prints the result as one JSON object.
# execkit passes the execution id in EXECKIT_EXECUTION_ID; a real script
# would hand it to its cloud API as the idempotency key.
set -eu
order=$(cat)
sleep 1
case "$order" in
  *'"plan":"impossible"'*) echo "no capacity for that plan" >&2; exit 3 ;;
esac
printf '{"serverId":"srv_%s","ipv4":"203.0.113.10"}\n' "$(echo "$EXECKIT_EXECUTION_ID" | tail -c 7)"
