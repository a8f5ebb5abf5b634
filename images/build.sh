#!/usr/bin/env bash
# Builds the unsandbox container image described by the recipe folder
# images/NAME/ (see images/README.md) and imports it into the local LXD as
# unsandbox-NAME. An image already imported from the same recipe (same
# recipe hash) is kept and the build skipped, unless --force is given.
# Run as root on a host prepared by images/lxd-host.sh.
#
# Usage: images/build.sh NAME [--force]
#
# Environment:
#   UNSANDBOX_IMAGE_ALIAS    alias to import under (default: unsandbox-NAME)
#   UNSANDBOX_DEBIAN_MIRROR  Debian mirror URL (default: the one this
#                            machine's apt sources use, else deb.debian.org)
set -euo pipefail

SUITE=bookworm
CACHE=/var/cache/unsandbox
IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

usage() { echo "usage: $0 NAME [--force]" >&2; exit 2; }
die() { printf 'build: error: %s\n' "$*" >&2; exit 1; }

name=""
force=0
for arg in "$@"; do
    case $arg in
        --force) force=1 ;;
        -h | --help) usage ;;
        -*) usage ;;
        *) [[ -z $name ]] || usage; name=$arg ;;
    esac
done
[[ -n $name ]] || usage
[[ $name =~ ^[a-z0-9][a-z0-9-]*$ && $name != common ]] ||
    die "bad image name '$name' (lowercase letters, digits and '-')"
recipe="$IMAGES_DIR/$name"
[[ -f $recipe/packages ]] || die "no recipe: $recipe/packages is missing"
[[ $(id -u) -eq 0 ]] || die "must run as root"
alias_name="${UNSANDBOX_IMAGE_ALIAS:-unsandbox-$name}"

start=$SECONDS
step() { printf '[%4ds] %s\n' $((SECONDS - start)) "$*"; }

# Recipe hash: every file of the recipe folder and of common/, and this
# script, with their paths relative to images/.
recipe_hash=$(
    cd "$IMAGES_DIR"
    {
        find "$name" common -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        sha256sum build.sh
    } | sha256sum | cut -d' ' -f1
)

# One build at a time on this machine (they share the package caches).
mkdir -p "$CACHE/build" "$CACHE/debootstrap" "$CACHE/apt-archives/partial"
exec 9>"$CACHE/build.lock"
if ! flock -n 9; then
    step "waiting for another image build to finish"
    flock 9
fi

# Existing image --------------------------------------------------------------
old_fp=""
if lxc image info "$alias_name" >/dev/null 2>&1; then
    old_fp=$(lxc image info "$alias_name" | awk '$1 == "Fingerprint:" { print $2 }')
    old_hash=$(lxc image get-property "$alias_name" unsandbox.recipe-hash 2>/dev/null || true)
    if [[ $old_hash == "$recipe_hash" && $force -eq 0 ]]; then
        step "$alias_name is up to date (recipe hash ${recipe_hash:0:12}), build skipped; --force rebuilds"
        exit 0
    fi
    step "$alias_name exists (${old_fp:0:12}); it will be replaced"
fi

# Mirrors: the ones this machine's apt uses ------------------------------------
host_apt_uris() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        sed -nE 's/^[[:space:]]*URIs:[[:space:]]*//p' "$f" | tr -s '[:blank:]' '\n'
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        sed -nE 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' "$f"
    done
}
uris=$(host_apt_uris)
mirror=${UNSANDBOX_DEBIAN_MIRROR:-$(grep -E '^https?://[^ ]*/debian/?$' <<<"$uris" | head -n1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}
security=$(grep -E '^https?://[^ ]*/debian-security/?$' <<<"$uris" | head -n1 || true)
security=${security%/}

# Work area, always cleaned up --------------------------------------------------
work=$(mktemp -d "$CACHE/build/$name.XXXXXX")
rootfs="$work/rootfs"

unmount_all() {
    local mnt
    # Deepest first.
    awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r mnt; do umount "$mnt" || umount -l "$mnt" || true; done
}
cleanup() {
    unmount_all
    if awk -v w="$work/" 'index($2, w) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        echo "build: warning: mounts remain under $work; not removing it" >&2
    else
        rm -rf --one-file-system "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_root() {
    chroot "$rootfs" /usr/bin/env -i PATH="$CHROOT_PATH" HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

step "building $alias_name from $recipe (recipe hash ${recipe_hash:0:12}, mirror $mirror)"

# 1. Base system ----------------------------------------------------------------
step "debootstrap --variant=minbase $SUITE"
debootstrap --variant=minbase --cache-dir="$CACHE/debootstrap" "$SUITE" "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    die "debootstrap failed"
}

# 2. Packages -------------------------------------------------------------------
step "configuring apt"
{
    echo "deb $mirror $SUITE main"
    echo "deb $mirror $SUITE-updates main"
    [[ -z $security ]] || echo "deb $security $SUITE-security main"
} >"$rootfs/etc/apt/sources.list"
install -m 0644 "$IMAGES_DIR/common/dpkg-excludes" "$rootfs/etc/dpkg/dpkg.cfg.d/unsandbox"
# No daemon may start inside the build root.
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
# The build root is thrown away on failure: dpkg need not fsync.
echo force-unsafe-io >"$rootfs/etc/dpkg/dpkg.cfg.d/unsandbox-build"
cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
# Same archive-metadata freshness policy as this machine's own apt.
valid_until=$(apt-config dump Acquire::Check-Valid-Until | sed -nE 's/^Acquire::Check-Valid-Until "(.*)";$/\1/p')
if [[ $valid_until == false ]]; then
    echo 'Acquire::Check-Valid-Until "false";' >"$rootfs/etc/apt/apt.conf.d/99unsandbox-build"
fi
mount -t proc proc "$rootfs/proc"
mount --bind "$CACHE/apt-archives" "$rootfs/var/cache/apt/archives"

mapfile -t packages < <(sed -e 's/#.*//' "$recipe/packages" | tr -s '[:blank:]' '\n' | sed '/^$/d')
step "apt-get update"
in_root apt-get -q update >"$work/apt.log" 2>&1 || {
    tail -n 30 "$work/apt.log" >&2
    die "apt-get update failed"
}
step "apt-get upgrade"
in_root apt-get -q -y upgrade >>"$work/apt.log" 2>&1 || {
    tail -n 30 "$work/apt.log" >&2
    die "apt-get upgrade failed"
}
if ((${#packages[@]})); then
    step "installing ${#packages[@]} packages: ${packages[*]}"
    in_root apt-get -q -y install --no-install-recommends "${packages[@]}" >>"$work/apt.log" 2>&1 || {
        tail -n 30 "$work/apt.log" >&2
        die "apt-get install failed"
    }
fi
in_root apt-get -q autoclean >>"$work/apt.log" 2>&1 || true

# 3. Recipe setup ---------------------------------------------------------------
if [[ -f $recipe/setup.sh ]]; then
    step "running $name/setup.sh"
    install -m 0755 "$recipe/setup.sh" "$rootfs/root/unsandbox-setup.sh"
    in_root /bin/bash -e /root/unsandbox-setup.sh || die "$name/setup.sh failed"
    rm -f "$rootfs/root/unsandbox-setup.sh"
fi

# 4. Common finish --------------------------------------------------------------
step "finishing (init, runner user, permissions, cleanup)"
unmount_all
rm -f "$rootfs/etc/apt/apt.conf.d/99unsandbox-build" "$rootfs/etc/dpkg/dpkg.cfg.d/unsandbox-build"
mkdir "$rootfs/root/unsandbox-common"
cp -a "$IMAGES_DIR/common/." "$rootfs/root/unsandbox-common/"
in_root /bin/sh -e /root/unsandbox-common/finalize.sh /root/unsandbox-common || die "finalize failed"
rm -rf "$rootfs/root/unsandbox-common"
find "$rootfs/tmp" -mindepth 1 -delete
rootfs_mib=$(du -sm --one-file-system "$rootfs" | cut -f1)

# 5. Pack and import ------------------------------------------------------------
step "packing (rootfs ${rootfs_mib} MiB)"
cat >"$work/metadata.yaml" <<EOF
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  os: debian
  release: $SUITE
  architecture: $(uname -m)
  description: "unsandbox $name (Debian $SUITE, built $(date -u +%Y-%m-%d))"
  unsandbox.recipe: "$name"
  unsandbox.recipe-hash: "$recipe_hash"
EOF
tar -C "$work" -czf "$work/meta.tar.gz" metadata.yaml
tar -C "$rootfs" --numeric-owner --xattrs --xattrs-include='*' --one-file-system \
    -czf "$work/rootfs.tar.gz" .
fp=$(cat "$work/meta.tar.gz" "$work/rootfs.tar.gz" | sha256sum | cut -d' ' -f1)

step "importing into LXD ($(du -m "$work/rootfs.tar.gz" | cut -f1) MiB compressed, ${fp:0:12})"
if [[ -z $old_fp ]]; then
    lxc image import "$work/meta.tar.gz" "$work/rootfs.tar.gz" --alias "$alias_name" >/dev/null
else
    lxc image info "$fp" >/dev/null 2>&1 ||
        lxc image import "$work/meta.tar.gz" "$work/rootfs.tar.gz" >/dev/null
    # Point the alias at the new image in one step: no moment without it.
    lxc query -X PUT "/1.0/images/aliases/$alias_name" \
        -d "{\"target\": \"$fp\", \"description\": \"unsandbox $name\"}" >/dev/null
    if [[ $old_fp != "$fp" && -z $(lxc image list "$old_fp" --format csv -c l) ]]; then
        lxc image delete "$old_fp"
        step "deleted the previous image ${old_fp:0:12}"
    fi
fi
step "done: $alias_name -> ${fp:0:12} (rootfs ${rootfs_mib} MiB)"
