#!/bin/sh
# make-secrets.sh: the Secrets (and the CA ConfigMap) that deploy/k8s's
# workloads expect, none of which is in the repository:
#
#   nats-hub-tls            ca.pem, and hub-N.server.pem, hub-N.server-key.pem
#                           for each hub server (each pod mounts its own as
#                           /etc/nats/certs/server.pem, server-key.pem)
#   nats-leaf-<r>-tls       ca.pem, server.pem, server-key.pem of leaf-<r>
#   nats-ca (ConfigMap)     ca.pem alone, for sluice's services
#   nats-passwords          passwords.conf: every NATS user's bcrypt hash
#   nats-user-<user>        password: the plain password of one NATS user
#   provider-keys-<r>       provider-keys.yaml: region r's provider keys
#   grafana-admin           password: Grafana's admin password (random)
#
# Usage (kubectl pointed at the cluster; needs openssl and htpasswd):
#
#   deploy/k8s/make-secrets.sh
#   REGIONS="us-east eu-west ap-south" deploy/k8s/make-secrets.sh
#   PROVIDER_KEYS_DIR=/secure/keys deploy/k8s/make-secrets.sh
#
# Certificates are made by deploy/nats/certs/make-certs.sh into $PKI_DIR
# (default deploy/k8s/.pki, ignored by git; <server>/ per server), once:
# run again, it keeps them and adds those of new regions. Keep ca-key.pem
# there or offline; it is put in no Secret. NATS passwords are drawn at random for users that have
# no Secret yet, and kept for those that have one.
#
# Provider keys: $PROVIDER_KEYS_DIR/<r>.yaml, a YAML map of key names to
# secrets (default deploy/compose/secrets, the fake provider's
# placeholders). Only region r's executors mount provider-keys-<r>.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
ns=${NAMESPACE:-sluice}
regions=${REGIONS:-us-east eu-west}
pki=${PKI_DIR:-$here/.pki}
keys=${PROVIDER_KEYS_DIR:-$here/../compose/secrets}
# Every user of deploy/nats/accounts.conf.
users="sys search analytics gateway dispatcher operator"
for r in $regions; do users="$users exec-$r"; done

for tool in kubectl openssl htpasswd; do
  command -v "$tool" >/dev/null || { echo "make-secrets.sh: $tool is needed" >&2; exit 1; }
done

# Apply a generated object: create it, or update it if it exists.
apply() { kubectl -n "$ns" "$@" --dry-run=client -o yaml | kubectl apply -f -; }

kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl apply -f "$here/namespace.yaml"

# --- TLS --------------------------------------------------------------------
mkdir -p "$pki"
leaves=""
for r in $regions; do leaves="$leaves leaf-$r"; done
# shellcheck disable=SC2086
CERT_DIR="$pki" sh "$here/../nats/certs/make-certs.sh" hub-1 hub-2 hub-3 $leaves

# One Secret for the three hub servers (their pods share a template); keys
# hub-N.server.pem, as nats-hub.yaml's volume lists them.
apply create secret generic nats-hub-tls \
  --from-file=ca.pem="$pki/ca.pem" \
  --from-file=hub-1.server.pem="$pki/hub-1/server.pem" --from-file=hub-1.server-key.pem="$pki/hub-1/server-key.pem" \
  --from-file=hub-2.server.pem="$pki/hub-2/server.pem" --from-file=hub-2.server-key.pem="$pki/hub-2/server-key.pem" \
  --from-file=hub-3.server.pem="$pki/hub-3/server.pem" --from-file=hub-3.server-key.pem="$pki/hub-3/server-key.pem"
for r in $regions; do
  # server.pem, server-key.pem, ca.pem: make-certs.sh's leaf-<r>/.
  apply create secret generic "nats-leaf-$r-tls" --from-file="$pki/leaf-$r/"
done
apply create configmap nats-ca --from-file="$pki/ca.pem"

# --- NATS passwords ---------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umask 077
conf="$tmp/passwords.conf"
echo "# Made by deploy/k8s/make-secrets.sh: the hash of each user's password." >"$conf"
for user in $users; do
  pw=$(kubectl -n "$ns" get secret "nats-user-$user" -o jsonpath='{.data.password}' 2>/dev/null | base64 -d || true)
  if [ -z "$pw" ]; then
    pw=$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24)
    apply create secret generic "nats-user-$user" --from-literal=password="$pw"
  fi
  # exec-us-east -> EXEC_US_EAST_PASSWORD, as accounts.conf names it.
  var=$(echo "$user" | tr 'a-z-' 'A-Z_')_PASSWORD
  printf '%s: "%s"\n' "$var" "$(htpasswd -bnBC 11 "" "$pw" | tr -d ':\n')" >>"$conf"
done
apply create secret generic nats-passwords --from-file=passwords.conf="$conf"

# --- Grafana's admin (monitoring/grafana.yaml) --------------------------------
if ! kubectl -n "$ns" get secret grafana-admin >/dev/null 2>&1; then
  apply create secret generic grafana-admin \
    --from-literal=password="$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24)"
fi

# --- Provider keys ----------------------------------------------------------
for r in $regions; do
  if [ ! -f "$keys/$r.yaml" ]; then
    echo "make-secrets.sh: no $keys/$r.yaml: Secret provider-keys-$r not made" >&2
    continue
  fi
  apply create secret generic "provider-keys-$r" --from-file=provider-keys.yaml="$keys/$r.yaml"
done

echo "Secrets made in namespace $ns. Next: kubectl apply -k $here"
echo "After changing passwords, restart the NATS servers and sluice's pods:"
echo "  kubectl -n $ns rollout restart statefulset/hub deployment"
