#!/usr/bin/env bash
# The workflow on a real SLURM cluster, through snakemake-executor-plugin-slurm (issue 5).
#
# Starts a throwaway single-node cluster on this machine (Debian packages: munge, slurmctld,
# slurmd, with one fake GPU), runs the test profile (math task only, to keep CI short; the image task's
# train jobs get their GPU the same way, through set-resources) with `--profile profiles/slurm` in a copy of
# the workflow and checks that
#   1. every math train job ran as a SLURM job that asked for a GPU (and every other job except
#      the local aggregation ran as a SLURM job without one),
#   2. its results equal a local run's (`--cores 2 --resources gpu=1`), timings and memory aside,
#   3. a job that fails on the cluster is reported with the path of its SLURM log while the
#      other jobs go on, and is resubmitted by the profile's retries (see FAILING_RUN below).
# Ends with "slurm: N passed, N failed" and exits non-zero on any failure. The daemons it started
# are stopped and the config files it wrote removed on every exit, failed or not.
#
# Needs root on Debian/Ubuntu (it installs packages, writes /etc/slurm, runs the daemons) and a
# venv with the dev extra (snakemake-executor-plugin-slurm). Environment:
#   VENV                    venv to use (default: .venv of this repository)
#   PEFTBENCH_SLURM_TEST_DIR scratch folder, kept (default: new under /var/tmp, removed on a pass)
#   SM_TIMEOUT              hard limit in seconds for each snakemake run (default 420)
#   SLURM_INIT_SECONDS      the plugin's first status poll after a submission or a finished job
#                           (default 10: polls then come 10, 30, 60 s later, +10 s each time none
#                           finished; a test job takes 10-30 s, the plugin's default of 40 is slow)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${VENV:-$REPO/.venv}
SM_TIMEOUT=${SM_TIMEOUT:-420}
INIT_SECONDS=${SLURM_INIT_SECONDS:-10}
# What tests/workflow/test_workflow.py copies, plus the profiles under test.
COPY=(Snakefile rules scripts envs config experiments peftbench profiles)
# Only files carrying this line are overwritten or removed: never a real cluster's config.
MARK="# written by peftbench tests/slurm/run_slurm_test.sh; removed when it exits"
CONF_FILES=(/etc/slurm/slurm.conf /etc/slurm/gres.conf)

DAEMON_PIDS=() # started here, stopped in reverse order
PASSED=0
FAILED=0
WORK=""

log() { printf '[slurm %(%H:%M:%S)T] %s\n' -1 "$*"; }
pass() {
  PASSED=$((PASSED + 1))
  log "PASS: $*"
}
fail() {
  FAILED=$((FAILED + 1))
  log "FAIL: $*"
}

# until_true SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.25 s until it succeeds.
until_true() {
  local limit=$1 what=$2 t0=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - t0 >= limit)); then
      log "gave up waiting for $what after ${limit}s"
      return 1
    fi
    sleep 0.25
  done
  log "$what after $((SECONDS - t0))s"
}

munge_works() { munge -n | unmunge; }
controller_up() { scontrol ping | grep -q 'is UP'; }
node_idle() { [ "$(sinfo -h -N -o %T)" = idle ]; }

install_packages() {
  # Debian's packages work without systemd; only install what is missing (CI reruns are quick).
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    return
  fi
  log "installing slurmctld slurmd slurm-client munge with apt"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
  local f node mem
  for f in "${CONF_FILES[@]}"; do
    if [ -e "$f" ] && ! grep -qF "$MARK" "$f"; then
      log "$f exists and was not written by this script; not touching a real cluster"
      return 1
    fi
  done
  mkdir -p /etc/slurm "$WORK"/cluster/{ctld,spool,log,run,dev}
  # gres/gpu needs a device file, and Slurm takes the GPU index from the digit at the end of its
  # name (-> CUDA_VISIBLE_DEVICES=0); without one slurmd drops the GPU and the node is drained.
  ln -sfn /dev/null "$WORK/cluster/dev/nvidia0"
  # The hardware line as slurmd sees it (no topology warnings), under the name localhost so the
  # machine's hostname does not matter; memory at 80% so the node is not drained for it.
  node=$(slurmd -C | head -n1)
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  node=$(sed -e 's/^NodeName=[^ ]*/NodeName=localhost NodeAddr=127.0.0.1/' \
    -e "s/RealMemory=[0-9]*/RealMemory=$((mem * 8 / 10))/" <<<"$node")
  # Config goes to /etc/slurm, not SLURM_CONF: the jobstep plugin strips SLURM_* variables from
  # the srun inside each job, which then only finds the compiled-in default path.
  cat >/etc/slurm/slurm.conf <<EOF
$MARK
ClusterName=peftbench-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
# No cgroups: scheduling only, limits are not enforced (none are needed for the test).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
# No slurmdbd, so no sacct: the profile polls with squeue, which sees finished jobs this long.
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$WORK/cluster/ctld
SlurmdSpoolDir=$WORK/cluster/spool
SlurmctldPidFile=$WORK/cluster/run/slurmctld.pid
SlurmdPidFile=$WORK/cluster/run/slurmd.pid
SlurmctldLogFile=$WORK/cluster/log/slurmctld.log
SlurmdLogFile=$WORK/cluster/log/slurmd.log
GresTypes=gpu
$node Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  cat >/etc/slurm/gres.conf <<EOF
$MARK
NodeName=localhost Name=gpu File=$WORK/cluster/dev/nvidia0
EOF
}

start_cluster() {
  # No systemd here: every daemon runs in the foreground as a background job of this script, so
  # $! is the daemon's own PID and the cleanup can stop exactly what was started.
  if munge_works >/dev/null 2>&1; then
    log "munged is already running: using it, and leaving it running"
  else
    install -d -o munge -g munge -m 0755 /run/munge
    setpriv --reuid=munge --regid=munge --init-groups \
      /usr/sbin/munged --foreground >"$WORK/cluster/log/munged.out" 2>&1 &
    DAEMON_PIDS+=("$!")
    until_true 20 "munged up" munge_works || return 1
  fi
  if controller_up >/dev/null 2>&1; then
    log "a slurmctld already answers; refusing to mix with it"
    return 1
  fi
  /usr/sbin/slurmctld -D >"$WORK/cluster/log/slurmctld.out" 2>&1 &
  DAEMON_PIDS+=("$!")
  until_true 30 "slurmctld up" controller_up || return 1
  /usr/sbin/slurmd -D -N localhost >"$WORK/cluster/log/slurmd.out" 2>&1 &
  DAEMON_PIDS+=("$!")
  until_true 60 "node localhost idle" node_idle || return 1
}

stop_cluster() {
  local rc=$? i pid f
  trap - EXIT
  set +e
  stop_watcher
  [ -n "$WORK" ] && stop_snakemake_runs
  unblock_outputs
  if ((${#DAEMON_PIDS[@]})) && controller_up >/dev/null 2>&1; then
    # Jobs first: a job's slurmstepd outlives slurmd and would keep running the workflow.
    squeue -h -o %i | xargs -r scancel
    for _ in $(seq 40); do
      [ -z "$(squeue -h -t R,CG -o %i)" ] && break
      sleep 0.25
    done
  fi
  for ((i = ${#DAEMON_PIDS[@]} - 1; i >= 0; i--)); do
    pid=${DAEMON_PIDS[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    wait "$pid" 2>/dev/null
    log "stopped daemon pid $pid"
  done
  for f in "${CONF_FILES[@]}"; do
    [ -f "$f" ] && grep -qF "$MARK" "$f" && rm -f "$f"
  done
  if ((rc == 0 && FAILED == 0)) && [ -z "${PEFTBENCH_SLURM_TEST_DIR:-}" ] && [ -n "$WORK" ]; then
    rm -rf "$WORK"
  elif [ -n "$WORK" ]; then
    log "kept $WORK (workflow copies, snakemake output, daemon logs)"
  fi
  exit "$rc"
}

dump_cluster_logs() {
  local f
  for f in "$WORK"/cluster/log/*; do
    [ -s "$f" ] && { echo "=== $f"; tail -n 20 "$f"; }
  done
}

copy_workflow() {
  local dest=$1 name
  mkdir -p "$dest"
  for name in "${COPY[@]}"; do
    cp -r "$REPO/$name" "$dest/"
  done
  find "$dest" -name __pycache__ -prune -exec rm -rf {} +
}

# One line per SLURM job created after job id $1: "id|state|exit|comment|tres|cpus|stdout".
slurm_jobs_after() {
  scontrol show job -o | "$VENV/bin/python" -c '
import re, sys
first = int(sys.argv[1])
for line in sys.stdin:
    f = dict(re.findall(r"(\w+)=(\S*)", line))
    if "JobId" in f and int(f["JobId"]) > first:
        print("|".join(f.get(k, "") for k in
              ("JobId", "JobState", "ExitCode", "Comment", "TresPerJob", "NumCPUs", "StdOut")))
' "$1"
}

last_job_id() { squeue -h -t all -o %i | sort -n | tail -n1 | grep . || echo 0; }

# snakemake_in DIR LOGFILE ARGS...: run snakemake in DIR under a hard timeout (on SIGTERM it waits
# for its jobs, so SIGKILL follows 10 s later); prints the exit code, never fails itself.
# timeout leads its own process group; its PID goes to LOGFILE.pid so that the cleanup can end a
# run still going (e.g. the local reference when this script is interrupted).
snakemake_in() {
  local dir=$1 out=$2 rc=0
  shift 2
  (cd "$dir" && exec timeout -k 10 "$SM_TIMEOUT" snakemake "$@") >"$out" 2>&1 &
  echo "$!" >"$out.pid"
  wait "$!" || rc=$?
  rm -f "$out.pid"
  echo "$rc"
}

stop_snakemake_runs() {
  local pidfile pid
  for pidfile in "$WORK"/*.out.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill -TERM -- "-$pid" 2>/dev/null || continue
    sleep 2
    kill -KILL -- "-$pid" 2>/dev/null
    log "stopped snakemake run $pidfile (process group $pid)"
  done
}

check_gpu_srun() {
  local out
  if out=$(srun -t 1 --gpus=1 printenv CUDA_VISIBLE_DEVICES 2>&1) && [ "$out" = 0 ]; then
    pass "srun --gpus=1 gets the fake GPU (CUDA_VISIBLE_DEVICES=$out)"
  else
    fail "srun --gpus=1: $out"
  fi
}

# check_slurm_jobs JOBLIST WORKFLOW FAILED_RUN: every train job a SLURM job with a GPU request
# and the config's threads as CPUs, one COMPLETED job per result.json (FAILED_RUN's job failed
# once on purpose); data preparation, base model and validation SLURM jobs without a GPU; no
# SLURM job for aggregate (localrule).
check_slurm_jobs() {
  "$VENV/bin/python" - "$@" <<'PY'
import re
import sys
from pathlib import Path

import yaml

jobs_file, wf, failed_run = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
threads = yaml.safe_load((wf / "config/config.yaml").read_text())["math"]["resources"]["threads"]
# Named as in the plugin's job comments: rule_<rule>_wildcards_<task>_<method>_<name>_<seed>.
runs = {
    f"math_{p.parts[-4]}_{p.parts[-3]}_{p.parts[-2].removeprefix('seed')}"
    for p in (wf / "results/math/runs").glob("*/*/seed*/result.json")
}
GPU_REFERENCE_RULES = {"math_base_reference", "image_base_reference"}
failed_comment = f"rule_train_wildcards_math_{failed_run.replace('/', '_')}_0"
problems, completed = [], []
for line in jobs_file.read_text().splitlines():
    jobid, state, exitcode, comment, tres, cpus, stdout = line.split("|")
    rule = comment.removeprefix("rule_").split("_wildcards_")[0]
    print(f"  job {jobid}: {comment} {state} exit={exitcode} cpus={cpus} "
          f"gpu request={tres or 'none'} log={stdout.removeprefix(str(wf) + '/')}")
    expected = "FAILED" if comment == failed_comment and state == "FAILED" else "COMPLETED"
    if state != expected:
        problems.append(f"job {jobid} ({comment}) is {state} {exitcode}")
    if not Path(stdout).is_file():
        problems.append(f"job {jobid}: SLURM log {stdout} missing")
    if rule == "train":
        if state == "COMPLETED":
            completed.append(comment.split("_wildcards_")[1])
        if not re.search(r"gpu(:\w+)?[:=]1$", tres):  # gres:gpu:1 (22.05), gres/gpu=1 (newer)
            problems.append(f"job {jobid} ({comment}) asked for no single GPU: {tres!r}")
        if int(cpus) != threads:
            problems.append(f"job {jobid} ({comment}) got {cpus} CPUs, config says {threads}")
    elif rule in GPU_REFERENCE_RULES:
        # The base model's shared reference runs where training runs (profiles/slurm says why).
        if not re.search(r"gpu(:\w+)?[:=]1$", tres):
            problems.append(f"job {jobid} ({comment}) asked for no single GPU: {tres!r}")
    elif rule == "aggregate":
        problems.append(f"job {jobid}: aggregate is a localrule but ran on SLURM")
    elif "gpu" in tres:
        problems.append(f"job {jobid} ({comment}) asked for a GPU it does not need")
if sorted(completed) != sorted(runs) or not runs:
    problems.append(f"completed train jobs {sorted(completed)} != runs {sorted(runs)}")
for problem in problems:
    print("  " + problem)
print(f"  {len(completed)} completed train SLURM jobs for {len(runs)} result.json files")
sys.exit(1 if problems else 0)
PY
}

# Every result.json of the SLURM run equals the local run's, except what measures time/memory.
# Of the provenance, the hashes of config, data and base model and the torch thread count must
# match too (the thread count changes float results, so a mismatch would explain a difference).
compare_results() {
  "$VENV/bin/python" - "$1" "$2" <<'PY'
import json
import sys
from pathlib import Path

VOLATILE = {
    "train_memory_peak_bytes", "train_memory_allocated_peak_bytes", "eval_memory_peak_bytes",
    "eval_memory_allocated_peak_bytes", "train_time_s", "valid_time_s", "eval_time_s",
    "train_tokens_per_s", "infer_latency_s", "infer_merged_latency_s", "infer_base_latency_s",
    "infer_overhead", "infer_merged_overhead", "infer_tokens_per_s", "infer_merged_tokens_per_s",
    "infer_base_tokens_per_s",
}


def load(root):
    out = {}
    for path in sorted(Path(root, "results/math/runs").glob("*/*/seed*/result.json")):
        result = json.loads(path.read_text())
        prov = result.pop("provenance")
        result["metrics"] = {k: v for k, v in result["metrics"].items() if k not in VOLATILE}
        result["provenance (compared part)"] = {
            k: prov[k] for k in ("config_hash", "data_hash", "base_model_hash", "device")
        } | {"torch_threads": prov["hardware"]["torch_threads"]}
        out[str(path.relative_to(root))] = result
    return out


slurm, local = load(sys.argv[1]), load(sys.argv[2])
ok = bool(slurm) and slurm.keys() == local.keys()
if slurm.keys() != local.keys():
    print(f"  different runs: slurm {sorted(slurm)} local {sorted(local)}")
for name in sorted(slurm.keys() & local.keys()):
    a, b = slurm[name], local[name]
    diff = [k for k in a.keys() | b.keys() if k != "metrics" and a.get(k) != b.get(k)]
    diff += [f"metrics.{k}" for k in a["metrics"].keys() | b["metrics"].keys()
             if a["metrics"].get(k) != b["metrics"].get(k)]
    print(f"  {name}: status {a['status']}, test_accuracy {a['metrics'].get('test_accuracy')}, "
          f"train_loss_final {a['metrics'].get('train_loss_final')}, "
          f"torch threads {a['provenance (compared part)']['torch_threads']}: "
          + ("equal" if not diff else f"DIFFERENT in {sorted(diff)}"))
    ok = ok and not diff and a["status"] == "success"
sys.exit(0 if ok else 1)
PY
}

# The failure check (issue point 4) is part of the SLURM run, so it costs one extra job rather than
# a run of its own. Before the run, the output folder of one math train job is made unwritable
# (chattr +i: root ignores permission bits, so chmod cannot do it). The job is submitted, runs on
# the node, cannot write its result and exits non-zero, with the traceback in its rule log: a real
# job failing on the cluster, with no change to the workflow. The run must report the failed SLURM
# job with the path of its SLURM log while the other jobs go on. As soon as SLURM shows the job
# FAILED, a watcher makes the folder writable again, so the profile's `retries: 2` resubmits the
# job and the run completes (the watcher polls squeue every 0.5 s; snakemake notices the failure
# only at its next status poll, seconds later, and the new job needs seconds more to get there).
# The job is the base model's evaluation (no training), the cheapest to run twice.
FAILING_RUN=base/no-finetuning
FAILING_COMMENT="rule_train_wildcards_math_${FAILING_RUN//\//_}_0" # as the plugin names the job
IMMUTABLE_DIRS=() # made writable again on exit, or the scratch folder could not be removed
WATCHER_PID=""

# A file inside, because Snakemake removes empty output folders of failed jobs at exit.
block_output() {
  local dir=$1/results/math/runs/$FAILING_RUN/seed0
  mkdir -p "$dir"
  echo "made unwritable by tests/slurm/run_slurm_test.sh" >"$dir/BLOCKED"
  if chattr +i "$dir"; then
    IMMUTABLE_DIRS+=("$dir")
  else
    fail "cannot make $dir unwritable (chattr +i; the file system must support it)"
  fi
}

unblock_outputs() {
  local dir
  for dir in "${IMMUTABLE_DIRS[@]}"; do
    chattr -i "$dir" && rm -f "$dir/BLOCKED"
  done
}

# In the background: wait for the failing job's FAILED state, note its id, unblock its folder.
watch_failure() {
  local id=""
  while [ -z "$id" ]; do
    sleep 0.5
    id=$(squeue -h -t all -o '%i|%T|%k' \
      | awk -F'|' -v c="$FAILING_COMMENT" '$2 == "FAILED" && $3 == c {print $1; exit}')
  done
  unblock_outputs
  echo "$id" >"$WORK/failed.jobid"
  log "watcher: SLURM job $id of $FAILING_RUN FAILED; its output folder is writable again"
}

stop_watcher() {
  if [ -n "$WATCHER_PID" ] && kill -0 "$WATCHER_PID" 2>/dev/null; then
    kill "$WATCHER_PID"
    wait "$WATCHER_PID" 2>/dev/null || true # killed by us: status 143
  fi
  WATCHER_PID=""
}

check_failure_reported() {
  local wf=$1 jobs=$2 id job log others done_ok
  id=$(cat "$WORK/failed.jobid" 2>/dev/null || true)
  job=$(grep "^$id|" "$jobs" || true)
  log=$(cut -d'|' -f7 <<<"$job")
  # The report of the failed attempt: SLURM job id, the path of its SLURM log, the rule log shown
  # by show-failed-logs (with the script's error), then the restart from `retries`.
  if [ -n "$id" ] && [ "$(cut -d'|' -f2 <<<"$job")" = FAILED ] \
    && grep -q "SLURM-job '$id' failed" "$WORK/slurm.out" \
    && [ -n "$log" ] && grep -qF "${log#"$wf/"}" "$WORK/slurm.out" \
    && grep -q "Error in rule train" "$log" \
    && grep -qE "PermissionError|Operation not permitted" "$WORK/slurm.out" \
    && grep -q "Trying to restart job" "$WORK/slurm.out"; then
    pass "failing job ($FAILING_RUN, SLURM job $id, FAILED) reported with its SLURM log:"
    grep -F -e "SLURM-job '$id'" -e "${log#"$wf/"}" -e "Trying to restart" "$WORK/slurm.out" \
      | sort -u | sed 's/^/    /'
  else
    fail "failing job of $FAILING_RUN not reported as expected (SLURM job '$job')"
    tail -n 60 "$WORK/slurm.out"
  fi
  # Every other training job completed; the failed one was resubmitted and completed too.
  others=$(grep -F "|rule_train_wildcards_math_" "$jobs" | grep -vF "|$FAILING_COMMENT|" || true)
  done_ok=$(grep -c "|COMPLETED|0:0|" <<<"$others" || true)
  if [ -n "$others" ] && [ "$done_ok" = "$(grep -c . <<<"$others")" ] \
    && grep -F "|$FAILING_COMMENT|" "$jobs" | grep -q "|COMPLETED|0:0|"; then
    pass "the other $done_ok training jobs finished; the failed one was resubmitted and completed"
  else
    fail "after the failure: $done_ok of $(grep -c . <<<"$others") other training jobs completed;" \
      "its jobs: $(grep -F "|$FAILING_COMMENT|" "$jobs" | cut -d'|' -f1,2 | tr '\n' ' ')"
  fi
}

main() {
  local t0=$SECONDS rc t first local_pid
  if [ "$(id -u)" != 0 ] || [ ! -f /etc/debian_version ]; then
    echo "run_slurm_test.sh needs root on Debian (apt, /etc/slurm, daemons)" >&2
    exit 2
  fi
  if ! "$VENV/bin/python" -c 'import snakemake_executor_plugin_slurm' 2>/dev/null; then
    echo "no snakemake-executor-plugin-slurm in $VENV: pip install -e '.[dev]'" >&2
    exit 2
  fi
  # Jobs run with sbatch --export=ALL: the venv's snakemake must be on their PATH too.
  export PATH="$VENV/bin:$PATH"
  # /var/tmp: on disk on Debian (/tmp can be a tmpfs), which chattr needs (see block_output).
  WORK=${PEFTBENCH_SLURM_TEST_DIR:-$(mktemp -d /var/tmp/peftbench-slurm.XXXXXX)}
  mkdir -p "$WORK"
  trap stop_cluster EXIT
  install_packages
  log "slurm $(slurmd -V | cut -d' ' -f2), scratch $WORK"
  write_config
  if start_cluster; then
    pass "cluster up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB GRES %G %T')"
  else
    fail "cluster did not start"
    dump_cluster_logs
    return 1
  fi
  check_gpu_srun

  copy_workflow "$WORK/slurm"
  copy_workflow "$WORK/local"
  block_output "$WORK/slurm"
  # The local reference runs meanwhile: the SLURM run mostly waits (submission, status polls),
  # so running both at once keeps the added CI time down. Float results do not depend on load,
  # only on the thread count, which is the config's in both.
  (
    rc=$(snakemake_in "$WORK/local" "$WORK/local.out" --cores 2 --resources gpu=1 \
      --configfile config/test.yaml --config "tasks=[math]")
    echo "$rc" >"$WORK/local.rc"
  ) &
  local_pid=$!
  watch_failure &
  WATCHER_PID=$!

  first=$(last_job_id)
  t=$SECONDS
  rc=$(snakemake_in "$WORK/slurm" "$WORK/slurm.out" --profile profiles/slurm \
    --configfile config/test.yaml --config "tasks=[math]" \
    --slurm-init-seconds-before-status-checks "$INIT_SECONDS")
  log "SLURM run: snakemake exit code $rc in $((SECONDS - t))s"
  stop_watcher
  if [ "$rc" = 0 ] && [ -s "$WORK/slurm/results/math/summary.csv" ]; then
    pass "workflow ran with --profile profiles/slurm (exit 0, summary.csv written)"
  else
    fail "workflow with --profile profiles/slurm (exit $rc)"
    tail -n 60 "$WORK/slurm.out"
    dump_cluster_logs
  fi
  slurm_jobs_after "$first" >"$WORK/slurm.jobs"
  check_failure_reported "$WORK/slurm" "$WORK/slurm.jobs"
  if check_slurm_jobs "$WORK/slurm.jobs" "$WORK/slurm" "$FAILING_RUN"; then
    pass "every train job ran as a SLURM job with a GPU request; other rules without"
  else
    fail "SLURM jobs of the run (see above)"
  fi

  wait "$local_pid" || true
  rc=$(cat "$WORK/local.rc" 2>/dev/null || echo missing)
  log "local run: snakemake exit code $rc"
  if [ "$rc" != 0 ]; then
    fail "local reference run (exit $rc)"
    tail -n 40 "$WORK/local.out"
  elif compare_results "$WORK/slurm" "$WORK/local"; then
    pass "results on SLURM equal the local run's (timing and memory aside)"
  else
    fail "results on SLURM differ from the local run's"
  fi

  log "total $((SECONDS - t0))s"
  echo "slurm: $PASSED passed, $FAILED failed"
  ((FAILED == 0))
}

main "$@"
