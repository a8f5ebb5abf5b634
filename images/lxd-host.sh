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
#   UNSANDBOX_LXD_CPU_WEIGHT  the daemon's CPU weight, cgroup v2 units
#                           (1-10000; 100 is every other group's; default: 50)
#   UNSANDBOX_LXCFS_STOP_HOOK  `keep` leaves lxcfs's 0.5 s pause after every
#                           container stop in place (default: reboots only)
set -euo pipefail

POOL="${UNSANDBOX_STORAGE_POOL:-unsandbox}"
POOL_SIZE="${UNSANDBOX_POOL_SIZE:-30GiB}"
LXD_DIR=/var/lib/lxd
SOCKET="$LXD_DIR/unix.socket"
LOG_DIR=/var/log/lxd
LXCFS_DIR=/var/lib/lxcfs
CPU_WEIGHT="${UNSANDBOX_LXD_CPU_WEIGHT:-50}"
CGROUP=unsandbox-lxd
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

# 1b. lxcfs's stop hook ---------------------------------------------------------
# Debian's lxcfs adds a post-stop hook to every LXD container,
# /usr/share/lxcfs/lxc.reboot.hook, that sleeps 0.5 s after every stop, a
# reboot or not. unsandbox stops a container after each execution: that
# pause was most of a stop (0.5 s of 0.64) and held one of the agent's LXD
# operation slots, so refills waited behind it. The hook is diverted
# (dpkg-divert: a package upgrade updates the original, kept beside it) to
# one that runs the original after a reboot only (liblxc sets LXC_TARGET to
# reboot or stop). UNSANDBOX_LXCFS_STOP_HOOK=keep leaves it alone.
REBOOT_HOOK=/usr/share/lxcfs/lxc.reboot.hook
divert_reboot_hook() {
    local original="$REBOOT_HOOK.distrib"
    [[ -e $REBOOT_HOOK || -e $original ]] || return 0
    if [[ ${UNSANDBOX_LXCFS_STOP_HOOK:-} == keep ]]; then
        say "lxcfs stop hook left as it is (UNSANDBOX_LXCFS_STOP_HOOK=keep)"
        return 0
    fi
    if ! dpkg-divert --list "$REBOOT_HOOK" | grep -q .; then
        dpkg-divert --quiet --local --rename --divert "$original" --add "$REBOOT_HOOK"
    fi
    cat >"$REBOOT_HOOK.new" <<HOOK
#!/bin/sh
# Installed by unsandbox's images/lxd-host.sh in place of lxcfs's own hook
# ($original): that one runs after a reboot, not after every stop.
[ "\${LXC_TARGET:-}" = reboot ] || exit 0
exec $original "\$@"
HOOK
    chmod 0755 "$REBOOT_HOOK.new"
    mv "$REBOOT_HOOK.new" "$REBOOT_HOOK"
    say "lxcfs stop hook: pauses on a reboot only (original kept as $original)"
}
divert_reboot_hook

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

# 2b. The daemon's CPU weight ------------------------------------------------------
# LXD's lifecycle work (copying, starting, stopping and deleting containers,
# mostly forks of its own binary) competes with running executions for CPU.
# At the default weight two replacement launches can take both cores of a
# small host from the executions being served; at half of it they mostly use
# what executions leave idle (README, "Limits and known issues": the paced
# reuse row). Containers are not affected: liblxc puts each in a cgroup of its
# own (lxc.payload.*), outside the daemon's. The daemon's helpers started from
# now on (forkstart, forkexec, callhook) inherit it.
# The daemon: the oldest `lxd` process that is not one of its helpers.
lxd_pid() {
    local p args
    for p in $(pgrep -x lxd); do
        args=$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline") || continue
        # liblxc's monitors are named lxd too, with a rewritten command line.
        [[ $args =~ ^([^ ]*/)?lxd( |$) ]] || continue
        [[ $args =~ \ (fork[a-z]*|callhook|waitready)\  ]] || { echo "$p"; return 0; }
    done
    return 1
}
set_cpu_weight() {
    local pid unit cg shares
    [[ $CPU_WEIGHT =~ ^[0-9]+$ ]] && ((CPU_WEIGHT >= 1 && CPU_WEIGHT <= 10000)) ||
        die "UNSANDBOX_LXD_CPU_WEIGHT must be 1-10000, not '$CPU_WEIGHT'"
    pid=$(lxd_pid) || { say "note: no LXD daemon process found; CPU weight left as it is"; return; }
    # A daemon run by systemd: its unit's setting (kept across restarts).
    unit=$(sed -n 's|^0::.*/\([^/]*\.service\)$|\1|p; s|^[0-9]*:name=systemd:.*/\([^/]*\.service\)$|\1|p' \
        "/proc/$pid/cgroup" | head -n 1)
    if [[ -n $unit ]] && command -v systemctl >/dev/null; then
        if systemctl set-property "$unit" CPUWeight="$CPU_WEIGHT" 2>/dev/null; then
            say "daemon CPU weight $CPU_WEIGHT (systemd unit $unit)"
        else
            say "note: could not set CPUWeight on $unit; CPU weight left as it is"
        fi
        return
    fi
    if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
        # cgroup v2: a leaf under the root, with the cpu controller enabled.
        cg=/sys/fs/cgroup/$CGROUP
        grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control ||
            echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
        mkdir -p "$cg" 2>/dev/null &&
            echo "$CPU_WEIGHT" >"$cg/cpu.weight" 2>/dev/null &&
            echo "$pid" >"$cg/cgroup.procs" 2>/dev/null ||
            { say "note: could not place the daemon in $cg; CPU weight left as it is"; return; }
    elif [[ -f /sys/fs/cgroup/cpu/cpu.shares ]]; then
        # cgroup v1: cpu.shares, where 1024 is the default as 100 is in v2.
        cg=/sys/fs/cgroup/cpu/$CGROUP
        shares=$(( CPU_WEIGHT * 1024 / 100 ))
        ((shares >= 2)) || shares=2
        mkdir -p "$cg" 2>/dev/null &&
            echo "$shares" >"$cg/cpu.shares" 2>/dev/null &&
            echo "$pid" >"$cg/cgroup.procs" 2>/dev/null ||
            { say "note: could not place the daemon in $cg; CPU weight left as it is"; return; }
    else
        say "note: no cgroup cpu controller found; CPU weight left as it is"
        return
    fi
    say "daemon CPU weight $CPU_WEIGHT (cgroup $cg)"
}
set_cpu_weight

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

# 5. Log folders of projects that are gone ----------------------------------------
# LXD 5.0 keeps a log folder per instance in $LOG_DIR (`<project>_<name>`)
# and leaves it behind when it deletes the instance: about 12 KB for every
# container. unsandbox removes each of its own after the delete, and sweeps
# its project's leftovers; this removes those of projects that no longer
# exist (a test's, a removed install's), once quiet for 10 minutes.
sweep_logs() {
    local listing project dir base n=0
    local -A live=()
    listing=$(lxc project list -f csv 2>/dev/null) || return 0
    while IFS=, read -r project _; do
        [[ -n $project ]] && live[${project% (current)}]=1
    done <<<"$listing"
    ((${#live[@]})) || return 0
    while IFS= read -r dir; do
        base=${dir##*/}
        [[ -n ${live[${base%%_*}]:-} ]] && continue
        rm -rf -- "$dir" && n=$((n + 1))
    done < <(find "$LOG_DIR" -mindepth 1 -maxdepth 1 -type d -name '*_*' -mmin +10 2>/dev/null)
    ((n == 0)) || say "removed $n log folders of LXD projects that are gone"
}
sweep_logs

say "ready"
echo "$SOCKET"
