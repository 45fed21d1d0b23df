#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the slurm executor's tests.
#
#   .ci/slurm-cluster.sh start DIR   install nothing, write munge + slurm config under DIR, start
#                                    munged, slurmctld and slurmd, wait until the node is idle and
#                                    print the line to source (export SLURM_CONF=...)
#   .ci/slurm-cluster.sh stop DIR    cancel every job, stop the three daemons by their PID files
#
# Needs root and Debian's slurm-wlm and munge (apt-get install slurm-wlm munge); /etc is not
# touched: clients find the cluster through SLURM_CONF. What each setting is for:
# ../shared/reference/slurm-notes.md (project reference) and the comments below.
set -euo pipefail

command=${1:?usage: slurm-cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: slurm-cluster.sh start|stop DIR}")

stop_pid() {  # stop_pid FILE: TERM the daemon in FILE and wait up to 10 s for it to go
    local file=$1 pid
    [[ -f $file ]] || return 0
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

if [[ $command == stop ]]; then
    if [[ -f $dir/slurm.conf ]]; then
        SLURM_CONF=$dir/slurm.conf scancel --quiet --user="$(id -un)" 2>/dev/null || true
    fi
    stop_pid "$dir/slurmd.pid"
    stop_pid "$dir/slurmctld.pid"
    stop_pid "$dir/munge-run/munged.pid"
    echo "slurm cluster in $dir stopped"
    exit 0
fi
[[ $command == start ]] || { echo "unknown command $command (start|stop)" >&2; exit 2; }

for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || {
        echo "$tool not found: apt-get install slurm-wlm munge" >&2; exit 1; }
done
mkdir -p "$dir"/{state,spool,munge-etc,munge-run,munge-lib,log}
# munged refuses a key readable by others and a socket folder that is not world-executable.
chmod 700 "$dir/munge-etc" "$dir/munge-lib"
chmod 755 "$dir/munge-run"
[[ -f $dir/munge-etc/munge.key ]] || dd if=/dev/urandom of="$dir/munge-etc/munge.key" bs=1024 \
    count=1 status=none
chmod 400 "$dir/munge-etc/munge.key"
socket=$dir/munge-run/munge.socket.2

munged --force --key-file="$dir/munge-etc/munge.key" --socket="$socket" \
    --pid-file="$dir/munge-run/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge-lib/munged.seed"

# The node as slurmd sees it, with 90% of its memory so slurmd does not drain itself.
read -r cpus memory < <(slurmd -C | awk '/NodeName/ {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    print v["CPUs"], int(v["RealMemory"] * 0.9) }')
node=$(hostname -s)

cat > "$dir/slurm.conf" <<EOF
ClusterName=mtlbench-ci
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job may start again after 10 s instead of 120 s.
AuthInfo=socket=$socket,cred_expire=10
# No cgroups on a CI machine: plain process tracking, no task containment, no accounting.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Cores and memory are consumable, so several jobs share the node; without DefMemPerCPU each
# job would take all of the node's memory and jobs would run one at a time.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
# Schedule at once (jobs start within ~1 s instead of several).
SchedulerParameters=bf_interval=1,batch_sched_delay=0
# Finished jobs stay visible to scontrol for an hour (there is no sacct without accounting).
MinJobAge=3600
# A job being requeued or cancelled gets 5 s between SIGTERM and SIGKILL (default 30), as on
# clusters with a short preemption grace time: the tests see a preempted trial killed mid-way.
KillWait=5
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SlurmdTimeout=60
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

export SLURM_CONF=$dir/slurm.conf
slurmctld -c -i
slurmd
for _ in $(seq 150); do
    state=$(sinfo -h -N -o %T 2>/dev/null || true)
    [[ $state == idle ]] && break
    sleep 0.2
done
if [[ $state != idle ]]; then
    echo "the node did not become idle (state: '${state:-none}'); logs in $dir/log" >&2
    tail -n 20 "$dir"/log/*.log >&2 || true
    exit 1
fi
echo "export SLURM_CONF=$dir/slurm.conf"
