#!/usr/bin/env bash
# A private dockerd for lamina's Docker tests: its own data root, exec root, pid file and
# unix socket under one directory, no iptables, no bridge (tests use --network none).
#
#   .ci/dockerd.sh start DIR   start it (DIR is created), wait for it, import busybox:latest,
#                              print `export DOCKER_HOST=unix://DIR/docker.sock`
#   .ci/dockerd.sh stop DIR    stop it by the PID in DIR/dockerd.pid and remove DIR
#
# Sourced by .ci/run, which uses dockerd_start / dockerd_stop / dockerd_log_tail.
set -euo pipefail

_ci_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_repo_dir="$(dirname "$_ci_dir")"

dockerd_start() {
    local dir="$1"
    mkdir -p "$dir"
    # A stale socket from an earlier run would make `docker version` talk to nobody.
    rm -f "$dir/docker.sock"
    dockerd \
        --data-root "$dir/data" \
        --exec-root "$dir/exec" \
        --pidfile "$dir/dockerd.pid" \
        --host "unix://$dir/docker.sock" \
        --iptables=false --ip-masq=false --bridge=none \
        --storage-driver overlay2 \
        >"$dir/dockerd.log" 2>&1 &
    echo $! >"$dir/dockerd.launcher.pid"
    export DOCKER_HOST="unix://$dir/docker.sock"
    local waited=0
    until docker version >/dev/null 2>&1; do
        if ! kill -0 "$(cat "$dir/dockerd.launcher.pid")" 2>/dev/null; then
            echo "dockerd exited during startup" >&2
            dockerd_log_tail "$dir"
            return 1
        fi
        if [ "$waited" -ge 60 ]; then
            echo "dockerd did not answer within 60 s" >&2
            dockerd_log_tail "$dir"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    dockerd_import_busybox "$dir"
}

# Imports a busybox root filesystem as busybox:latest: lamina's own reproducible tar when
# the package is importable (so Docker and the embedded engine share the base diffID),
# else one built here from /bin/busybox.
dockerd_import_busybox() {
    local dir="$1" tar="$1/busybox-rootfs.tar"
    local py="$_repo_dir/.venv/bin/python"
    if [ -x "$py" ] && "$py" -c "import sys; from pathlib import Path; from lamina.core.demo.busybox import busybox_rootfs_tar; busybox_rootfs_tar(Path(sys.argv[1]))" "$tar" 2>/dev/null; then
        :
    else
        local root="$dir/busybox-root"
        rm -rf "$root"
        mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tmp"
        chmod 1777 "$root/tmp"
        cp /bin/busybox "$root/bin/busybox"
        local applet
        for applet in $(/bin/busybox --list); do
            [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
        done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
        tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$tar" .
        rm -rf "$root"
    fi
    docker import --change 'CMD ["sh"]' "$tar" busybox:latest >/dev/null
    echo "imported busybox:latest into the private dockerd" >&2
}

dockerd_log_tail() {
    local dir="$1"
    if [ -f "$dir/dockerd.log" ]; then
        echo "---- last lines of $dir/dockerd.log ----" >&2
        tail -n 40 "$dir/dockerd.log" >&2
    fi
}

dockerd_stop() {
    local dir="$1" pid=""
    if [ -f "$dir/dockerd.pid" ]; then
        pid="$(cat "$dir/dockerd.pid")"
    elif [ -f "$dir/dockerd.launcher.pid" ]; then
        pid="$(cat "$dir/dockerd.launcher.pid")"
    fi
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        local waited=0
        while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 30 ]; do
            sleep 1
            waited=$((waited + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "dockerd $pid ignored TERM for 30 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    # Overlay mounts left by a killed daemon would make the removal fail.
    if [ -d "$dir" ]; then
        local mounts
        mounts="$(grep -o " $dir/[^ ]*" /proc/self/mounts 2>/dev/null | sort -r || true)"
        for mnt in $mounts; do
            umount -l "$mnt" 2>/dev/null || true
        done
        rm -rf "$dir" 2>/dev/null || echo "could not remove $dir entirely" >&2
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case "${1:-}" in
    start)
        dockerd_start "${2:?usage: $0 start DIR}"
        echo "export DOCKER_HOST=unix://$2/docker.sock"
        ;;
    stop) dockerd_stop "${2:?usage: $0 stop DIR}" ;;
    *)
        echo "usage: $0 start|stop DIR" >&2
        exit 2
        ;;
    esac
fi
