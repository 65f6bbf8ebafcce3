#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for tests/report (the report page is checked as a
# browser renders it) when this machine allows it (root + apt); otherwise say why and leave
# the browser tests to skip themselves.
set -u
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install_chromium: not root or no apt-get; the tests/report browser check will be skipped" >&2
  exit 0
fi
apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
  || echo "install_chromium: apt-get install failed; the tests/report browser check will be skipped" >&2
exit 0
