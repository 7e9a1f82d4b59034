#!/bin/sh
# make-certs.sh: a private CA and one certificate per NATS server, with
# openssl (see ../README.md, "Certificates").
#
#   ./make-certs.sh                       # the five servers of the example
#   ./make-certs.sh leaf-ap-south         # one more (a new region's leaf node)
#   EXTRA_SANS="DNS:nats.example.com,IP:10.0.0.5" ./make-certs.sh hub-1
#   CERT_DIR=/secure/place ./make-certs.sh
#
# Writes, in this directory (or $CERT_DIR):
#   ca.pem, ca-key.pem     the CA, made once. ca.pem is what every client
#                          verifies servers with (--tls-ca ca.pem); ca-key.pem
#                          signs the servers' certificates: keep it offline.
#   <name>/                what server <name> needs, to install as its
#                          /etc/nats/certs: server.pem and server-key.pem
#                          (a certificate for DNS name <name>, plus
#                          $EXTRA_SANS, valid as server and as client, since
#                          routes and leaf node connections are mutual TLS),
#                          and ca.pem.
#
# The DNS name matters twice: clients and leaf nodes verify it against the
# host name they dial (hub-1, leaf-us-east, ...), and the hub maps a leaf
# node's name (leaf-<region>) to the account it joins (hub.conf).
# An existing <name>/ is left alone; delete it to make a new certificate.
set -eu

dir=${CERT_DIR:-$(dirname "$0")}
days=${DAYS:-825}
[ $# -gt 0 ] || set -- hub-1 hub-2 hub-3 leaf-us-east leaf-eu-west
mkdir -p "$dir"
cd "$dir"
umask 077

if [ ! -f ca.pem ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out ca-key.pem
  openssl req -x509 -new -key ca-key.pem -sha256 -days 3650 \
    -subj "/O=sluice/CN=sluice NATS CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem
  chmod 644 ca.pem
  echo "made ca.pem"
fi

for name in "$@"; do
  case $name in
    *[!A-Za-z0-9.-]*|'') echo "make-certs.sh: '$name' is not a host name" >&2; exit 2 ;;
  esac
  if [ -e "$name" ]; then
    echo "$name/ exists; skipped"
    continue
  fi
  mkdir "$name"
  sans="DNS:$name"
  if [ -n "${EXTRA_SANS:-}" ]; then sans="$sans,$EXTRA_SANS"; fi
  openssl ecparam -name prime256v1 -genkey -noout -out "$name/server-key.pem"
  openssl req -new -key "$name/server-key.pem" -subj "/O=sluice/CN=$name" -out "$name/server.csr"
  cat > "$name/server.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$sans
EOF
  # -CAserial next to the CA, so that every certificate gets a new serial.
  openssl x509 -req -in "$name/server.csr" -CA ca.pem -CAkey ca-key.pem \
    -CAserial ca.srl -CAcreateserial \
    -days "$days" -sha256 -extfile "$name/server.ext" -out "$name/server.pem"
  rm -f "$name/server.csr" "$name/server.ext"
  cp ca.pem "$name/ca.pem"
  echo "made $name/ for $sans"
done
