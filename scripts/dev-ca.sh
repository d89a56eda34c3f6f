#!/usr/bin/env bash
# A development certificate authority and certificates signed by it, for mutual TLS.
#   bash scripts/dev-ca.sh DIR NAME[=SAN,SAN...] ...
# DIR/ca.pem (the CA bundle to trust), DIR/ca-key.pem, and for each NAME
# DIR/NAME.pem + DIR/NAME-key.pem: an EC P-256 certificate for server and client
# authentication, valid for NAME, the extra SANs given, localhost and 127.0.0.1.
# Existing files are kept (run again to add names). Never commit the output.
#   bash scripts/dev-ca.sh docker/secrets/tls \
#     plane=governance,noderegistry,registrysync preflight-sim=preflight-sim operator
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: dev-ca.sh DIR NAME[=SAN,SAN...] ..." >&2
  exit 2
fi
dir=$1
shift
mkdir -p "$dir"
chmod 0700 "$dir"
umask 077
if [[ ! -s $dir/ca.pem ]]; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" -days 825 -subj "/CN=ppos development CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  echo "wrote $dir/ca.pem"
fi
for spec in "$@"; do
  name=${spec%%=*}
  extra=""
  if [[ $spec == *=* ]]; then
    IFS=, read -ra sans <<<"${spec#*=}"
    for san in "${sans[@]}"; do extra+="DNS:$san,"; done
  fi
  if [[ -s $dir/$name.pem ]]; then
    continue
  fi
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$dir/$name-key.pem" -out "$dir/$name.csr" -subj "/CN=$name" 2>/dev/null
  printf '%s\n' \
    "subjectAltName=${extra}DNS:$name,DNS:localhost,IP:127.0.0.1" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "keyUsage=critical,digitalSignature" \
    "basicConstraints=critical,CA:FALSE" >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
    -set_serial "0x$(openssl rand -hex 16)" -days 397 -extfile "$dir/$name.ext" \
    -out "$dir/$name.pem" 2>/dev/null
  rm "$dir/$name.csr" "$dir/$name.ext"
  echo "wrote $dir/$name.pem"
done
