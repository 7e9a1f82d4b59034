#!/bin/sh
# nats-init.sh: what the NATS servers of deploy/compose need and
# deploy/nats does not ship, made on every `docker compose up` by the
# one-shot service nats-init before any server starts:
#
#   /out/pki/            (volume nats-pki) the private CA, and per server
#                        <name>/server.pem, server-key.pem, ca.pem, by
#                        deploy/nats/certs/make-certs.sh. Made once and
#                        kept: a restart keeps the CA. Each server mounts
#                        only its own <name>/ as /etc/nats/certs; the CA's
#                        key stays at the root, which no server sees.
#   /out/etc/passwords.conf
#                        (volume nats-etc, the servers' /etc/nats) the
#                        password of every NATS user as a bcrypt hash, from
#                        the environment (.env); accounts.conf includes it.
#   /out/ca/ca.pem       (volume nats-ca) the CA certificate alone: the only
#                        part of the PKI sluice's services get.
set -eu

pki=/out/pki
etc=/out/etc
# certs/ is where each server's own certificates are mounted.
mkdir -p "$pki" "$etc/certs" /out/ca

# Hub certificates also name localhost, so that a port forwarded to a hub
# server (docker compose port, ssh -L) can be verified. Leaf certificates
# name only their leaf: the hub maps a leaf's DNS name to its user.
CERT_DIR="$pki" EXTRA_SANS="DNS:localhost,IP:127.0.0.1" \
  sh /nats/certs/make-certs.sh hub-1 hub-2 hub-3
CERT_DIR="$pki" sh /nats/certs/make-certs.sh leaf-us-east leaf-eu-west

install -m 0644 "$pki/ca.pem" /out/ca/ca.pem

# bcrypt, as deploy/nats/passwords.conf.example says; cost 11 as there.
hash() {
  htpasswd -bnBC 11 "" "$1" | tr -d ':\n'
}

umask 077
tmp="$etc/passwords.conf.tmp"
{
  echo "# Made by deploy/compose/nats-init.sh from .env on every start: do not edit."
  for user in SYS SEARCH ANALYTICS GATEWAY DISPATCHER EXEC_US_EAST EXEC_EU_WEST OPERATOR; do
    eval "pw=\${${user}_PASSWORD:-}"
    if [ -z "$pw" ]; then
      echo "nats-init: ${user}_PASSWORD is not set (see deploy/compose/.env)" >&2
      exit 1
    fi
    printf '%s_PASSWORD: "%s"\n' "$user" "$(hash "$pw")"
  done
} >"$tmp"
mv "$tmp" "$etc/passwords.conf"
echo "nats-init: certificates in $pki, passwords.conf written"
