#!/usr/bin/env bash
# A one-node SLURM cluster on 127.0.0.1 for tests: `slurm_cluster.sh start DIR` writes
# DIR/slurm.conf, starts slurmctld and slurmd (their logs and pid files stay in DIR) and
# waits until the node is idle; `slurm_cluster.sh stop DIR` stops exactly those daemons by
# their pid files. Needs Debian's slurmctld, slurmd and slurm-client (apt-get install).
set -euo pipefail
cmd=${1:?start|stop}
dir=$(realpath -m "${2:?directory}")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stop() {
  for name in slurmd slurmctld; do
    pidfile="$dir/$name.pid"
    if [ -f "$pidfile" ]; then
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
}

if [ "$cmd" = stop ]; then stop; exit 0; fi

host=$(hostname)
mkdir -p "$dir/state" "$dir/spool" "$dir/log"
cat > "$dir/slurm.conf" <<CONF
ClusterName=fulmentest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ReturnToService=2
KillWait=5
MpiDefault=none
JobCompType=jobcomp/none
SchedulerParameters=nohold_on_prolog_fail
NodeName=$host NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF"
for _ in $(seq 150); do
  if sinfo -h -o %t 2>/dev/null | grep -q idle; then echo "slurm ready: SLURM_CONF=$SLURM_CONF"; exit 0; fi
  sleep 0.2
done
echo "slurm did not become idle; logs in $dir/log" >&2
sinfo >&2 || true
stop
exit 1
