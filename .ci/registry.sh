#!/usr/bin/env bash
# Two loopback registries (Debian's docker-registry, distribution 2.8) for lamina's tests,
# each with its own storage folder, config and log under one directory:
#   plain/  HTTP, no auth
#   tls/    HTTPS with a CA made here (openssl) and htpasswd Basic auth
#
#   .ci/registry.sh start DIR   start both, wait for them, print the exports for the tests
#   .ci/registry.sh stop DIR    stop both by the PIDs in DIR/*/registry.pid, remove DIR
#
# Sourced by .ci/run, which uses registry_start / registry_stop / registry_log_tail.
set -euo pipefail

REGISTRY_BIN="${REGISTRY_BIN:-/usr/bin/docker-registry}"
REGISTRY_USER="lamina"

_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# _registry_config DIR PORT [EXTRA_YAML]: a config that logs every request as JSON (the
# tests count blob fetches from these lines) and keeps its blobs in DIR/data.
_registry_config() {
    local dir="$1" port="$2" extra="${3:-}"
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: json
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: lamina-test-secret
$extra
EOF
}

# _registry_run DIR URL [CURL_ARGS...]: start the registry in DIR and wait for /v2/.
_registry_run() {
    local dir="$1" url="$2"
    shift 2
    "$REGISTRY_BIN" serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
    echo $! >"$dir/registry.pid"
    local waited=0
    until curl -s -o /dev/null "$@" "$url"; do
        if ! kill -0 "$(cat "$dir/registry.pid")" 2>/dev/null; then
            echo "docker-registry in $dir exited during startup" >&2
            tail -n 20 "$dir/registry.log" >&2
            return 1
        fi
        if [ "$waited" -ge 100 ]; then
            echo "docker-registry in $dir did not answer within 10 s" >&2
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

registry_start() {
    local dir="$1"
    mkdir -p "$dir/plain" "$dir/tls"
    local plain_port tls_port
    plain_port="$(_free_port)"
    _registry_config "$dir/plain" "$plain_port"
    _registry_run "$dir/plain" "http://127.0.0.1:$plain_port/v2/"

    # A CA made for this run, and a server certificate for 127.0.0.1 signed by it.
    local t="$dir/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=lamina test CA" \
        -keyout "$t/ca.key" -out "$t/ca.crt" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$t/server.key" -out "$t/server.csr" >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$t/san.ext"
    openssl x509 -req -in "$t/server.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" \
        -CAcreateserial -days 2 -extfile "$t/san.ext" -out "$t/server.crt" >/dev/null 2>&1
    local password
    password="$(openssl rand -hex 12)"
    htpasswd -Bbn "$REGISTRY_USER" "$password" >"$t/htpasswd"
    printf '%s' "$password" >"$t/password"
    tls_port="$(_free_port)"
    _registry_config "$t" "$tls_port" "  tls:
    certificate: $t/server.crt
    key: $t/server.key
auth:
  htpasswd:
    realm: lamina-test
    path: $t/htpasswd"
    _registry_run "$t" "https://127.0.0.1:$tls_port/v2/" --cacert "$t/ca.crt"

    export LAMINA_TEST_REGISTRY="127.0.0.1:$plain_port"
    export LAMINA_TEST_REGISTRY_LOG="$dir/plain/registry.log"
    export LAMINA_TEST_REGISTRY_TLS="127.0.0.1:$tls_port"
    export LAMINA_TEST_REGISTRY_TLS_CA="$t/ca.crt"
    export LAMINA_TEST_REGISTRY_TLS_USER="$REGISTRY_USER"
    export LAMINA_TEST_REGISTRY_TLS_PASSWORD="$password"
    export LAMINA_TEST_REGISTRY_TLS_LOG="$t/registry.log"
    echo "registries at $LAMINA_TEST_REGISTRY (plain) and $LAMINA_TEST_REGISTRY_TLS (TLS, Basic auth)" >&2
}

registry_exports() {
    local name
    for name in LAMINA_TEST_REGISTRY LAMINA_TEST_REGISTRY_LOG LAMINA_TEST_REGISTRY_TLS \
        LAMINA_TEST_REGISTRY_TLS_CA LAMINA_TEST_REGISTRY_TLS_USER \
        LAMINA_TEST_REGISTRY_TLS_PASSWORD LAMINA_TEST_REGISTRY_TLS_LOG; do
        printf 'export %s=%q\n' "$name" "${!name}"
    done
}

registry_stop() {
    local dir="$1" sub pid
    for sub in plain tls; do
        if [ -f "$dir/$sub/registry.pid" ]; then
            pid="$(cat "$dir/$sub/registry.pid")"
            kill "$pid" 2>/dev/null || true
            local waited=0
            while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 50 ]; do
                sleep 0.1
                waited=$((waited + 1))
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$dir"
}

registry_log_tail() {
    local dir="$1" sub
    for sub in plain tls; do
        if [ -f "$dir/$sub/registry.log" ]; then
            echo "---- last lines of $dir/$sub/registry.log ----" >&2
            tail -n 20 "$dir/$sub/registry.log" >&2
        fi
    done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case "${1:-}" in
        start)
            registry_start "$2"
            registry_exports
            ;;
        stop) registry_stop "$2" ;;
        *)
            echo "usage: $0 start|stop DIR" >&2
            exit 2
            ;;
    esac
fi
