#!/usr/bin/env bash
# Checks that the running LXD daemon has the CPU weight images/lxd-host.sh
# gives it (UNSANDBOX_LXD_CPU_WEIGHT, default 50): its cgroup's cpu.weight
# (v2), cpu.shares (v1, 1024 per 100), or its systemd unit's CPUWeight.
set -euo pipefail
want="${UNSANDBOX_LXD_CPU_WEIGHT:-50}"
pid=""
for p in $(pgrep -x lxd); do
    [[ $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) =~ \ (fork[a-z]*|callhook|waitready)\  ]] || { pid=$p; break; }
done
[[ -n $pid ]] || { echo "no LXD daemon is running" >&2; exit 1; }
unit=$(sed -n 's|^0::.*/\([^/]*\.service\)$|\1|p; s|^[0-9]*:name=systemd:.*/\([^/]*\.service\)$|\1|p' \
    "/proc/$pid/cgroup" | head -n 1)
if [[ -n $unit ]] && command -v systemctl >/dev/null; then
    got=$(systemctl show -p CPUWeight --value "$unit")
    where="systemd unit $unit"
elif [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    path=$(sed -n 's|^0::||p' "/proc/$pid/cgroup")
    got=$(cat "/sys/fs/cgroup$path/cpu.weight" 2>/dev/null || echo "none (cgroup $path)")
    where="cgroup v2 $path"
else
    path=$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ { print $3 }' "/proc/$pid/cgroup")
    shares=$(cat "/sys/fs/cgroup/cpu$path/cpu.shares")
    got=$(( shares * 100 / 1024 ))
    [[ $(( want * 1024 / 100 )) -eq $shares ]] && got=$want
    where="cgroup v1 cpu$path, cpu.shares $shares"
fi
if [[ $got != "$want" ]]; then
    echo "the LXD daemon (pid $pid) has CPU weight $got, not $want ($where)" >&2
    exit 1
fi
echo "the LXD daemon (pid $pid) has CPU weight $want ($where)"
