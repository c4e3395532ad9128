#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# `make demo`: a live upgrade of a 3-node Octopus cluster on the local control plane.
#
# Starts the Octopus twin (it plays kubelet for the Octopus pods and the backup Job's pod,
# and serves the Octopus API) and the operator in the background, creates the cluster of
# cluster.yaml on 2024.1.100 with deployments flowing, then
#   1. waits until it is Ready,
#   2. rolls a patch upgrade to 2024.1.200 one node at a time,
#   3. asks for the minor upgrade to 2024.2.50, shows it blocked until approved, approves it
#      with `kubectl patch` and shows the stop-the-world steps (maintenance mode, backup,
#      stop all, first node migrates the schema, the rest start),
#   4. prints a summary and the twin's counters,
# showing `kubectl get octc`, the nodes and the upgrade step every second. On exit (also
# CTRL-C or a failure) it deletes the cluster and the namespace and stops what it started.
# Exits non-zero when a stage fails or times out.
#
# Env:
#   DEMO_KUBECONFIG       control plane to use (default: e2e/controlplane/up.sh starts or
#                         reuses the local one)
#   DEMO_NAMESPACE        namespace to create and delete (default octopus-demo)
#   DEMO_NONINTERACTIVE=1 plain lines instead of a redrawn screen (also when stdout is
#                         not a terminal)
#   DEMO_STAGE_TIMEOUT    seconds each stage may take (default 180)
#   DEMO_TWIN_BIN, DEMO_OPERATOR_BIN  prebuilt binaries (default: cargo builds them)
#   KUBECTL               kubectl to run (default: e2e/tools/install-kubectl.sh's)
#   DEMO_KEEP_RUN_DIR=1   keep the logs directory also after a successful run
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

ns=${DEMO_NAMESPACE:-octopus-demo}
name=demo
from_version=2024.1.100
patch_version=2024.1.200
minor_version=2024.2.50
stage_timeout=${DEMO_STAGE_TIMEOUT:-180}
interactive=true
if [[ ${DEMO_NONINTERACTIVE:-0} == 1 || ! -t 1 ]]; then interactive=false; fi

started=$SECONDS
ns_created=false
run=""
run_is_ours=false
twin_pid=""
operator_pid=""
twin_url=""

# ----- output ------------------------------------------------------------------------

stamp() { printf '[+%3ss]' "$((SECONDS - started))"; }
# The last lines said, repeated at the top of the redrawn screen so they stay readable.
narration=()
say() {
  local line
  line="$(stamp) $*"
  printf '%s\n' "$line"
  narration+=("$line")
  ((${#narration[@]} <= 4)) || narration=("${narration[@]: -4}")
}
banner() {
  printf '\n%s ==== %s ====\n' "$(stamp)" "$*"
}
fail() {
  printf '\n%s DEMO FAILED: %s\n' "$(stamp)" "$*" >&2
  exit 1
}

# ----- setup -------------------------------------------------------------------------

if [[ -n ${DEMO_KUBECONFIG:-} ]]; then
  kubeconfig=$DEMO_KUBECONFIG
else
  kubeconfig=$("$root/e2e/controlplane/up.sh")
fi
[[ -f $kubeconfig ]] || fail "no kubeconfig at $kubeconfig"
export KUBECONFIG=$kubeconfig
KUBECTL=${KUBECTL:-$("$root/e2e/tools/install-kubectl.sh")}
command -v python3 >/dev/null || fail "python3 is needed for the twin's counters"
command -v curl >/dev/null || fail "curl is needed to read the twin's counters"

# kubectl against the demo namespace.
k() { "$KUBECTL" --kubeconfig "$kubeconfig" -n "$ns" "$@"; }
kc() { "$KUBECTL" --kubeconfig "$kubeconfig" "$@"; }

if [[ -n ${DEMO_TWIN_BIN:-} && -n ${DEMO_OPERATOR_BIN:-} ]]; then
  twin_bin=$DEMO_TWIN_BIN
  operator_bin=$DEMO_OPERATOR_BIN
else
  say "building octopus-operator and octopus-twin (debug)"
  (cd "$root" && "${CARGO:-cargo}" build --quiet -p octopus-operator --bin octopus-operator \
    -p octopus-e2e --bin octopus-twin) || fail "cargo build failed"
  target=${CARGO_TARGET_DIR:-$root/target}
  twin_bin=${DEMO_TWIN_BIN:-$target/debug/octopus-twin}
  operator_bin=${DEMO_OPERATOR_BIN:-$target/debug/octopus-operator}
fi
[[ -x $twin_bin ]] || fail "no octopus-twin binary at $twin_bin"
[[ -x $operator_bin ]] || fail "no octopus-operator binary at $operator_bin"

if [[ -n ${DEMO_RUN_DIR:-} ]]; then
  run=$DEMO_RUN_DIR
  mkdir -p "$run"
else
  run=$(mktemp -d "${TMPDIR:-/tmp}/octopus-demo.XXXXXX")
  run_is_ours=true
fi

# Deletes the demo cluster (its finalizer needs the operator, or is removed when no
# operator runs) and then the namespace, waiting until it is gone.
delete_namespace() {
  local operator_running=$1
  if [[ -n $(k get octc -o name 2>/dev/null) ]]; then
    if $operator_running; then
      k delete octc --all --wait=true --timeout=30s >/dev/null 2>&1 || true
    else
      k delete octc --all --wait=false >/dev/null 2>&1 || true
    fi
    # Whatever still holds a finalizer has no operator left to release it.
    local obj
    for obj in $(k get octc -o name 2>/dev/null); do
      say "warning: removing the finalizer of $obj by hand"
      k patch "$obj" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    done
    say "OctopusCluster deleted"
  fi
  kc delete namespace "$ns" --ignore-not-found --wait=true --timeout=120s >/dev/null 2>&1 ||
    say "warning: namespace $ns is still terminating"
}

stop_process() {
  local pid=$1 what=$2
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    local _
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
  say "stopped $what (pid $pid)"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  $interactive && printf '\033[?25h'
  if ((rc == 130 || rc == 143)); then
    printf '\n%s interrupted\n' "$(stamp)"
  elif ((rc != 0)) && [[ -n $run ]]; then
    local log
    for log in operator.log twin.log; do
      [[ -s $run/$log ]] || continue
      printf -- '--- last lines of %s\n' "$run/$log" >&2
      tail -n 25 "$run/$log" >&2
    done
  fi
  banner "cleaning up"
  if $ns_created; then
    say "deleting OctopusCluster $name (the operator releases what it holds) and namespace $ns"
    local alive=false
    [[ -n $operator_pid ]] && kill -0 "$operator_pid" 2>/dev/null && alive=true
    delete_namespace "$alive"
  fi
  stop_process "$operator_pid" "octopus-operator"
  stop_process "$twin_pid" "octopus-twin"
  if $ns_created && kc get namespace "$ns" >/dev/null 2>&1; then
    say "namespace $ns still exists: the next run deletes it first"
    ((rc != 0)) || rc=1
  elif $ns_created; then
    say "namespace $ns deleted"
  fi
  if ((rc == 0)) && $run_is_ours && [[ ${DEMO_KEEP_RUN_DIR:-0} != 1 ]]; then
    rm -rf "$run"
  else
    say "logs kept in $run"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

banner "Octopus operator demo: namespace $ns, logs in $run"

if kc get namespace "$ns" >/dev/null 2>&1; then
  say "namespace $ns is left from an earlier run: deleting it first"
  delete_namespace false
  kc get namespace "$ns" >/dev/null 2>&1 && fail "namespace $ns could not be deleted"
fi

say "applying the OctopusCluster CRD (crds/octopusclusters.yaml)"
kc apply --server-side --force-conflicts -f "$root/crds/octopusclusters.yaml" >/dev/null
kc wait --for=condition=Established --timeout=60s crd/octopusclusters.octopusoperator.dev >/dev/null

kc create namespace "$ns" >/dev/null
ns_created=true
say "created namespace $ns"

# Background processes get their own process group (job control on while they start),
# so a CTRL-C reaches only this script, which then deletes the cluster while the operator
# and the twin still run, and stops them itself.
export NO_COLOR=1
set -m
"$twin_bin" --bind 127.0.0.1:0 --kubeconfig "$kubeconfig" --namespace "$ns" \
  --run-backup-jobs --start-delay-ms 800 --migration-time-ms 3000 \
  --deployments-per-minute 40 --deployment-duration-min-ms 1000 \
  --deployment-duration-max-ms 4000 </dev/null >"$run/twin.out" 2>"$run/twin.log" &
twin_pid=$!
set +m
for _ in $(seq 100); do
  twin_url=$(sed -n 's/^octopus-twin listening on //p' "$run/twin.out" 2>/dev/null | head -n 1)
  [[ -n $twin_url ]] && break
  kill -0 "$twin_pid" 2>/dev/null || fail "octopus-twin exited at start"
  sleep 0.1
done
[[ -n $twin_url ]] || fail "octopus-twin did not report its address"
say "started octopus-twin (pid $twin_pid) at $twin_url: kubelet for $ns, Octopus API, backup Jobs"

set -m
"$operator_bin" run --namespace "$ns" --metrics-addr 127.0.0.1:0 \
  --api-url-template "$twin_url/{namespace}/{name}" \
  --node-url-template "$twin_url/{namespace}/{service}/{pod}" --poll-interval 500ms \
  </dev/null >"$run/operator.log" 2>&1 &
operator_pid=$!
set +m
say "started octopus-operator (pid $operator_pid) watching $ns"

# ----- observing -----------------------------------------------------------------------

# The cluster as the operator reports it, read into globals by observe().
desired="" current="" ready_nodes="" phase="" schema="" generation=""
up_from="" up_to="" up_change="" up_strategy="" up_step="" up_node="" up_finished=""
nodes=() steps=()
declare -A cond_status=() cond_reason=() cond_gen=()

observe() {
  local out
  out=$(k get octc "$name" -o jsonpath='{.spec.version}{"|"}{.status.currentVersion}{"|"}{.status.readyNodes}{"|"}{.status.phase}{"|"}{.status.schemaVersion}{"|"}{.metadata.generation}{"\n"}{"upgrade|"}{.status.upgrade.from}{"|"}{.status.upgrade.to}{"|"}{.status.upgrade.change}{"|"}{.status.upgrade.strategy}{"|"}{.status.upgrade.step}{"|"}{.status.upgrade.node}{"|"}{.status.upgrade.finishedAt}{"\n"}{range .status.nodes[*]}{"node|"}{.name}{"|"}{.version}{"|"}{.ready}{"|"}{.drained}{"|"}{.runningTasks}{"\n"}{end}{range .status.upgrade.steps[*]}{"step|"}{.action}{"|"}{.node}{"|"}{.state}{"\n"}{end}{range .status.conditions[*]}{"cond|"}{.type}{"|"}{.status}{"|"}{.reason}{"|"}{.observedGeneration}{"\n"}{end}' 2>/dev/null) || return 1
  nodes=() steps=() cond_status=() cond_reason=() cond_gen=()
  local first=true line kind a b c d e f g
  while IFS= read -r line; do
    if $first; then
      IFS='|' read -r desired current ready_nodes phase schema generation <<<"$line"
      first=false
      continue
    fi
    IFS='|' read -r kind a b c d e f g <<<"$line"
    case $kind in
      upgrade) up_from=$a up_to=$b up_change=$c up_strategy=$d up_step=$e up_node=$f up_finished=$g ;;
      node) nodes+=("$a|$b|$c|$d|$e") ;;
      step) steps+=("$a|$b|$c") ;;
      cond) cond_status[$a]=$b cond_reason[$a]=$c cond_gen[$a]=$d ;;
    esac
  done <<<"$out"
}

# cond TYPE [REASON]: the condition is True for the current generation (with that reason).
cond() {
  [[ ${cond_status[$1]:-} == True && ${cond_gen[$1]:-} == "$generation" ]] || return 1
  [[ $# -lt 2 || ${cond_reason[$1]:-} == "$2" ]]
}

# The operator's Events on the cluster not shown yet, oldest first.
declare -A seen_events=()
recent_events=()
new_events() {
  local out line key type reason message
  out=$(k get events --field-selector "involvedObject.kind=OctopusCluster" \
    --sort-by=.metadata.creationTimestamp \
    -o jsonpath='{range .items[*]}{.metadata.uid}{"/"}{.count}{"|"}{.type}{"|"}{.reason}{"|"}{.message}{"\n"}{end}' \
    2>/dev/null) || return 0
  while IFS= read -r line; do
    [[ -n $line ]] || continue
    IFS='|' read -r key type reason message <<<"$line"
    [[ -z ${seen_events[$key]:-} ]] || continue
    seen_events[$key]=1
    local shown
    shown=$(printf '%-7s %-24s %s' "$type" "$reason" "$message")
    recent_events+=("$(stamp) $shown")
    $interactive || say "event   $shown"
  done <<<"$out"
  if ((${#recent_events[@]} > 8)); then
    recent_events=("${recent_events[@]: -8}")
  fi
}

step_line() {
  if [[ -z $up_to ]]; then
    echo "upgrade: none"
    return
  fi
  local state="step ${up_step:--}${up_node:+ on $up_node}"
  [[ -n $up_finished ]] && state="finished"
  echo "upgrade: $up_change $up_from -> $up_to (${up_strategy:--}): $state"
}

# Plain mode: one line per change of what the cluster looks like.
last_line=""
plain_view() {
  local line n nn nv nr nd nt flags parts=()
  for n in "${nodes[@]}"; do
    IFS='|' read -r nn nv nr nd nt <<<"$n"
    flags=not-ready
    if [[ $nr == true ]]; then flags=ready; fi
    if [[ $nd == true ]]; then flags+=",drained"; fi
    parts+=("$nn $nv $flags tasks=$nt")
  done
  line="octc $name: desired=$desired current=${current:--} ready=${ready_nodes:--} status=${phase:--} schema=${schema:--} | $(step_line) | nodes: $(
    IFS=';'
    echo "${parts[*]}"
  )"
  if [[ $line != "$last_line" ]]; then
    say "$line"
    last_line=$line
  fi
}

# Interactive mode: the whole picture, redrawn every second.
screen_view() {
  local title=$1 frame cols
  cols=$(tput cols 2>/dev/null || echo 120)
  frame=$(
    printf 'Octopus operator demo  |  %s  |  %ss\n\n' "$title" "$((SECONDS - started))"
    local said
    for said in "${narration[@]}"; do printf '%s\n' "${said:0:$cols}"; done
    echo
    printf '$ kubectl get octc -n %s\n' "$ns"
    k get octc 2>&1
    echo
    printf '%-10s %-12s %-7s %-8s %s\n' NODE VERSION READY DRAINED RUNNING-TASKS
    local n nn nv nr nd nt
    for n in "${nodes[@]}"; do
      IFS='|' read -r nn nv nr nd nt <<<"$n"
      printf '%-10s %-12s %-7s %-8s %s\n' "$nn" "$nv" "$nr" "$nd" "$nt"
    done
    echo
    printf 'schema %s  |  %s\n' "${schema:--}" "$(step_line)"
    if ((${#steps[@]} > 0)); then
      local s sa sn ss marks=""
      for s in "${steps[@]}"; do
        IFS='|' read -r sa sn ss <<<"$s"
        case $ss in
          Done) marks+="[x]" ;;
          Running) marks+="[>]" ;;
          *) marks+="[_]" ;;
        esac
        marks+="$sa${sn:+($sn)}  "
      done
      fold -s -w "$cols" <<<"$marks"
    fi
    echo
    echo "Events of octc/$name:"
    local e
    for e in "${recent_events[@]}"; do
      printf '  %s\n' "${e:0:$((cols - 3))}"
    done
  )
  printf '\033[H\033[J%s\n' "$frame"
}

view() {
  new_events
  if $interactive; then screen_view "$1"; else plain_view; fi
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# watch_until TITLE PREDICATE: shows the live view every second until PREDICATE holds;
# fails when it has not after the stage timeout or a background process died.
watch_until() {
  local title=$1 predicate=$2 since=$SECONDS tick rest
  $interactive && printf '\033[?25l'
  while :; do
    tick=$(now_ms)
    if observe; then
      view "$title"
      if "$predicate"; then break; fi
    fi
    kill -0 "$operator_pid" 2>/dev/null || fail "octopus-operator exited (see $run/operator.log)"
    kill -0 "$twin_pid" 2>/dev/null || fail "octopus-twin exited (see $run/twin.log)"
    if ((SECONDS - since > stage_timeout)); then
      fail "timed out after ${stage_timeout}s: $title (last: $(step_line); status ${phase:--})"
    fi
    # One picture a second, however long kubectl took.
    rest=$((1000 - ($(now_ms) - tick)))
    ((rest <= 0)) || sleep "$(printf '%d.%03d' $((rest / 1000)) $((rest % 1000)))"
  done
  $interactive && printf '\033[?25h'
  return 0
}

# The twin's event sequence number now (to measure an upgrade's window afterwards).
twin_seq() {
  curl -fsS "$twin_url/_twin/installations/$ns/$name/events" |
    python3 -c 'import json,sys; ev=json.load(sys.stdin); print(ev[-1]["seq"] if ev else 0)'
}

pause() { $interactive && sleep "$1"; return 0; }

# ----- 1. create ---------------------------------------------------------------------

banner "1/4 create a 3-node OctopusCluster on $from_version"
say "\$ kubectl apply -n $ns -f e2e/demo/cluster.yaml   (Secrets + OctopusCluster $name)"
k apply -f "$here/cluster.yaml" >/dev/null
is_ready() { cond Ready && [[ $current == "$from_version" ]]; }
watch_until "1/4 create $name on $from_version" is_ready
say "\$ kubectl wait --for=condition=Ready octc/$name"
k wait --for=condition=Ready "octc/$name" --timeout=30s
say "cluster ready: $ready_nodes nodes on $current, tasks flowing"
pause 3

# ----- 2. patch upgrade --------------------------------------------------------------

banner "2/4 patch upgrade $from_version -> $patch_version (rolling, one node at a time)"
patch_start_seq=$(twin_seq)
say "\$ kubectl patch octc $name --type=merge -p '{\"spec\":{\"version\":\"$patch_version\"}}'"
k patch "octc/$name" --type=merge -p "{\"spec\":{\"version\":\"$patch_version\"}}" >/dev/null
patch_done() {
  [[ $current == "$patch_version" && $up_to == "$patch_version" && -n $up_finished ]] && cond Ready
}
watch_until "2/4 patch upgrade to $patch_version" patch_done
patch_end_seq=$(twin_seq)
say "patch upgrade to $patch_version finished: $ready_nodes nodes ready, strategy $up_strategy"
pause 3

# ----- 3. minor upgrade: blocked, approved, stop-the-world ------------------------------

banner "3/4 minor upgrade $patch_version -> $minor_version (schema change)"
say "\$ kubectl patch octc $name --type=merge -p '{\"spec\":{\"version\":\"$minor_version\"}}'"
k patch "octc/$name" --type=merge -p "{\"spec\":{\"version\":\"$minor_version\"}}" >/dev/null
blocked() { cond UpgradeBlocked SchemaUpgradeNotApproved; }
watch_until "3/4 minor upgrade to $minor_version: waiting for approval" blocked
message=$(k get "octc/$name" -o jsonpath='{.status.conditions[?(@.type=="UpgradeBlocked")].message}')
say "UpgradeBlocked: SchemaUpgradeNotApproved (the cluster still serves ${current:--})"
say "  message: $message"
[[ $current == "$patch_version" ]] || fail "the cluster left $patch_version before approval (current: ${current:--})"
pause 5
say "approving the schema upgrade, as its message asks:"
say "\$ kubectl patch octc $name --type=merge -p '{\"spec\":{\"upgrade\":{\"approvedVersion\":\"$minor_version\"}}}'"
minor_start_seq=$(twin_seq)
k patch "octc/$name" --type=merge -p "{\"spec\":{\"upgrade\":{\"approvedVersion\":\"$minor_version\"}}}" >/dev/null
minor_done() {
  [[ $current == "$minor_version" && $up_to == "$minor_version" && -n $up_finished ]] && cond Ready
}
watch_until "3/4 minor upgrade to $minor_version: stop-the-world" minor_done
say "minor upgrade to $minor_version finished: $ready_nodes nodes ready, schema $schema, strategy $up_strategy"

# ----- 4. summary ----------------------------------------------------------------------

banner "4/4 summary"
say "\$ kubectl get octc -n $ns"
k get octc
say "\$ kubectl describe octc $name   (excerpt: conditions, last backup, events)"
# Top-level blocks of the status worth reading, and the Events.
k describe "octc/$name" | awk '
  /^  [A-Z][A-Za-z ]*:/ { keep = ($0 ~ /^  (Conditions|Last Backup|Current Version|Schema Version|Ready Nodes):/) }
  /^[A-Z][A-Za-z ]*:/ { keep = ($0 ~ /^Events:/) }
  keep { print }'

say "the Octopus twin's counters:"
curl -fsS "$twin_url/_twin/installations/$ns/$name/events" >"$run/twin-events.json" ||
  fail "cannot read the twin's events"
curl -fsS "$twin_url/_twin/installations/$ns/$name" >"$run/twin-installation.json" ||
  fail "cannot read the twin's installation"
python3 - "$run/twin-events.json" "$run/twin-installation.json" \
  "$patch_start_seq" "$patch_end_seq" "$minor_start_seq" <<'PY'
import json, sys

events = json.load(open(sys.argv[1]))
installation = json.load(open(sys.argv[2]))
patch_start, patch_end, minor_start = (int(a) for a in sys.argv[3:6])

def count(kind):
    return sum(1 for e in events if e["type"] == kind)

# Replay the nodes: serving = running and not drained (counted during the patch roll);
# mixed = two versions running at once (counted from the schema upgrade's approval on).
nodes = {}  # name -> [version, running, drained]
min_serving = None
mixed = 0
for e in events:
    t, node = e["type"], e.get("node")
    if t == "NodeRunning":
        nodes[node] = [e["version"], True, e.get("drained", False)]
    elif t in ("NodeStopped", "NodeCrashed") and node in nodes:
        nodes[node][1] = False
    elif t == "NodeDrained" and node in nodes:
        nodes[node][2] = True
    elif t == "NodeUndrained" and node in nodes:
        nodes[node][2] = False
    else:
        continue
    if e["seq"] > minor_start and len({v for v, running, _ in nodes.values() if running}) > 1:
        mixed += 1
    if patch_start < e["seq"] <= patch_end:
        serving = sum(1 for _, running, drained in nodes.values() if running and not drained)
        min_serving = serving if min_serving is None else min(min_serving, serving)

tasks = installation.get("tasks", {})
print(f"  tasks finished: {count('TaskFinished')}   failed: {count('TaskFailed')}   "
      f"canceled: {count('TaskCanceled')}   refused (maintenance mode): "
      f"{installation.get('generator', {}).get('refused_maintenance_mode', 0)}")
print(f"  deployments queued: {installation.get('generator', {}).get('deployments_queued', 0)}   "
      f"tasks by state now: {', '.join(f'{k}={v}' for k, v in sorted(tasks.items())) or 'none'}")
print(f"  fewest nodes serving during the patch roll: {min_serving if min_serving is not None else 'n/a'} of 3")
print(f"  moments with two versions running at once during the schema upgrade: {mixed}")
print(f"  maintenance mode on/off: {count('MaintenanceModeOn')}/{count('MaintenanceModeOff')}   "
      f"schema migrations (creation included): {count('SchemaMigrated')}   "
      f"schema violations: {count('SchemaViolation')}")
schema = installation.get("schema") or {}
print(f"  schema now: {schema.get('line', '-')} (migrated by {schema.get('migrated_by', '-')})")
PY

echo
say "demo finished: $from_version -> $patch_version (rolling) -> $minor_version (stop-the-world, after approval)"
