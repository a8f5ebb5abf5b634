#!/usr/bin/env bash
# Prepares this machine to run unsandbox containers: makes sure LXD is
# installed and its daemon is running (with lxcfs started first, so that a
# container's /proc/meminfo, /proc/cpuinfo and /proc/uptime show its own
# limits), and that a btrfs storage pool exists
# and backs the root disk of the `default` profile. Safe to run any number of
# times (also after a reboot, when only the daemon needs starting again).
# Run as root. Prints the LXD socket path at the end.
#
# Environment:
#   UNSANDBOX_STORAGE_POOL  storage pool name          (default: unsandbox)
#   UNSANDBOX_POOL_SIZE     size of the pool loop file (default: 30GiB)
set -euo pipefail

POOL="${UNSANDBOX_STORAGE_POOL:-unsandbox}"
POOL_SIZE="${UNSANDBOX_POOL_SIZE:-30GiB}"
LXD_DIR=/var/lib/lxd
SOCKET="$LXD_DIR/unix.socket"
LOG_DIR=/var/log/lxd
LXCFS_DIR=/var/lib/lxcfs
PACKAGES=(lxd lxd-client lxcfs btrfs-progs iptables debootstrap)

say() { printf 'lxd-host: %s\n' "$*"; }
die() { printf 'lxd-host: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root"

# 1. Packages -----------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "packages present"
fi

# 2. lxcfs, then the daemon ------------------------------------------------------
daemon_answers() { timeout 10 lxc query /1.0 >/dev/null 2>&1; }
lxcfs_listed() { awk -v d="$LXCFS_DIR" '$2 == d && $3 ~ /fuse/ { f = 1 } END { exit !f }' /proc/mounts; }
# Mounted and answering: a mount whose lxcfs process was killed stays listed
# but fails every read ("Transport endpoint is not connected").
lxcfs_mounted() { lxcfs_listed && timeout 5 cat "$LXCFS_DIR/proc/uptime" >/dev/null 2>&1; }

# LXD looks for lxcfs when it starts: lxcfs must be mounted first.
if lxcfs_mounted; then
    say "lxcfs already running"
else
    if lxcfs_listed; then
        say "removing a dead lxcfs mount"
        umount -l "$LXCFS_DIR" 2>/dev/null || fusermount -u -z "$LXCFS_DIR" 2>/dev/null || true
        if daemon_answers; then
            # Containers of this daemon would read /proc from the dead mount.
            say "restarting the LXD daemon, which started with the dead lxcfs"
            pkill -x lxd || true
            for _ in $(seq 100); do daemon_answers || break; sleep 0.1; done
        fi
    fi
    say "starting lxcfs"
    mkdir -p "$LOG_DIR" "$LXCFS_DIR"
    setsid -f nohup lxcfs "$LXCFS_DIR" </dev/null >>"$LOG_DIR/lxcfs.out" 2>&1
    for _ in $(seq 50); do lxcfs_mounted && break; sleep 0.1; done
    if lxcfs_mounted; then
        daemon_answers &&
            say "note: the LXD daemon started before lxcfs; restart it to give containers lxcfs's /proc files"
    else
        say "note: lxcfs did not mount (see $LOG_DIR/lxcfs.out); containers will see the host's /proc figures"
    fi
fi

if daemon_answers; then
    say "daemon already running"
else
    say "starting daemon"
    mkdir -p "$LOG_DIR"
    # Detached in its own session: it outlives this script and its shell.
    setsid -f nohup lxd --group root --logfile "$LOG_DIR/lxd.log" \
        </dev/null >>"$LOG_DIR/lxd.out" 2>&1
fi
lxd waitready --timeout 60 || die "daemon did not become ready (see $LOG_DIR/lxd.log)"
daemon_answers || die "daemon does not answer on $SOCKET"

# 3. Storage pool ---------------------------------------------------------------
if lxc storage show "$POOL" >/dev/null 2>&1; then
    driver=$(lxc storage show "$POOL" | awk '$1 == "driver:" { print $2 }')
    say "storage pool $POOL exists (driver ${driver:-unknown})"
else
    say "creating btrfs storage pool $POOL ($POOL_SIZE loop file)"
    lxc storage create "$POOL" btrfs size="$POOL_SIZE" >/dev/null
fi

# 4. Root disk of the default profile ------------------------------------------
root_device=""
while read -r dev; do
    [[ -n $dev ]] || continue
    if [[ $(lxc profile device get default "$dev" type 2>/dev/null) == disk &&
          $(lxc profile device get default "$dev" path 2>/dev/null) == / ]]; then
        root_device=$dev
        break
    fi
done < <(lxc profile device list default)

if [[ -z $root_device ]]; then
    say "adding root disk on pool $POOL to the default profile"
    lxc profile device add default root disk path=/ pool="$POOL" >/dev/null
else
    root_pool=$(lxc profile device get default "$root_device" pool)
    say "default profile root disk is on pool $root_pool"
    [[ $root_pool == "$POOL" ]] ||
        say "note: not on $POOL; the root disk was left as it is"
fi

say "ready"
echo "$SOCKET"
