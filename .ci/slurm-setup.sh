#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests/workflow/test_slurm.py (see docs/slurm.md).
#
#   sudo .ci/slurm-setup.sh        # or as root in CI; idempotent: a second run changes nothing
#
# Installs slurm-wlm + munge (Debian/Ubuntu) when missing, writes /etc/slurm/slurm.conf and gres.conf
# for this host (CPUs and memory from `slurmd -C`, two fake GPUs: placeholder character devices), creates a
# munge key when there is none, starts munged, slurmctld and slurmd as plain daemons (no systemd
# needed) and waits until `sinfo` shows the node idle. A changed configuration restarts the daemons.
#
# No accounting database (AccountingStorageType=accounting_storage/none): `sacct` cannot report jobs,
# so Snakemake must poll with `squeue`; MinJobAge keeps finished jobs visible to squeue long enough.
#
# Environment: SLURM_SETUP_TIMEOUT (seconds to wait for the node, default 120).
set -euo pipefail

TIMEOUT=${SLURM_SETUP_TIMEOUT:-120}
CONF_DIR=/etc/slurm
STATE_DIR=/var/lib/slurm
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
FAKE_GPUS=(/dev/fakegpu0 /dev/fakegpu1)

log() { printf 'slurm-setup: %s\n' "$*"; }
die() { printf 'slurm-setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts daemons)"

# 1. Packages.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
id slurm >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin slurm
id munge >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin munge

# 2. Munge key and daemon.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge
install -d -o munge -g munge -m 0755 /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
    log "starting munged"
    rm -f /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
    munge_ok || die "munged does not answer (see /var/log/munge/munged.log)"
fi

# 3. Configuration for this host.
NODE=$(hostname -s)
getent hosts "$NODE" >/dev/null || die "the host name '$NODE' does not resolve (add it to /etc/hosts)"
HW=$(slurmd -C | sed -n 1p)  # NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$HW"; }
CPUS=$(field CPUs); SOCKETS=$(field SocketsPerBoard); CORES=$(field CoresPerSocket); THREADS=$(field ThreadsPerCore)
MEM=$(field RealMemory)
[ -n "$CPUS" ] || CPUS=$(nproc)
[ -n "$MEM" ] || MEM=$(free -m | awk '/^Mem:/ {print $2}')
TOPOLOGY=""
if [ -n "$SOCKETS" ] && [ -n "$CORES" ] && [ -n "$THREADS" ]; then
    TOPOLOGY="Sockets=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS"
fi
MEM=$((MEM * 95 / 100))  # leave a little to the system; slurmd refuses a node with more than it finds

install -d -m 0755 "$CONF_DIR"
install -d -o slurm -g slurm -m 0755 "$STATE_DIR" "$STATE_DIR/slurmctld" "$LOG_DIR" "$RUN_DIR"
install -d -m 0755 "$STATE_DIR/slurmd"
# Placeholder GPUs: character devices with /dev/null's numbers (slurmd wants character devices).
changed=0
for gpu in "${FAKE_GPUS[@]}"; do
    [ -c "$gpu" ] && continue
    rm -f "$gpu"
    mknod -m 0666 "$gpu" c 1 3
    changed=1  # slurmd reads the devices when it starts
done

new_conf=$(mktemp); new_gres=$(mktemp)
trap 'rm -f "$new_conf" "$new_gres"' EXIT
cat >"$new_conf" <<EOF
# Written by .ci/slurm-setup.sh: a single-node test cluster (do not edit; rerun the script instead).
ClusterName=pipeline-test
SlurmctldHost=$NODE
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
GresTypes=gpu
ReturnToService=2
# No accounting: Snakemake polls squeue, which sees a finished job for MinJobAge seconds.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldTimeout=60
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
# A requeued job waits cred_expire + 1 s before it may start again (default 120 s); the requeue tests
# need less. Still far longer than a step launch takes on one node.
AuthInfo=cred_expire=30
NodeName=$NODE CPUs=$CPUS $TOPOLOGY RealMemory=$MEM Gres=gpu:${#FAKE_GPUS[@]} State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
gpu_files=$(IFS=,; echo "${FAKE_GPUS[*]}")
cat >"$new_gres" <<EOF
# Written by .ci/slurm-setup.sh: fake GPUs (placeholder devices), enough for --gpus=N to schedule.
AutoDetect=off
NodeName=$NODE Name=gpu File=$gpu_files
EOF

for pair in "$new_conf:$CONF_DIR/slurm.conf" "$new_gres:$CONF_DIR/gres.conf"; do
    src=${pair%%:*}; dst=${pair#*:}
    if ! cmp -s "$src" "$dst"; then
        install -m 0644 "$src" "$dst"
        changed=1
        log "wrote $dst"
    fi
done
# Debian's cgroup.conf, if any, is not used with proctrack/linuxproc + task/none.

# 4. Daemons.
running() {  # running NAME PIDFILE: the pid file names a live process of that name
    local pid
    pid=$(cat "$2" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}
stop() {
    local pid
    running "$1" "$2" || return 0
    pid=$(cat "$2")
    log "stopping $1 ($pid): configuration changed"
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}
if [ "$changed" = 1 ]; then
    stop slurmd "$RUN_DIR/slurmd.pid"
    stop slurmctld "$RUN_DIR/slurmctld.pid"
fi
if ! running slurmctld "$RUN_DIR/slurmctld.pid"; then
    log "starting slurmctld"
    /usr/sbin/slurmctld
fi
if ! running slurmd "$RUN_DIR/slurmd.pid"; then
    log "starting slurmd"
    /usr/sbin/slurmd
fi

# 5. Wait for the node.
started=$SECONDS
deadline=$((SECONDS + TIMEOUT))
resumed=0
while :; do
    state=$(sinfo --noheader --nodes="$NODE" --format=%t 2>/dev/null | head -1 || true)
    case "$state" in
        idle | mix | alloc | comp) break ;;
        drain* | drng | down* | fail*)
            if [ "$resumed" = 0 ]; then
                log "node $NODE is '$state': resuming it"
                scontrol update NodeName="$NODE" State=RESUME || true
                resumed=1
            fi
            ;;
    esac
    if [ $((SECONDS - started)) -ge 5 ] \
        && { ! running slurmctld "$RUN_DIR/slurmctld.pid" || ! running slurmd "$RUN_DIR/slurmd.pid"; }; then
        tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
        die "slurmctld or slurmd stopped (logs above)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        sinfo -N -l >&2 || true
        tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
        die "node $NODE not up after ${TIMEOUT}s (state '${state:-unknown}')"
    fi
    sleep 1
done
log "node $NODE is $state: $(sinfo --noheader --nodes="$NODE" --format='%c CPUs, %m MB, %G')"
