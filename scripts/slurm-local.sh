#!/usr/bin/env bash
# Single-node Slurm "cluster" on localhost, for integration tests.
#   slurm-local.sh install            install slurm-wlm + munge via apt if missing
#   slurm-local.sh start <state-dir>  start munged, slurmctld, slurmd; last stdout
#                                     line is `export SLURM_CONF=<state-dir>/slurm.conf`
#   slurm-local.sh stop  <state-dir>  stop every process started for <state-dir>
# Env: SLURM_LOCAL_CTLD_PORT (16817), SLURM_LOCAL_SLURMD_PORT (16818).
# Runs as root, needs neither systemd nor cgroups. Exit status non-zero on failure.
set -euo pipefail

die() { echo "slurm-local: $*" >&2; exit 1; }

install() {
    local b missing=0
    for b in slurmctld slurmd sbatch munged; do command -v "$b" >/dev/null || missing=1; done
    [ "$missing" = 0 ] && return 0
    local pkgs=(slurm-wlm munge)
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${pkgs[@]}" \
        || { apt-get update && apt-get install -y --no-install-recommends "${pkgs[@]}"; }
    # The packages' postinst may start daemons where an init system exists; we run our own.
}

# Pids of this cluster's processes: those holding a file under $1 open (daemons
# via their logs, slurmstepd via slurmd.log) plus every process in their sessions
# (each daemon runs in its own session; each slurmstepd shares one with its job).
# The caller's own session is never included.
cluster_pids() {
    local p sids="" own
    own=$(ps -o sid= -p $$ | tr -d ' ')
    for p in $(find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 -lname "$1/*" 2>/dev/null | cut -d/ -f3 | sort -u); do
        sids="$sids $(ps -o sid= -p "$p" 2>/dev/null || true)"
    done
    ps -eo pid=,sid=,stat= | awk -v s="$sids" -v own="$own" \
        'BEGIN { n = split(s, a, " "); for (i = 1; i <= n; i++) if (a[i] != own) want[a[i]] = 1 }
         ($2 in want) && $3 !~ /^Z/ { print $1 }'
}

alive() { [[ "$(ps -o stat= -p "$1" 2>/dev/null)" =~ ^[^Z] ]]; }  # zombies count as dead

stop() {
    local dir pids p i
    dir=$(cd "$1" && pwd) || die "no state dir $1"
    export SLURM_CONF="$dir/slurm.conf"
    # If slurmctld is up, cancel all jobs first so slurmstepd kills their processes.
    p=$(cat "$dir/slurmctld.pid" 2>/dev/null || true)
    if [ -n "$p" ] && alive "$p" && timeout 10 scancel --user="$(id -un)" 2>/dev/null; then
        for i in $(seq 20); do [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
    fi
    # TERM the recorded daemons (if their command line still names $dir) and every
    # other process of the cluster; wait up to 10 s, then KILL whatever is left.
    pids="$(for p in $(cat "$dir/pids" 2>/dev/null || true); do
        grep -qaF -- "$dir/" "/proc/$p/cmdline" 2>/dev/null && echo "$p"; done) $(cluster_pids "$dir")"
    for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    for i in $(seq 20); do
        pids="$(for p in $pids; do alive "$p" && echo "$p"; done; cluster_pids "$dir")"
        [ -z "${pids//[[:space:]]/}" ] && return 0
        sleep 0.5
    done
    for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
    return 0
}

fail() {  # show the daemons' log tails, stop what was started, exit non-zero
    local f
    echo "slurm-local: $1" >&2
    for f in "$DIR"/munged.out "$DIR"/slurmctld.log "$DIR"/slurmd.log; do
        [ -f "$f" ] && { echo "--- tail $f" >&2; tail -n 25 "$f" >&2; }
    done
    stop "$DIR" || true
    exit 1
}

start() {
    mkdir -p "$1"
    DIR=$(cd "$1" && pwd)
    [ -e "$DIR/slurm.conf" ] && die "$DIR is not fresh (slurm.conf exists)"
    for b in slurmctld slurmd sinfo munged; do command -v "$b" >/dev/null || die "$b not installed (run: $0 install)"; done
    chmod 755 "$DIR"  # munged wants its socket dir reachable
    cd "$DIR"         # daemons keep this as their working directory
    mkdir -p "$DIR/state" "$DIR/spool"
    export SLURM_CONF="$DIR/slurm.conf"
    : >"$DIR/pids"
    trap 'fail "start interrupted"' INT TERM
    trap 'fail "start failed at line $LINENO"' ERR

    # munge: private key, socket and files in the state dir; --force because we are root.
    if command -v mungekey >/dev/null; then mungekey --create --keyfile="$DIR/munge.key" 2>/dev/null
    else dd if=/dev/urandom of="$DIR/munge.key" bs=1 count=1024 status=none; fi
    chmod 400 "$DIR/munge.key"
    # Each daemon gets its own session (setsid execs in place, so $! is its pid).
    setsid munged --foreground --force --key-file="$DIR/munge.key" --socket="$DIR/munge.socket" \
        --pid-file="$DIR/munged.pid" --seed-file="$DIR/munged.seed" \
        </dev/null >>"$DIR/munged.out" 2>&1 &
    echo $! >>"$DIR/pids"
    for i in $(seq 50); do [ -S "$DIR/munge.socket" ] && break; sleep 0.1; done
    [ -S "$DIR/munge.socket" ] || fail "munged did not create its socket"

    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
    cat >"$SLURM_CONF" <<EOF
ClusterName=flowrl-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${SLURM_LOCAL_CTLD_PORT:-16817}
SlurmdPort=${SLURM_LOCAL_SLURMD_PORT:-16818}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$((mem / cpus))
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
MinJobAge=5
InactiveLimit=0
KillWait=2
Waittime=0
SlurmdTimeout=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

    setsid slurmctld -D -f "$SLURM_CONF" </dev/null >>"$DIR/slurmctld.out" 2>&1 &
    echo $! >>"$DIR/pids"
    setsid slurmd -D -N "$host" -f "$SLURM_CONF" </dev/null >>"$DIR/slurmd.out" 2>&1 &
    echo $! >>"$DIR/pids"

    # Ready when the node is idle (30 s at most).
    for i in $(seq 60); do
        [ "$(sinfo -h -N -o %t 2>/dev/null)" = idle ] && { echo "export SLURM_CONF=$SLURM_CONF"; return 0; }
        while read -r p; do alive "$p" || fail "daemon $p exited"; done <"$DIR/pids"
        sleep 0.5
    done
    fail "node not idle after 30 s: $(sinfo -h -N -o '%t %E' 2>&1 || true)"
}

case "${1:-}" in
    install) install ;;
    start) [ $# = 2 ] || die "usage: $0 start <state-dir>"; start "$2" ;;
    stop) [ $# = 2 ] || die "usage: $0 stop <state-dir>"; stop "$2" ;;
    *) die "usage: $0 install | start <state-dir> | stop <state-dir>" ;;
esac
