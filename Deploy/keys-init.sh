#!/bin/sh
# Make the CurveZMQ keys of one aggregator (or a set of parameter shards, which share one key
# pair), a list of clients, and optionally gateways with the devices behind them, once.
#
#   keys-init.sh AGGREGATOR_DIR CLIENT_DIR CLIENT_ID... \
#       [--gateway GATEWAY_ID GATEWAY_DIR DEVICE_DIR DEVICE_ID...]...
#
# AGGREGATOR_DIR gets aggregator.secret, aggregator.public and authorized_keys (one line per
# client id, and one per gateway id); CLIENT_DIR gets <id>.secret and <id>.public for each
# client, and a copy of aggregator.public.
#
# Each --gateway group makes what one gateway needs. A gateway is a client of the tier above
# and an aggregator for its devices, so it has two key pairs:
#   - GATEWAY_ID, its client key at the aggregator: GATEWAY_DIR/<GATEWAY_ID>.secret, authorized
#     in AGGREGATOR_DIR/authorized_keys under GATEWAY_ID, with a copy of aggregator.public in
#     GATEWAY_DIR (the gateway's upstream.security.*);
#   - gateway.secret and gateway.public in GATEWAY_DIR, its server key for its devices, and
#     GATEWAY_DIR/authorized_keys with one line per device (the gateway's security.*).
# DEVICE_DIR gets <id>.secret and <id>.public for each device and a copy of gateway.public.
# GATEWAY_DIR must not be AGGREGATOR_DIR (the two authorized_keys files must stay apart).
#
# Run it again with more ids to add clients, gateways or devices: existing keys are kept (the
# `apiary keys generate` it calls never overwrites a secret key) and a key already in an
# authorized_keys file is not added twice.
#
# The compose file runs it as the one-shot service `apiary-keys` (the image has it as
# /usr/local/bin/apiary-keys-init); Deploy/README.md uses it to make keys for Kubernetes.
# This puts every secret key on one machine: fine for a test fleet; for real devices make each
# key on its device (docs/SECURITY.md) and run only `apiary keys authorize` here.
#
# APIARY names the apiary binary (default: apiary on PATH).
set -eu
# Ids are word-split below (POSIX sh has no arrays); no globbing, and ids are checked first.
set -f

APIARY=${APIARY:-apiary}

usage() {
    echo "usage: $0 AGGREGATOR_DIR CLIENT_DIR CLIENT_ID... [--gateway GATEWAY_ID GATEWAY_DIR DEVICE_DIR DEVICE_ID...]..." >&2
    exit 2
}

if [ "$#" -lt 2 ]; then
    usage
fi

umask 077

# The public key (Z85, 40 characters) in a key file: the text between the quotes of
# `public-key = "..."`.
public_key() {
    sed -n 's/^public-key *= *"\(.*\)"$/\1/p' "$1"
}

check_id() {
    case "$1" in
        "" | -* | *[!A-Za-z0-9._-]*)
            echo "keys-init: '$1' is not a client id (letters, digits, '.', '_', '-')" >&2
            exit 2
            ;;
    esac
}

# authorize SERVER_NAME SERVER_DIR PEER_DIR ID...: the server's key pair in SERVER_DIR (made
# once), its public key copied to PEER_DIR, and for each id a key pair in PEER_DIR authorized in
# SERVER_DIR/authorized_keys.
authorize() {
    name=$1
    srv=$2
    peers=$3
    shift 3
    mkdir -p "$srv" "$peers"
    if [ ! -f "$srv/$name.secret" ]; then
        "$APIARY" keys generate --name "$name" --out "$srv"
    fi
    # Peers need the server's public key (not secret: readable by everyone). The two
    # directories may be one (a single host).
    if [ ! "$srv/$name.public" -ef "$peers/$name.public" ]; then
        cp "$srv/$name.public" "$peers/$name.public"
    fi
    chmod 0644 "$peers/$name.public"
    touch "$srv/authorized_keys"
    for id in "$@"; do
        if [ ! -f "$peers/$id.secret" ]; then
            "$APIARY" keys generate --name "$id" --out "$peers"
        fi
        key=$(public_key "$peers/$id.public")
        if [ -z "$key" ]; then
            echo "keys-init: no public key in $peers/$id.public" >&2
            exit 1
        fi
        if grep -qF -- "$key" "$srv/authorized_keys"; then
            echo "$id is already authorized ($srv)"
        else
            "$APIARY" keys authorize "$peers/$id.public" --id "$id" --to "$srv/authorized_keys"
        fi
    done
    chmod 0644 "$srv/authorized_keys"
}

agg=$1
cli=$2
shift 2

# Check every argument before making any key.
state=client
for a in "$@"; do
    case $state in
        client | device)
            if [ "$a" = "--gateway" ]; then state=gateway-id; else check_id "$a"; fi
            ;;
        gateway-id)
            check_id "$a"
            state=gateway-dir
            ;;
        gateway-dir)
            if [ "$a" = "$agg" ] || { [ -e "$a" ] && [ "$a" -ef "$agg" ]; }; then
                echo "keys-init: the gateway directory $a is the aggregator's; give the gateway its own" >&2
                exit 2
            fi
            state=device-dir
            ;;
        device-dir)
            state=device
            ;;
    esac
done
case $state in
    gateway-id | gateway-dir | device-dir) usage ;;
esac

# The aggregator's clients: every argument up to the first --gateway.
clients=""
while [ "$#" -gt 0 ] && [ "$1" != "--gateway" ]; do
    clients="$clients $1"
    shift
done
# shellcheck disable=SC2086 # ids were checked: no spaces, no glob characters
authorize aggregator "$agg" "$cli" $clients
echo "keys ready: $agg (aggregator), $cli (clients:$clients)"

while [ "$#" -gt 0 ]; do
    # $1 is --gateway.
    gw=$2
    gdir=$3
    ddir=$4
    shift 4
    devices=""
    while [ "$#" -gt 0 ] && [ "$1" != "--gateway" ]; do
        devices="$devices $1"
        shift
    done
    # The gateway as a client of the aggregator...
    authorize aggregator "$agg" "$gdir" "$gw"
    # ...and as the server of its devices.
    # shellcheck disable=SC2086 # ids were checked
    authorize gateway "$gdir" "$ddir" $devices
    echo "keys ready: $gdir (gateway $gw), $ddir (devices:$devices)"
done
