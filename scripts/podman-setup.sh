#!/usr/bin/env bash
# Make podman usable on a fresh Debian bookworm machine (see ../shared/podman.md), idempotently:
#   1. apt-get install podman buildah runc debootstrap iptables (only what is missing);
#   2. write a containers.conf (runc, rlimits root may set here) to $CONTAINERS_CONF;
#   3. build the base image $BASE_IMAGE with debootstrap, once: skipped when the image exists.
# Needs root. Prints the containers.conf path last; use it as CONTAINERS_CONF for every podman call.
#   CONTAINERS_CONF  where to write containers.conf (default ~/.config/embed-appliance/containers.conf)
#   BASE_IMAGE       the base image's name (default localhost/localbase:bookworm)
#   DEBIAN_MIRROR    debootstrap's mirror (default http://deb.debian.org/debian)
set -euo pipefail

conf=${CONTAINERS_CONF:-${HOME:-/root}/.config/embed-appliance/containers.conf}
base_image=${BASE_IMAGE:-localhost/localbase:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { echo "podman-setup: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (it installs packages and runs debootstrap)"
    exit 1
fi

# 1. Packages (each command names the Debian package that ships it).
declare -A package_of=([podman]=podman [buildah]=buildah [runc]=runc [debootstrap]=debootstrap [iptables]=iptables)
missing=()
for cmd in "${!package_of[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${package_of[$cmd]}")
done
if (( ${#missing[@]} )); then
    command -v apt-get >/dev/null || { log "apt-get not found; install: ${missing[*]}"; exit 1; }
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. containers.conf: crun refuses this machine's hybrid cgroups, and podman's default rlimits are
#    above what root may set here.
mkdir -p "$(dirname "$conf")"
cat > "$conf.tmp" <<'CONF'
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]

[engine]
runtime = "runc"
CONF
mv "$conf.tmp" "$conf"
export CONTAINERS_CONF=$conf

# 3. The base image: no registry is reachable, so debootstrap one and import it (once).
if podman image exists "$base_image"; then
    log "$base_image exists; not rebuilt (podman rmi $base_image to force)"
else
    rootfs=$(mktemp -d /var/tmp/localbase.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap bookworm into $rootfs (1-2 min)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
    rm -f "$rootfs.log"
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/*
    tar --numeric-owner -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$base_image" >/dev/null
    log "imported $base_image ($(podman image inspect --format '{{.Size}}' "$base_image") bytes)"
fi
echo "$conf"
