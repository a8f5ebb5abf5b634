#!/usr/bin/env bash
# Builds the unsandbox container image described by the recipe folder
# images/NAME/ (see images/README.md) and imports it into the local LXD as
# unsandbox-NAME. An image already imported from the same recipe (same
# recipe hash) is kept and the build skipped, unless --force is given.
# Run as root on a host prepared by images/lxd-host.sh.
#
# When the recipe has a `versions` file (lines "<language><TAB><command>"),
# each command is run inside the image root once the packages are installed,
# and the first line it prints is recorded in the image properties as
# unsandbox.version.<language>. Long steps print their progress every 10 s.
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

mapfile -t packages < <(sed -e 's/#.*//' "$recipe/packages" | tr -s '[:blank:]' '\n' | sed '/^$/d')

# versions: "<language><TAB><command>" lines; blank lines and lines starting
# with '#' are ignored.
version_names=()
version_cmds=()
if [[ -f $recipe/versions ]]; then
    line_no=0
    while IFS= read -r line || [[ -n $line ]]; do
        line_no=$((line_no + 1))
        [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
        [[ $line == *$'\t'* ]] || die "$name/versions line $line_no: expected <language><TAB><command>"
        lang=${line%%$'\t'*}
        cmd=${line#*$'\t'}
        cmd=${cmd#"${cmd%%[![:space:]]*}"}
        [[ $lang =~ ^[a-z0-9][a-z0-9+#._-]*$ ]] ||
            die "$name/versions line $line_no: bad language name '$lang'"
        [[ -n $cmd ]] || die "$name/versions line $line_no: no command for $lang"
        for seen in "${version_names[@]}"; do
            [[ $seen != "$lang" ]] || die "$name/versions line $line_no: $lang is listed twice"
        done
        version_names+=("$lang")
        version_cmds+=("$cmd")
    done <"$recipe/versions"
fi

start=$SECONDS
# Numbered steps with the elapsed time; `note` prints progress within a step.
total_steps=7
((${#packages[@]} == 0)) || total_steps=$((total_steps + 2))
[[ ! -f $recipe/setup.sh ]] || total_steps=$((total_steps + 1))
((${#version_names[@]} == 0)) || total_steps=$((total_steps + 1))
step_no=0
say() { printf '[%4ds] %s\n' $((SECONDS - start)) "$*"; }
step() { step_no=$((step_no + 1)); say "$step_no/$total_steps $*"; }
note() { say "     $*"; }

# run_with_progress LOG PROGRESS CMD...: runs CMD with its output appended to
# LOG and calls the function PROGRESS (which prints one line, or nothing)
# every 10 seconds while CMD runs. Returns CMD's exit status.
bg_pid=""
run_with_progress() {
    local log=$1 progress=$2 ticks=0 rc=0
    shift 2
    "$@" >>"$log" 2>&1 </dev/null &
    bg_pid=$!
    while kill -0 "$bg_pid" 2>/dev/null; do
        sleep 1
        ticks=$((ticks + 1))
        if ((ticks % 10 == 0)) && kill -0 "$bg_pid" 2>/dev/null; then
            "$progress" || true
        fi
    done
    wait "$bg_pid" || rc=$?
    bg_pid=""
    return "$rc"
}

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
    say "waiting for another image build to finish"
    flock 9
fi

# Existing image --------------------------------------------------------------
old_fp=""
if lxc image info "$alias_name" >/dev/null 2>&1; then
    old_fp=$(lxc image info "$alias_name" | awk '$1 == "Fingerprint:" { print $2 }')
    old_hash=$(lxc image get-property "$alias_name" unsandbox.recipe-hash 2>/dev/null || true)
    if [[ $old_hash == "$recipe_hash" && $force -eq 0 ]]; then
        say "$alias_name is up to date (recipe hash ${recipe_hash:0:12}), build skipped; --force rebuilds"
        exit 0
    fi
    say "$alias_name exists (${old_fp:0:12}); it will be replaced"
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
    [[ -z $bg_pid ]] || { kill "$bg_pid" 2>/dev/null; wait "$bg_pid" 2>/dev/null || true; }
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

say "building $alias_name from $recipe (recipe hash ${recipe_hash:0:12}, mirror $mirror)"

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
    if ((${#packages[@]} <= 12)); then
        step "downloading ${#packages[@]} packages: ${packages[*]}"
    else
        step "downloading ${#packages[@]} packages (listed in $name/packages)"
    fi
    # What is missing from the package cache, and how many packages the
    # install brings in with their dependencies.
    in_root apt-get -q -y --print-uris install --no-install-recommends "${packages[@]}" \
        >"$work/apt-plan.log" 2>&1 || {
        tail -n 30 "$work/apt-plan.log" >&2
        die "apt-get cannot install these packages"
    }
    install_total=$(sed -nE 's/^[0-9]+ upgraded, ([0-9]+) newly installed.*/\1/p' "$work/apt-plan.log" | tail -n1)
    install_total=${install_total:-0}
    read -r fetch_count fetch_mib < <(
        awk '/^'\''[a-z]+:/ { n++; b += $3 } END { printf "%d %d\n", n, b / 1048576 }' "$work/apt-plan.log")
    note "$install_total packages with dependencies; $fetch_count to download ($fetch_mib MiB), the rest cached"
    download_progress() {
        note "downloaded $(grep -c '^Get:' "$work/apt-install.log" || true) of $fetch_count"
    }
    : >"$work/apt-install.log"
    run_with_progress "$work/apt-install.log" download_progress \
        in_root apt-get -q -y --download-only install --no-install-recommends "${packages[@]}" || {
        tail -n 30 "$work/apt-install.log" >&2
        die "downloading packages failed"
    }

    step "installing $install_total packages"
    install_progress() {
        note "unpacked $(grep -c '^Unpacking ' "$work/apt-install.log" || true) of $install_total," \
            "set up $(grep -c '^Setting up ' "$work/apt-install.log" || true)"
    }
    : >"$work/apt-install.log"
    run_with_progress "$work/apt-install.log" install_progress \
        in_root apt-get -q -y install --no-install-recommends "${packages[@]}" || {
        tail -n 30 "$work/apt-install.log" >&2
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

# 4. Toolchain versions ---------------------------------------------------------
# Each command runs inside the root with HOME=/tmp (emptied below) and no
# network use intended; its first non-empty output line, trimmed, is the
# version. Every command is tried before a failure stops the build.
version_props=""
if ((${#version_names[@]})); then
    step "reading ${#version_names[@]} toolchain versions"
    version_failures=0
    version_summary=""
    for i in "${!version_names[@]}"; do
        lang=${version_names[$i]}
        cmd=${version_cmds[$i]}
        rc=0
        out=$(timeout 300 chroot "$rootfs" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin \
            HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 /bin/sh -c "$cmd" </dev/null 2>&1) || rc=$?
        version=$(printf '%s\n' "$out" | tr -d '\000-\010\013-\037\177' |
            sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' | sed -n '/./{p;q;}')
        if ((rc != 0)) || [[ -z $version ]]; then
            version_failures=$((version_failures + 1))
            printf 'build: version of %s: command failed (exit %d) or printed nothing: %s\n' \
                "$lang" "$rc" "$cmd" >&2
            printf '%s\n' "$out" | head -n 5 | sed 's/^/    | /' >&2
            continue
        fi
        # YAML double-quoted scalar: escape backslashes and double quotes.
        quoted=${version//\\/\\\\}
        quoted=${quoted//\"/\\\"}
        version_props+="  \"unsandbox.version.$lang\": \"$quoted\""$'\n'
        # The summary: a few entries per line.
        entry="$lang $version"
        if [[ -n $version_summary ]] && ((${#version_summary} + ${#entry} > 90)); then
            note "$version_summary"
            version_summary=""
        fi
        version_summary+="${version_summary:+, }$entry"
    done
    [[ -z $version_summary ]] || note "$version_summary"
    ((version_failures == 0)) ||
        die "$version_failures of ${#version_names[@]} version commands of $name/versions failed"
fi

# 5. Common finish --------------------------------------------------------------
step "finishing (init, runner user, permissions, cleanup)"
unmount_all
rm -f "$rootfs/etc/apt/apt.conf.d/99unsandbox-build" "$rootfs/etc/dpkg/dpkg.cfg.d/unsandbox-build"
mkdir "$rootfs/root/unsandbox-common"
cp -a "$IMAGES_DIR/common/." "$rootfs/root/unsandbox-common/"
in_root /bin/sh -e /root/unsandbox-common/finalize.sh /root/unsandbox-common \
    >"$work/finalize.log" 2>&1 || {
    tail -n 30 "$work/finalize.log" >&2
    die "finalize failed"
}
# Its routine permission fixes, counted; anything else it says, as is.
note "took the world-write bit off $(grep -c '^finalize: removed world-write bit' "$work/finalize.log" || true)" \
    "paths, setuid/setgid bits off $(grep -c '^finalize: removed setuid/setgid bit' "$work/finalize.log" || true) files"
grep -v '^finalize: removed \(world-write\|setuid/setgid\) bit' "$work/finalize.log" | sed 's/^/       /' || true
rm -rf "$rootfs/root/unsandbox-common"
find "$rootfs/tmp" -mindepth 1 -delete
rootfs_mib=$(du -sm --one-file-system "$rootfs" | cut -f1)

# 6. Pack and import ------------------------------------------------------------
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
printf '%s' "$version_props" >>"$work/metadata.yaml"
tar -C "$work" -czf "$work/meta.tar.gz" metadata.yaml
# Progress: how much of the root tar has read (its read counter in /proc),
# and how much compressed output there is so far.
rootfs_bytes=$(du -sb --one-file-system "$rootfs" | cut -f1)
pack_progress() {
    local read_bytes
    read_bytes=$(awk '$1 == "rchar:" { print $2 }' "/proc/$bg_pid/io" 2>/dev/null) || read_bytes=""
    if [[ -n $read_bytes ]] && ((rootfs_bytes > 0)); then
        ((read_bytes <= rootfs_bytes)) || read_bytes=$rootfs_bytes
        note "read $((read_bytes / 1048576)) of $((rootfs_bytes / 1048576)) MiB of files" \
            "($((read_bytes * 100 / rootfs_bytes))%), $(($(stat -c %s "$work/rootfs.tar.gz") / 1048576)) MiB written"
    else
        note "$(($(stat -c %s "$work/rootfs.tar.gz") / 1048576)) MiB written"
    fi
}
: >"$work/tar.log"
run_with_progress "$work/tar.log" pack_progress \
    tar -C "$rootfs" --numeric-owner --xattrs --xattrs-include='*' --one-file-system \
    -czf "$work/rootfs.tar.gz" . || {
    tail -n 30 "$work/tar.log" >&2
    die "packing the root failed"
}
fp=$(cat "$work/meta.tar.gz" "$work/rootfs.tar.gz" | sha256sum | cut -d' ' -f1)
compressed_mib=$(du -m "$work/rootfs.tar.gz" | cut -f1)

step "importing into LXD (${compressed_mib} MiB compressed, ${fp:0:12})"
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
        note "deleted the previous image ${old_fp:0:12}"
    fi
fi
say "done: $alias_name -> ${fp:0:12} (rootfs ${rootfs_mib} MiB, ${compressed_mib} MiB compressed, $((SECONDS - start)) s)"
