#!/bin/sh
# Final touches shared by every unsandbox image, run inside the image's root
# (as root) after its packages and its recipe's setup.sh:
#   - installs the unsandbox init as /sbin/init;
#   - adds the unprivileged user runner (uid/gid 1000, home /home/runner);
#   - takes the world-write bit off every directory and file except the
#     scratch mount points, so runner can write only to the size-capped tmpfs
#     mounts the init makes, and drops setuid/setgid bits;
#   - removes package lists, caches, logs, documentation and manuals;
#   - checks that the tools unsandbox relies on are present.
# Usage (inside the root): sh -e finalize.sh DIR  (DIR holds the common files)
set -eu

common=$1

# init ------------------------------------------------------------------------
install -m 0755 "$common/init" /sbin/init

# runner user -------------------------------------------------------------------
if ! getent group runner >/dev/null; then
    groupadd --gid 1000 runner
fi
if ! getent passwd runner >/dev/null; then
    useradd --uid 1000 --gid 1000 --home-dir /home/runner --no-create-home \
        --shell /bin/sh runner
fi
if [ "$(id -u runner)" != 1000 ] || [ "$(id -g runner)" != 1000 ]; then
    echo "finalize: user runner must be uid 1000 gid 1000, is $(id runner)" >&2
    exit 1
fi
mkdir -p /home/runner /tmp /var/tmp /run
chown 1000:1000 /home/runner
chmod 0700 /home/runner
chmod 1777 /tmp /var/tmp

# scratch mount points are the only world-writable places -----------------------
keep_dirs="/tmp /var/tmp /dev/shm /home/runner"
find / -xdev -type d -perm -0002 | while read -r dir; do
    case " $keep_dirs " in
        *" $dir "*) ;;
        *) chmod o-w "$dir" && echo "finalize: removed world-write bit from $dir" ;;
    esac
done
find / -xdev -type f -perm -0002 | while read -r file; do
    chmod o-w "$file" && echo "finalize: removed world-write bit from $file"
done
find / -xdev -type f -perm /6000 | while read -r file; do
    chmod ug-s "$file" && echo "finalize: removed setuid/setgid bit from $file"
done

# size ----------------------------------------------------------------------------
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
    /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/log/apt /var/log/*.log \
    /usr/share/man/* /usr/share/info/* /usr/share/lintian /usr/share/linda \
    /root/.cache /var/tmp/* /usr/sbin/policy-rc.d
find /usr/share/doc -mindepth 1 ! -name copyright ! -type d -exec rm -f {} +
find /usr/share/doc -mindepth 1 -depth -type d -empty -exec rmdir {} +
find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
rm -f /etc/resolv.conf
: >/etc/machine-id

# tools unsandbox relies on ---------------------------------------------------
for tool in sh setpriv head sleep mount; do
    command -v "$tool" >/dev/null || {
        echo "finalize: required tool missing from the image: $tool" >&2
        exit 1
    }
done
