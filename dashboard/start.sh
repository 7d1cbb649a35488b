#!/usr/bin/env bash
# Start a Mosquitto broker and Node-RED with the AiVision dashboard flow, both on loopback.
# Ctrl-C stops both. Environment (all optional):
#   MQTT_PORT=1883             broker port (the broker listens on 127.0.0.1 only)
#   DASHBOARD_PORT=1880        dashboard at http://127.0.0.1:$DASHBOARD_PORT/dashboard
#   AIVISION_TOPIC_PREFIX=aivision/line1
#   START_BROKER=0             use a broker that already runs at MQTT_HOST:MQTT_PORT instead
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export MQTT_HOST="${MQTT_HOST:-127.0.0.1}"
export MQTT_PORT="${MQTT_PORT:-1883}"
export DASHBOARD_PORT="${DASHBOARD_PORT:-1880}"
run_dir="${AIVISION_RUN_DIR:-$here/.run}"

if [ ! -d "$here/node_modules/node-red" ]; then
    echo "Node-RED is not installed: run 'npm ci' in $here first." >&2
    exit 1
fi
mkdir -p "$run_dir"

children=()
stop_children() {
    for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop_children EXIT
trap 'exit 130' INT TERM

if [ "${START_BROKER:-1}" = "1" ]; then
    mosquitto_binary="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
    if [ ! -x "$mosquitto_binary" ]; then
        echo "mosquitto not found (Debian/Ubuntu: sudo apt-get install mosquitto)." >&2
        exit 1
    fi
    # Loopback only, anonymous: fine for one machine. See README.md to open it to a plant network.
    # Persistence keeps retained stats and shift summaries across a broker restart.
    cat > "$run_dir/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $run_dir/
log_dest stderr
user $(id -un)
CONF
    "$mosquitto_binary" -c "$run_dir/mosquitto.conf" &
    children+=("$!")
fi

node "$here/node_modules/node-red/red.js" --settings "$here/settings.js" &
children+=("$!")
echo "Dashboard: http://127.0.0.1:$DASHBOARD_PORT/dashboard   (broker 127.0.0.1:$MQTT_PORT)" >&2
wait -n
