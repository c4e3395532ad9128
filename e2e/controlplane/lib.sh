# shellcheck shell=bash source-path=SCRIPTDIR
# Shared by up.sh and down.sh (sourced, not run): where a control plane lives and how to
# find, check and stop its processes.
#
# A run directory holds everything one control plane owns: pki/, etcd data, kubeconfigs,
# logs/, one <component>.pid per process and state.env (ports, version). Processes are
# recognised as ours only when their command line names this run directory, so a stale or
# recycled pid is never signalled.
#
# Env: OCTOPUS_OPERATOR_CACHE    cache root (default ~/.cache/octopus-operator)
#      OCTOPUS_OPERATOR_CLUSTER  control plane name (default "default")
#      OCTOPUS_OPERATOR_RUN_DIR  run directory (default <cache>/run/<name>)
#      OCTOPUS_OPERATOR_NODE     1/0: up.sh adds a real node (node.sh) or not; unset:
#                                a node when running as root

# shellcheck source=versions.env
source "$(dirname "${BASH_SOURCE[0]}")/versions.env"

cache=${OCTOPUS_OPERATOR_CACHE:-$HOME/.cache/octopus-operator}
# shellcheck disable=SC2034 # used by the scripts that source this file
bin="$cache/kubernetes-$K8S_VERSION/bin"
run=${OCTOPUS_OPERATOR_RUN_DIR:-$cache/run/${OCTOPUS_OPERATOR_CLUSTER:-default}}
run=${run%/}
components=(kube-controller-manager kube-apiserver etcd) # stop order

log() { printf '[%s] %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Serialises up.sh/down.sh for one run directory (also across test binaries). The lock
# file sits beside the run directory because down.sh removes the directory itself.
take_lock() {
  mkdir -p "$(dirname "$run")"
  exec 9>"$run.lock"
  flock -w 900 9 || die "timed out waiting for $run.lock"
}

# alive PID: the process exists and is not a zombie. (Builtins only: orphans() calls
# this for every process on the machine.)
alive() {
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# ours PID COMPONENT: PID runs COMPONENT's binary with this run directory on its command line.
ours() {
  local pid=$1 name=$2 args
  alive "$pid" || return 1
  { mapfile -d '' args <"/proc/$pid/cmdline"; } 2>/dev/null || return 1
  ((${#args[@]} > 0)) && [[ ${args[0]##*/} == "$name" && "${args[*]}" == *"$run/"* ]]
}

# pid_of COMPONENT: the recorded pid, if it is still ours.
pid_of() {
  local pid
  pid=$(cat "$run/$1.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && ours "$pid" "$1" && echo "$pid"
}

# orphans COMPONENT: every live process of COMPONENT that names this run directory, found
# by scanning /proc, for when pid files were lost (crash in the middle of up.sh).
orphans() {
  local f pid
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    ours "$pid" "$1" && echo "$pid"
  done
  return 0
}

# stop_pid PID: TERM, then KILL after 10 s.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  log "pid $pid ignored SIGTERM for 10s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
}

# stop_all: stops every process of this run directory, recorded or orphaned: the node's
# (node.sh) first, its network last.
stop_all() {
  local c pid
  node_stop
  for c in "${components[@]}"; do
    for pid in $( (pid_of "$c" || true; orphans "$c") | sort -u); do
      log "stopping $c (pid $pid)"
      stop_pid "$pid"
    done
    rm -f "$run/$c.pid"
  done
  node_down
}

# shellcheck source=node.sh
source "$(dirname "${BASH_SOURCE[0]}")/node.sh"
