#!/usr/bin/env bash
# The kernel tier: boot a real cgroup v2 kernel and run tests/kernel (a real
# daemon's limits, enforced by the kernel) and tests/integration/test_isolation.py (namespaces and
# root filesystems, as root) inside it.
#
# Uses virtme-ng (vng) with Debian's kernel under QEMU, without KVM (KVM hangs
# on this kind of machine). The host's file system is shared read-only over
# 9p, so the project's .venv runs inside the VM as it is; /dev/vda is a scratch
# disk for the io.max tests; the results come back through an --rwdir.
#
# Installs what it needs when missing (as root): qemu-system-x86,
# linux-image-amd64 and busybox-static from Debian, virtme-ng from PyPI into
# the project's venv.
#
# Exit status: pytest's inside the VM (0 = all passed). 77 when the machine
# cannot boot the VM at all (printed as "KERNEL TIER SKIPPED: <reason>");
# with RUND_KERNEL_ALLOW_SKIP=1 that case exits 0 instead.
#
# Environment: VENV (default <repo>/.venv), RUND_KERNEL_IMAGE (a vmlinuz to
# boot; default the newest /boot/vmlinuz-*), RUND_KERNEL_TIMEOUT (seconds for
# boot + run, default 900). Extra arguments go to pytest, e.g. -k cpu.
set -euo pipefail

SKIP_CODE=77
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
TIMEOUT=${RUND_KERNEL_TIMEOUT:-900}
say() { printf '[test-kernel] %s\n' "$*" >&2; }

skip() {
    printf '\n%s\n' "=================================================================" >&2
    printf 'KERNEL TIER SKIPPED: %s\n' "$*" >&2
    printf '%s\n\n' "=================================================================" >&2
    if [[ ${RUND_KERNEL_ALLOW_SKIP:-0} == 1 ]]; then exit 0; fi
    exit "$SKIP_CODE"
}

[[ $(uname -s) == Linux ]] || skip "not Linux"
[[ $(uname -m) == x86_64 ]] || skip "not x86_64 ($(uname -m))"
[[ -x $VENV/bin/python ]] || skip "no virtualenv at $VENV"

# --- what the VM needs ------------------------------------------------------

need_apt=()
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
compgen -G '/boot/vmlinuz-*' >/dev/null || need_apt+=(linux-image-amd64)
[[ -x /bin/busybox || -x /usr/bin/busybox ]] || need_apt+=(busybox-static)
if ((${#need_apt[@]})); then
    [[ $(id -u) == 0 ]] || skip "missing ${need_apt[*]} and not root to install them"
    command -v apt-get >/dev/null || skip "missing ${need_apt[*]} and no apt-get"
    say "installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -q >&2 || skip "apt-get update failed"
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need_apt[@]}" >&2 \
        || skip "apt-get install ${need_apt[*]} failed"
fi
if [[ ! -x $VENV/bin/vng ]]; then
    say "installing virtme-ng into $VENV"
    "$VENV/bin/python" -m pip install -q virtme-ng >&2 || skip "pip install virtme-ng failed"
fi

KERNEL=${RUND_KERNEL_IMAGE:-$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
[[ -n $KERNEL && -r $KERNEL ]] || skip "no readable kernel image (/boot/vmlinuz-*)"

# --- boot and run -------------------------------------------------------------

WORK=$(mktemp -d /tmp/rund-kernel-tier.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
RESULTS=$WORK/results
mkdir -p "$RESULTS"
truncate -s 64M "$WORK/disk.img"

# The command inside the guest. It writes a start marker (the VM booted and
# ran us), pytest's exit status, and its output to the shared results dir:
# vng does not always propagate the guest's exit status.
pytest_args=""
for a in "$@"; do pytest_args+=" $(printf '%q' "$a")"; done
cat >"$RESULTS/guest.sh" <<EOF
#!/bin/bash
date +%s > $RESULTS/started
cd $ROOT
# Python under emulation is slow to import: load only the plugin the tests use.
export RUND_KERNEL_TIER=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 PYTHONPATH=$RESULTS/stubs
$VENV/bin/python -m pytest -p pytest_trio.plugin -p no:cacheprovider \
    tests/kernel tests/integration/test_isolation.py tests/escape -q -rfEsP$pytest_args \
    2>&1 | tee $RESULTS/pytest.log
echo \${PIPESTATUS[0]} > $RESULTS/exit_code
date +%s > $RESULTS/finished
EOF
chmod +x "$RESULTS/guest.sh"
# pytest-trio imports Hypothesis when it is installed, which costs tens of
# seconds under emulation; the kernel tests do not use it, so hide it there.
mkdir -p "$RESULTS/stubs/hypothesis"
echo 'raise ImportError("hidden in the kernel tier")' >"$RESULTS/stubs/hypothesis/__init__.py"

START=$(date +%s)
say "booting $KERNEL (no KVM; 2 CPUs, 1 GiB, 64 MiB scratch disk)"
set +e
PATH=$VENV/bin:$PATH timeout "$TIMEOUT" "$VENV/bin/vng" --disable-kvm \
    --run "$KERNEL" --memory 1G --cpus 2 \
    --disk "$WORK/disk.img" --rwdir "$RESULTS" \
    --exec "$RESULTS/guest.sh" </dev/null >"$WORK/vng.log" 2>&1
vng_status=$?
set -e
END=$(date +%s)

if [[ ! -f $RESULTS/started ]]; then
    tail -n 40 "$WORK/vng.log" >&2
    if [[ $vng_status == 124 ]]; then
        skip "the VM did not start within ${TIMEOUT}s (vng timed out)"
    fi
    skip "the VM did not boot (vng exit status $vng_status; its output is above)"
fi
[[ -f $RESULTS/pytest.log ]] && cat "$RESULTS/pytest.log"
if [[ ! -f $RESULTS/exit_code ]]; then
    tail -n 40 "$WORK/vng.log" >&2
    say "FAILED: the run inside the VM did not finish (vng exit status $vng_status)"
    exit 1
fi
status=$(<"$RESULTS/exit_code")
BOOTED=$(<"$RESULTS/started")
FINISHED=$(<"$RESULTS/finished")
say "kernel tier: pytest exit status $status; boot $((BOOTED - START))s," \
    "pytest $((FINISHED - BOOTED))s, power-off $((END - FINISHED))s (total $((END - START))s)"
exit "$status"
