# user hook of the local cluster's test module `broken`: fails, so the command must not run
echo "broken-hook ran" >&2
exit 3
