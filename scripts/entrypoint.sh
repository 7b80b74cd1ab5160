#!/usr/bin/env bash
# Container entrypoint of every service: source the Ascend vendor environment scripts
# that the image has, then run the service command. On CPU images none exist and the
# command runs unchanged.
#
#   CANN toolkit (atc, the converter's Ascend image): $ASCEND_HOME/ascend-toolkit/set_env.sh
#   MindX SDK mxVision (the inferencer's Ascend image): $MX_SDK_HOME/set_env.sh, else the
#     newest $ASCEND_HOME/mxVision*/set_env.sh
#   NPU driver libraries, mounted from the host: $ASCEND_HOME/driver/lib64{,/common,/driver}
#
# The vendor scripts are sourced without `set -u`: they read variables they do not set.
ascend_home="${ASCEND_HOME:-/usr/local/Ascend}"

for lib in "$ascend_home/driver/lib64/driver" "$ascend_home/driver/lib64/common" "$ascend_home/driver/lib64"; do
    if [ -d "$lib" ]; then
        export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
done

if [ -f "$ascend_home/ascend-toolkit/set_env.sh" ]; then
    # shellcheck disable=SC1091
    source "$ascend_home/ascend-toolkit/set_env.sh"
fi

mxvision=""
if [ -n "${MX_SDK_HOME:-}" ] && [ -f "$MX_SDK_HOME/set_env.sh" ]; then
    mxvision="$MX_SDK_HOME/set_env.sh"
else
    mxvision="$(find "$ascend_home" -maxdepth 2 -path "$ascend_home/mxVision*/set_env.sh" 2>/dev/null | sort -V | tail -n 1)"
fi
if [ -n "$mxvision" ]; then
    # shellcheck disable=SC1090
    source "$mxvision"
fi

exec "$@"
