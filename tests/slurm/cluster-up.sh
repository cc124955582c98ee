#!/usr/bin/env bash
# A real two-node Slurm cluster on this one machine, for dlbench's tests and CI (Debian's
# slurmctld, slurmd and munge 22.05; no systemd): node n1 on the host's network, node n2 a
# second slurmd in its own network namespace (dlbn2, 10.213.0.2). Both share the host's
# filesystem and Docker engine, as nodes of a cluster share /home and run their own engine.
# Idempotent: a running cluster is left as it is. Prints the SLURM_CONF to export.
# The recipe: shared/design/SLURM-NOTES.md. Root only (namespaces, daemons).
set -euo pipefail
dir=${DLBENCH_SLURM_DIR:-/var/tmp/dlbench-slurm}
conf=$dir/slurm.conf
host=$(hostname)
mkdir -p "$dir"/state "$dir"/log

if ! ip netns list | grep -qw dlbn2; then
  ip netns add dlbn2
  ip link add dlbv0 type veth peer name dlbv1
  ip link set dlbv1 netns dlbn2
  ip addr add 10.213.0.1/24 dev dlbv0 && ip link set dlbv0 up
  ip netns exec dlbn2 sh -c 'ip addr add 10.213.0.2/24 dev dlbv1; ip link set dlbv1 up; ip link set lo up'
fi

# One CPU and 4000 MB per node: two runs at once spread over both nodes. MinJobAge keeps
# finished jobs readable by scontrol (there is no slurmdbd, so no sacct); KillWait: the
# seconds between SIGTERM and SIGKILL at scancel or the time limit. NodeHostname: both
# slurmd run on this host (dlbench sees that the nodes share its filesystem).
cat > "$conf.new" <<CONF
ClusterName=dlbench-ci
SlurmctldHost=$host(10.213.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool-%n
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldPidFile=$dir/slurmctld.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobAcctGatherType=jobacct_gather/linux
MinJobAge=7200
KillWait=10
MpiDefault=none
NodeName=n1 NodeHostname=$host NodeAddr=10.213.0.1 CPUs=1 RealMemory=4000
NodeName=n2 NodeHostname=$host NodeAddr=10.213.0.2 CPUs=1 RealMemory=4000
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=30 State=UP
# For the tests of what dlbench refuses before submitting: a node on another machine (never
# started: it stays down) whose partition cannot share this host's local filesystem, and a
# partition that lets two accounts in (without slurmdbd, the only accounts Slurm knows).
NodeName=n3 NodeHostname=elsewhere NodeAddr=10.213.0.3 CPUs=1 RealMemory=4000
PartitionName=remote Nodes=n3 MaxTime=30 State=UP
PartitionName=restricted Nodes=n1,n2 MaxTime=30 State=UP AllowAccounts=lab,ci
CONF
if ! cmp -s "$conf.new" "$conf"; then  # another layout: the daemons start afresh on it
  pkill -x slurmctld || true; pkill -x slurmd || true
  for _ in $(seq 1 20); do pgrep -x 'slurmctld|slurmd' >/dev/null || break; sleep 0.5; done
  rm -f "$dir"/slurmd-*.pid
fi
mv "$conf.new" "$conf"

if ! pgrep -x munged >/dev/null; then
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- /usr/sbin/munged
fi
export SLURM_CONF=$conf
pgrep -x slurmctld >/dev/null || slurmctld -f "$conf"
[ -e "$dir/slurmd-n1.pid" ] && kill -0 "$(cat "$dir/slurmd-n1.pid")" 2>/dev/null || slurmd -f "$conf" -N n1
[ -e "$dir/slurmd-n2.pid" ] && kill -0 "$(cat "$dir/slurmd-n2.pid")" 2>/dev/null || \
  nsenter --net=/var/run/netns/dlbn2 slurmd -f "$conf" -N n2
for _ in $(seq 1 60); do
  [ "$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -c ' idle')" -ge 2 ] && break
  # a node left down by an earlier test (scontrol update state=down) comes back
  scontrol update nodename=n1,n2 state=resume 2>/dev/null || true
  sleep 1
done
sinfo -N >&2
echo "SLURM_CONF=$conf"
