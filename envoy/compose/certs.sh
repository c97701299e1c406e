#!/usr/bin/env bash
# A throwaway CA and one certificate per mesh identity, made at build time and never committed
# (output: $1, default .build/compose/certs). Identities are SPIFFE-style URI SANs
# (spiffe://portcullis.mesh/<name>): each sidecar accepts only the callers it lists
# (envoy/compose/*.yaml.tmpl). Every run makes new keys; the CA key is deleted at the end, so
# nothing can issue another certificate for this mesh afterwards.
#
#   <out>/<identity>/{ca.pem,tls.crt,tls.key}   gateway, crm-api, sync-worker, intruder
#   <out>/stolen/                                 the gateway's own pair (a compromised hop)
#   <out>/rogue/                                  "gateway" issued by a foreign CA
set -euo pipefail
out=${1:-.build/compose/certs}
days=${PORTCULLIS_CERT_DAYS:-7}
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

ca() { # name
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 \
    -days "$days" -subj "/O=Portcullis compose/CN=$1" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$work/$1.key" -out "$work/$1.pem" 2>/dev/null
}

leaf() { # dir identity dns ca
  local dir=$out/$1
  mkdir -p "$dir"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 \
    -subj "/O=Portcullis compose/CN=$2" -keyout "$dir/tls.key" -out "$work/$1.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=URI:spiffe://portcullis.mesh/$2,DNS:$3" > "$work/$1.ext"
  openssl x509 -req -in "$work/$1.csr" -CA "$work/$4.pem" -CAkey "$work/$4.key" \
    -CAcreateserial -days "$days" -sha256 -extfile "$work/$1.ext" -out "$dir/tls.crt" 2>/dev/null
  # Every identity trusts the mesh CA only, whatever CA issued its own certificate.
  cp "$work/mesh-ca.pem" "$dir/ca.pem"
}

ca mesh-ca
ca rogue-ca
leaf gateway gateway gateway mesh-ca
leaf crm-api crm-api crm-sidecar mesh-ca
leaf sync-worker sync-worker sync-sidecar mesh-ca
leaf intruder intruder intruder mesh-ca
leaf rogue gateway gateway rogue-ca
cp -r "$out/gateway" "$out/stolen"

# The containers run as 65532 (non-root) and must read their key; elsewhere, world-readable
# keys of a throwaway CA in a build directory are the lesser evil.
chmod -R a+rX "$out"
if [ "$(id -u)" = 0 ]; then
  chown -R 65532:65532 "$out"
  find "$out" -name tls.key -exec chmod 0400 {} +
else
  find "$out" -name tls.key -exec chmod 0444 {} +
fi
echo "certs: throwaway CA and $(ls "$out" | wc -l) identities in $out (valid $days days)"
