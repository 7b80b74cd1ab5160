#!/bin/sh
# Print the Redis `user` directives of the ACL file $1 (redis-users.acl), each with its
# password's SHA-256, for Redis to read as configuration (a file it includes, or stdin).
# The password of `default` is $SSDSTACK_REDIS_PASSWORD; that of user <name> is
# $SSDSTACK_REDIS_PASSWORD_<NAME> (upper case). A user other than `default` without a
# password is printed `off`: it cannot log in. Passwords may hold only A-Z a-z 0-9 . _ ~ -
# (they go into URLs). Used by compose, Kubernetes and the local stack alike.
set -eu
acl_file="${1:?usage: redis-users.sh redis-users.acl}"
grep -Ev '^[[:space:]]*(#|$)' "$acl_file" | while read -r keyword name rules; do
  if [ "$keyword" != user ] || [ -z "$name" ]; then
    echo "redis-users.sh: $acl_file: not a 'user <name> <rules>' line: $keyword $name" >&2
    exit 1
  fi
  if [ "$name" = default ]; then
    variable=SSDSTACK_REDIS_PASSWORD
  else
    variable="SSDSTACK_REDIS_PASSWORD_$(printf '%s' "$name" | tr '[:lower:]-' '[:upper:]_')"
  fi
  value="$(printenv "$variable" || true)"
  case "$value" in
    *[!A-Za-z0-9._~-]*)
      echo "redis-users.sh: $variable may hold only A-Z a-z 0-9 . _ ~ - (it goes into URLs)" >&2
      exit 1 ;;
    "")
      if [ "$name" = default ]; then
        echo "redis-users.sh: set $variable (the password of Redis's default user)" >&2
        exit 1
      fi
      echo "redis-users.sh: $variable is not set: Redis user $name is off" >&2
      printf 'user %s reset off %s\n' "$name" "$rules" ;;
    *)
      digest="$(printf '%s' "$value" | sha256sum | cut -d ' ' -f 1)"
      printf 'user %s reset on #%s %s\n' "$name" "$digest" "$rules" ;;
  esac
done
