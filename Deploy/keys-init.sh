#!/bin/sh
# Make the CurveZMQ keys of one aggregator and a list of clients, once.
#
#   keys-init.sh AGGREGATOR_DIR CLIENT_DIR CLIENT_ID...
#
# AGGREGATOR_DIR gets aggregator.secret, aggregator.public and authorized_keys (one line per
# client id); CLIENT_DIR gets <id>.secret and <id>.public for each client, and a copy of
# aggregator.public. Run it again with more ids to add clients: existing keys are kept (the
# `apiary keys generate` it calls never overwrites a secret key) and a key already in
# authorized_keys is not added twice.
#
# The compose file runs it as the one-shot service `apiary-keys` (the image has it as
# /usr/local/bin/apiary-keys-init); Deploy/README.md uses it to make keys for Kubernetes.
# This puts every secret key on one machine: fine for a test fleet; for real devices make each
# key on its device (docs/SECURITY.md) and run only `apiary keys authorize` here.
#
# APIARY names the apiary binary (default: apiary on PATH).
set -eu

APIARY=${APIARY:-apiary}

if [ "$#" -lt 2 ]; then
    echo "usage: $0 AGGREGATOR_DIR CLIENT_DIR CLIENT_ID..." >&2
    exit 2
fi
agg=$1
cli=$2
shift 2

umask 077
mkdir -p "$agg" "$cli"

# The public key (Z85, 40 characters) in a key file: the text between the quotes of
# `public-key = "..."`.
public_key() {
    sed -n 's/^public-key *= *"\(.*\)"$/\1/p' "$1"
}

if [ ! -f "$agg/aggregator.secret" ]; then
    "$APIARY" keys generate --name aggregator --out "$agg"
fi
# Clients need the aggregator's public key (not secret: readable by everyone). The two
# directories may be one (a single host).
if [ ! "$agg/aggregator.public" -ef "$cli/aggregator.public" ]; then
    cp "$agg/aggregator.public" "$cli/aggregator.public"
fi
chmod 0644 "$cli/aggregator.public"
touch "$agg/authorized_keys"

for id in "$@"; do
    if [ ! -f "$cli/$id.secret" ]; then
        "$APIARY" keys generate --name "$id" --out "$cli"
    fi
    key=$(public_key "$cli/$id.public")
    if [ -z "$key" ]; then
        echo "keys-init: no public key in $cli/$id.public" >&2
        exit 1
    fi
    if grep -qF -- "$key" "$agg/authorized_keys"; then
        echo "$id is already authorized"
    else
        "$APIARY" keys authorize "$cli/$id.public" --id "$id" --to "$agg/authorized_keys"
    fi
done
chmod 0644 "$agg/authorized_keys"
echo "keys ready: $agg (aggregator), $cli (clients: $*)"
