#!/usr/bin/env bash
# Submits a videolisa eval or batch as a Slurm job array (one task per shard) and a merge job
# that runs after it, whatever the tasks' outcome, and reports what is missing.
#
#   tools/slurm/submit.sh [--tasks LIST] [--sbatch "OPTS"] N eval  --dataset ref-davis --root R --out O ...
#   tools/slurm/submit.sh [--tasks LIST] [--sbatch "OPTS"] N batch jobs.csv --out O ...
#
# N: the number of shards. --tasks: submit only these tasks of the N (e.g. `2` or `1,3`) to rerun
# them: they resume what they had finished. --sbatch: extra sbatch options for every job
# (partition, time, GPUs, ...). Prints the array's and the merge job's ids. VIDEOLISA (default:
# videolisa on PATH) is the binary the jobs run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tasks="" extra=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --tasks) tasks=$2; shift 2 ;;
        --sbatch) extra=$2; shift 2 ;;
        *) break ;;
    esac
done
[[ $# -ge 2 && $1 =~ ^[1-9][0-9]*$ ]] || { sed -n '2,12p' "$0" >&2; exit 2; }
n=$1; shift
export VIDEOLISA_SHARD_COUNT=$n VIDEOLISA=${VIDEOLISA:-videolisa}
# shellcheck disable=SC2086
array=$(sbatch --parsable --export=ALL --array="${tasks:-0-$((n - 1))}" $extra "$here/shard.sbatch" "$@")
array=${array%%;*}
# shellcheck disable=SC2086
merge=$(sbatch --parsable --export=ALL --dependency="afterany:$array" $extra "$here/merge.sbatch" "$@")
echo "array $array merge ${merge%%;*}"
