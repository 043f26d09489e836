#!/usr/bin/env bash
# Certificates and a token for the opt-in TLS stack (deploy/compose/tls.yml), made with openssl:
#   bash deploy/tls/make-certs.sh [DIR]        (default: deploy/tls/certs; an existing DIR is kept)
# A private CA signs: `server` (the replicas; also valid for localhost and 127.0.0.1), `balancer`
# (HAProxy: the certificate clients see, and the client certificate it shows the replicas) and
# `client` (yours, and the replicas' own health check). `token` is a random bearer token.
# For a trial or a test: the keys are readable by everyone, because the containers run as an
# unprivileged user. In production put your own certificates and token in a secret store.
set -euo pipefail
dir="${1:-$(dirname "$0")/certs}"
if [[ -e "$dir/ca.crt" ]]; then
    echo "$dir/ca.crt exists: keeping the certificates in $dir" >&2
    exit 0
fi
mkdir -p "$dir"
cd "$dir"
days=825

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }

# sign NAME EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
sign() {
    local name=$1 usage=$2 sans=${3:-}
    key "$name"
    openssl req -new -key "$name.key" -subj "/CN=$name" -out "$name.csr" 2>/dev/null
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature"
        echo "extendedKeyUsage=$usage"
        [[ -n "$sans" ]] && echo "subjectAltName=$sans"
    } >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
        -sha256 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

key ca
openssl req -x509 -new -key ca.key -subj "/CN=foldserve test CA" -days "$days" -sha256 \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt 2>/dev/null
sign server serverAuth "DNS:server,DNS:localhost,IP:127.0.0.1"
sign balancer serverAuth,clientAuth "DNS:balancer,DNS:localhost,IP:127.0.0.1"
sign client clientAuth
# HAProxy wants a certificate and its key in one file.
cat balancer.crt balancer.key >balancer.pem
openssl rand -hex 24 >token
rm -f ca.srl
chmod 0644 ./*
# Only this script signs with the CA key: nothing mounts it.
chmod 0600 ca.key
echo "wrote CA, server, balancer and client certificates and a token to $dir" >&2
