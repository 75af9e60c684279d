#!/usr/bin/env bash
# The Slurm recipe (tools/slurm/submit.sh) tested on a real one-node cluster brought up on this
# machine (root; Debian's slurm-wlm and munge, installed when missing): munged, slurmctld and
# slurmd as root with proctrack/linuxproc and task/none. With the committed tiny checkpoints:
#   1. eval of a split as `--array=0-3` + merge  == one process (predictions and scores)
#   2. batch of a folder as `--array=0-3` + merge == one process (every output file)
#   3. one array task cancelled mid-way: the merge job fails naming what is missing; the task
#      resubmitted alone resumes (its finished expressions are "already done") and the merge
#      then succeeds, identical to one process
#   4. an array task that fails (a broken video): the merge job fails and names the job
# usage: tools/slurm/test.sh            VIDEOLISA=path/to/videolisa to test another build
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
[[ $EUID -eq 0 ]] || { echo "tools/slurm/test.sh: needs root (it starts munged, slurmctld, slurmd)" >&2; exit 2; }
t0=$SECONDS
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
export VIDEOLISA=${VIDEOLISA:-$repo/target/release/videolisa}
[[ -x $VIDEOLISA ]] || cargo build --release --quiet
work=$(mktemp -d /tmp/videolisa-slurm.XXXXXX)
export SLURM_CONF=$work/slurm.conf
submit=$repo/tools/slurm/submit.sh
model=(--model "$repo/tests/fixtures/videolisa_tiny/model" --clip "$repo/tests/fixtures/videolisa_tiny/clip")
log() { printf '[%4ds] %s\n' $((SECONDS - t0)) "$*"; }
fail() { log "FAIL: $*"; exit 1; }

start_cluster() {
    if ! pgrep -x munged >/dev/null; then
        mkdir -p /run/munge /var/log/munge /var/lib/munge
        [[ -s /etc/munge/munge.key ]] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
        chmod 400 /etc/munge/munge.key
        su -s /bin/sh munge -c /usr/sbin/munged
    fi
    mkdir -p "$work/state" "$work/spool" "$work/log"
    cat >"$SLURM_CONF" <<CONF
ClusterName=videolisa-test
SlurmctldHost=$(hostname -s)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=3600
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
NodeName=$(hostname -s) CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    slurmctld -f "$SLURM_CONF" -c
    slurmd -f "$SLURM_CONF"
    for _ in $(seq 100); do
        [[ $(sinfo -h -o %t 2>/dev/null) == idle ]] && return
        sleep 0.2
    done
    fail "the node never became idle: $(tail -3 "$work/log/slurmd.log")"
}
stop_cluster() {
    scancel --quiet --user=root 2>/dev/null || true
    for p in slurmd slurmctld; do
        [[ -f $work/$p.pid ]] && kill "$(cat "$work/$p.pid")" 2>/dev/null || true
    done
}
trap stop_cluster EXIT

# waits for a job (all tasks of an array) to leave the queue
wait_job() {
    while [[ -n $(squeue -h -j "$1" 2>/dev/null) ]]; do sleep 0.5; done
}
# JobState of a job or array task
state() { scontrol show job "$1" | grep -oP 'JobState=\K\w+' | sort -u | paste -sd,; }
# checksums of every result file under a folder (what holds timings, times or paths left out)
results() {
    (cd "$1" && find . -type f ! -name summary.json ! -name .done ! -name results.jsonl \
        ! -name 'videolisa-run.json' ! -name '.videolisa-lock*' ! -name '*.out' ! -path './.summaries/*' -print0 \
        | sort -z | xargs -0 sha256sum)
}
# the array and merge ids submit.sh printed
submit() { read -r _ array _ merge < <("$submit" "$@"); }
# waits for the submitted array and merge, which must both complete; then the array's results
# (folder $2) must equal one process's (folder $1)
expect_same() {
    wait_job "$array"; wait_job "$merge"
    [[ $(state "$array") == COMPLETED && $(state "$merge") == COMPLETED ]] \
        || fail "$2: array $(state "$array"), merge $(state "$merge"): $(cat videolisa-merge-"$merge".out)"
    diff <(results "$1") <(results "$2") >/dev/null || fail "$2 differs from $1"
}

start_cluster
log "cluster up: $(sinfo -h -o '%P %D node(s) %c CPUs %t')"
cd "$work"

log "1. eval: 4-task array + merge vs one process"
"$VIDEOLISA" -q synthetic --dataset ref-davis --out davis --videos 8 --frames 12 >/dev/null
"$VIDEOLISA" -q eval --dataset ref-davis --root davis --out eval-one "${model[@]}" >/dev/null
submit 4 eval --dataset ref-davis --root "$work/davis" --out "$work/eval-array" "${model[@]}"
expect_same eval-one eval-array
log "   identical: $(results eval-one | wc -l) files (predictions and scores); $(grep -h 'J&F' videolisa-merge-"$merge".out)"

log "2. batch: 4-task array + merge vs one process"
mkdir videos
for i in 0 3 6 9 12 15 18; do cp "$repo/examples/demo/frames/000$(printf %02d $i).jpg" "videos/still_$i.jpg"; done
cp "$repo/examples/demo/demo.mp4" videos/
"$VIDEOLISA" -q batch --videos videos -p "the red ball" --out batch-one --rle "${model[@]}" >/dev/null
submit 4 batch --videos "$work/videos" -p "the red ball" --out "$work/batch-array" --rle "${model[@]}"
expect_same batch-one batch-array
log "   identical: $(results batch-one | wc -l) files; merge: $(tail -1 videolisa-merge-"$merge".out)"

log "3. a task cancelled mid-way, then resubmitted alone"
"$VIDEOLISA" -q synthetic --dataset ref-davis --out long --videos 8 --frames 100 >/dev/null
"$VIDEOLISA" -q eval --dataset ref-davis --root long --out long-one "${model[@]}" >/dev/null
submit 4 eval --dataset ref-davis --root "$work/long" --out "$work/long-array" "${model[@]}"
# task 1 has video0 and video4: cancel it once its first expression is done
until compgen -G "long-array/video0/*/.done" >/dev/null; do
    [[ -n $(squeue -h -j "${array}_1") ]] || fail "task 1 ended before it could be cancelled"
    sleep 0.1
done
scancel "${array}_1"
done_before=$(find long-array -name .done | wc -l)
wait_job "$array"; wait_job "$merge"
[[ $(state "${array}_1") == CANCELLED* ]] || fail "task 1 is $(state "${array}_1"), not cancelled"
[[ $(state "$merge") == FAILED ]] || fail "the merge after a cancelled task is $(state "$merge")"
grep -q "not every expression is finished" videolisa-merge-"$merge".out || fail "merge: $(cat videolisa-merge-"$merge".out)"
log "   cancelled with $done_before expressions done; merge failed: $(grep -o 'not every expression.*' videolisa-merge-"$merge".out | cut -c1-90)…"
submit --tasks 1 4 eval --dataset ref-davis --root "$work/long" --out "$work/long-array" "${model[@]}"
expect_same long-one long-array
resumed=$(grep -ho '[0-9]* already done' videolisa-"${array}"_1.out 2>/dev/null || true)
log "   resubmitted task 1: ${resumed:-no summary line}; merge succeeded, identical to one process ($(results long-one | wc -l) files)"

log "4. a task that fails: the merge reports it"
mkdir -p broken/b_clip
cp "$repo/examples/demo/frames/00000.jpg" broken/b_clip/
head -c 2000 "$repo/examples/demo/frames/00001.jpg" >broken/b_clip/00001.jpg
for i in 0 1 2; do cp "$repo/examples/demo/frames/0000$i.jpg" "broken/a_still_$i.jpg"; done
submit 4 batch --videos "$work/broken" -p "the red ball" --out "$work/broken-out" "${model[@]}"
wait_job "$array"; wait_job "$merge"
failed=$(for t in 0 1 2 3; do echo "$t:$(state "${array}_$t")"; done | grep FAILED || true)
[[ -n $failed ]] || fail "no task failed"
[[ $(state "$merge") == FAILED ]] || fail "the merge after a failed task is $(state "$merge")"
grep -q "b_clip: FAILED: not done" videolisa-merge-"$merge".out || fail "merge: $(cat videolisa-merge-"$merge".out)"
log "   failed task $failed; merge: $(grep 'b_clip' videolisa-merge-"$merge".out)"
log "all Slurm checks passed in $((SECONDS - t0)) s ($work)"
