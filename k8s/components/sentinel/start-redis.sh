#!/bin/sh
# Start Redis in the role the Sentinel group gives this pod: a replica of the current
# master, unless the master is this pod. Before any Sentinel answers (the group's first
# start), DEFAULT_MASTER decides: "self" for redis-0, redis-0.redis for the replica.
# The users (redis-users.sh) and the replication password go into a memory-backed file
# that redis.conf includes, never onto a command line. REDIS_CONFIG_DIR holds redis.conf,
# redis-users.acl and redis-users.sh (the ConfigMap redis-config).
set -eu
umask 077
config="${REDIS_CONFIG_DIR:-/etc/redis}"
self="$(hostname).${REDIS_SERVICE}"
master="$(env -u REDISCLI_AUTH timeout 5 redis-cli -h redis-sentinel -p 26379 \
  sentinel get-master-addr-by-name mymaster 2>/dev/null | head -n 1 || true)"
[ -n "$master" ] || master="$DEFAULT_MASTER"
users="$(sh "$config/redis-users.sh" "$config/redis-users.acl")"
{
  printf '%s\nmasterauth "%s"\n' "$users" "$SSDSTACK_REDIS_PASSWORD"
  printf 'replica-announce-ip %s\n' "$self"
  if [ "$master" != self ] && [ "$master" != "$self" ]; then
    printf 'replicaof %s 6379\n' "$master"
  fi
} > /run/redis/auth.conf
exec redis-server "$config/redis.conf"
