#!/usr/bin/env bash
# Create the compose secrets once: a control token, an ES256 (EC P-256) signing key and
# a development CA with certificates for mutual TLS (scripts/dev-ca.sh) in
# docker/secrets/ (git-ignored). Never commit them.
# Compose bind-mounts file secrets as they are, so the container's user (uid
# 10001) must be able to read them: the files are 0444 and the directory 0700,
# which keeps every other user of this machine out.
set -euo pipefail
cd "$(dirname "$0")/secrets"
chmod 0700 .
umask 077
if [[ ! -s control_token ]]; then
  python3 -c 'import secrets; print("ppos_ct_" + secrets.token_urlsafe(32))' > control_token
  echo "wrote docker/secrets/control_token"
fi
if [[ ! -s signing_key.pem ]]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out signing_key.pem
  echo "wrote docker/secrets/signing_key.pem"
fi
bash ../../scripts/dev-ca.sh tls \
  plane=governance,noderegistry,registrysync preflight-sim operator
chmod 0444 control_token signing_key.pem tls/ca.pem tls/plane.pem tls/plane-key.pem \
  tls/preflight-sim.pem tls/preflight-sim-key.pem
chmod 0700 tls
