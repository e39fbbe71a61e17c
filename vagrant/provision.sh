#!/usr/bin/env bash
# Prepares a test VM for graphdriver (run as root by Vagrant's shell provisioner).
# Usage: provision.sh ubuntu-focal|debian-bookworm
#   ubuntu-focal:    Ubuntu's 5.4 kernel has aufs as a module (linux-modules-extra); aufs-tools brings
#                    auplink; Python 3.11 comes from the deadsnakes PPA (focal's own python3 is 3.8).
#   debian-bookworm: a stock kernel without aufs; the system Python is 3.11.
# The project's virtualenv is made with that Python at $GRAPHDRIVER_VENV; ci/test then reuses it.
set -euo pipefail
flavour=${1:?usage: provision.sh ubuntu-focal|debian-bookworm}
venv=/opt/graphdriver-venv
export DEBIAN_FRONTEND=noninteractive

apt-get update -qq
case "$flavour" in
  ubuntu-focal)
    apt-get install -y -qq software-properties-common gcc tar rsync aufs-tools \
      "linux-modules-extra-$(uname -r)" >/dev/null
    add-apt-repository -y ppa:deadsnakes/ppa >/dev/null
    apt-get update -qq
    apt-get install -y -qq python3.11 python3.11-venv >/dev/null
    python=python3.11
    modprobe aufs
    if ! grep -qw aufs /proc/filesystems; then
      echo "provision: kernel $(uname -r) has no aufs even after modprobe; this VM exists to test aufs" >&2
      exit 1
    fi
    echo aufs > /etc/modules-load.d/graphdriver-aufs.conf
    ;;
  debian-bookworm)
    apt-get install -y -qq python3 python3-venv gcc tar rsync >/dev/null
    python=python3
    ;;
  *)
    echo "provision: unknown flavour $flavour" >&2
    exit 2
    ;;
esac

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" --version
echo "kernel $(uname -r); filesystems: $(awk '{print $NF}' /proc/filesystems | grep -E '^(aufs|overlay)$' | xargs)"
