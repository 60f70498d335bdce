#!/bin/sh
# Usage: install-ca-certificates.sh DIR
# Trusts the certificate authorities in DIR/*.crt (PEM; a file may hold a
# whole bundle) system-wide with Debian's update-ca-certificates, then removes
# DIR. Run before any HTTPS: behind a proxy that intercepts TLS, apt, pip and
# Python's ssl then trust the proxy's CA. Without *.crt files it only
# installs the ca-certificates package.
set -eu
dir=$1
if ! dpkg-query -W -f='${Status}' ca-certificates 2>/dev/null | grep -q "ok installed"; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends ca-certificates
  rm -rf /var/lib/apt/lists/*
fi
found=0
for crt in "$dir"/*.crt; do
  [ -f "$crt" ] || continue
  cp "$crt" "/usr/local/share/ca-certificates/$(basename "$crt")"
  found=$((found + 1))
done
[ "$found" = 0 ] || update-ca-certificates
echo "install-ca-certificates: $found extra CA file(s) from $dir"
rm -rf "$dir"
