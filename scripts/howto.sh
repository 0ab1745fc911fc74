#!/usr/bin/env bash
# Prints how to enroll against the demo CA that `make run` serves.
set -euo pipefail
bin=$1 dir=$2
https=$(sed -n 's/.*"https": *"\(https:\/\/[^"]*\)".*/\1/p' "$dir/agentca.json" | head -1)
td=$(sed -n 's/.*"trust_domain": *"\([^"]*\)".*/\1/p' "$dir/agentca.json")
fp=$(openssl x509 -in "$dir/roots.pem" -outform DER 2>/dev/null | sha256sum | cut -d' ' -f1 || true)
cat <<MSG

agentca demo CA in $dir (trust domain $td), serving $https
In another terminal:

  # 1. create a single-use join token for an agent
  TOKEN=\$($bin token create --dir $dir --spiffe-id spiffe://$td/agent/demo)

  # 2. enroll: the key is made locally; cert.pem, key.pem, bundle.pem land in ./agent-creds
  $bin enroll --ca $https --root $dir/roots.pem --token "\$TOKEN" --out ./agent-creds
  ${fp:+# (or pin the root instead of --root: --fingerprint $fp)}

  # 3. look at it: a 5-minute X.509-SVID
  openssl x509 -in ./agent-creds/cert.pem -noout -subject -ext subjectAltName -dates

  # keep it fresh: add --daemon to step 2 (renews at 2/3 of the lifetime)

MSG
