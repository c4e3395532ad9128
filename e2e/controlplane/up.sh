#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Starts a real Kubernetes control plane on 127.0.0.1 without Docker: etcd,
# kube-apiserver (RBAC, ServiceAccount admission, service-account signing keys) and
# kube-controller-manager (all default controllers: StatefulSets and Jobs create Pods,
# the garbage collector follows owner references, service accounts get tokens). Services
# get addresses from 198.19.0.0/24 (the `kubernetes` Service is 198.19.0.1).
#
# Without a node (the default), no kubelet and no scheduler run: Pods stay Pending with
# an empty nodeName, and the `kubernetes` Service gets no endpoints (the endpoint
# reconciler refuses loopback addresses). With OCTOPUS_OPERATOR_NODE=1 a real node joins
# (node.sh): the API server then binds and advertises the host's end of the node's veth
# (198.18.N.1) instead of 127.0.0.1, so pods reach it through the `kubernetes` Service;
# kube-scheduler, kubelet, containerd, kube-proxy and CoreDNS run, and the node is tainted
# octopus-operator.dev/real-node=true:NoSchedule so that only pods tolerating it land
# there (the twin keeps playing kubelet for the others); a namespace opts its pods in
# with the PodTolerationRestriction annotation scheduler.alpha.kubernetes.io/defaultTolerations.
#
# The API server writes an audit log (Metadata level: who did what to which resource, no
# bodies) to <run>/audit/audit.log, JSON lines, rotated at 100 MB with one backup kept;
# e2e/tests/rbac_audit.rs reads it to compare what the operator's ServiceAccount used with
# what the chart grants. down.sh removes it with the rest of the state.
#
# Idempotent: a healthy control plane in the run directory is reused; anything else there
# (stale pids, half-started processes, old ports) is stopped and replaced by a fresh one
# with new certificates and an empty etcd. Prints the admin kubeconfig path on stdout;
# progress goes to stderr. Builds the binaries first (build.sh) if they are missing.
#
# Usage: export KUBECONFIG=$(e2e/controlplane/up.sh)
# Env (besides lib.sh's): ports default to free ones picked at start
#   OCTOPUS_OPERATOR_APISERVER_PORT, OCTOPUS_OPERATOR_ETCD_PORT,
#   OCTOPUS_OPERATOR_ETCD_PEER_PORT, OCTOPUS_OPERATOR_KCM_PORT
#   OCTOPUS_OPERATOR_CONTROLLERS   kube-controller-manager --controllers (default "*")
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

pki="$run/pki"
kubeconfig="$run/kubeconfig"
started=$(date +%s%N)
elapsed() { echo "$((($(date +%s%N) - started) / 1000000)) ms"; }

# curl as the cluster admin against the API server.
api() {
  curl --silent --fail --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" \
    --key "$pki/admin.key" "https://$APISERVER_HOST:$APISERVER_PORT$1"
}

# healthy: every process recorded, ours, the pinned version, and answering.
healthy() {
  [[ -f "$run/state.env" && -f "$kubeconfig" ]] || return 1
  # shellcheck source=/dev/null
  source "$run/state.env"
  [[ ${STATE_K8S_VERSION:-} == "$K8S_VERSION" ]] || return 1
  [[ -f "$run/audit-policy.yaml" ]] || return 1 # started before the audit log existed
  local c
  for c in "${components[@]}"; do pid_of "$c" >/dev/null || return 1; done
  [[ $(api /readyz) == ok ]] || return 1
  if [[ ${STATE_NODE:-0} == 1 ]]; then
    node_load || return 1
    for c in containerd kubelet kube-scheduler kube-proxy coredns; do pid_of "$c" >/dev/null || return 1; done
    node_ready || return 1
  elif node_wanted; then
    return 1
  fi
  curl --silent --fail --max-time 2 --insecure "https://127.0.0.1:$KCM_PORT/healthz" >/dev/null
}

take_lock
if healthy; then
  log "control plane $K8S_VERSION already running in $run (apiserver $APISERVER_HOST:$APISERVER_PORT)"
  echo "$kubeconfig"
  exit 0
fi

if ! "$here/build.sh" --check; then
  log "binaries for $K8S_VERSION are missing; building them (long on a cold cache)"
  "$here/build.sh" >&2
fi
command -v openssl >/dev/null || die "openssl is not installed"
command -v curl >/dev/null || die "curl is not installed"

# Whatever is left of an earlier run goes: a crashed control plane is never half-reused.
stop_all
rm -rf "$run"
mkdir -p "$pki" "$run/logs"

failed() {
  local rc=$?
  ((rc != 0)) || return 0
  log "start failed (exit $rc); stopping what was started. Last log lines:"
  local c
  for c in "${components[@]}" "${node_components[@]}"; do
    [[ -f "$run/logs/$c.log" ]] && { echo "--- $c ($run/logs/$c.log)"; tail -n 15 "$run/logs/$c.log"; } >&2
  done
  stop_all
  exit "$rc"
}
trap failed EXIT

# port VAR: the env override or a free loopback port outside the ephemeral range.
taken=" "
port() {
  local var=$1 p i
  p=${!var:-}
  if [[ -n $p ]]; then
    ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || die "$var=$p is in use by another process"
  else
    for ((i = 0; i < 200; i++)); do
      p=$((20000 + RANDOM % 12000))
      [[ $taken != *" $p "* ]] && ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break
    done
  fi
  taken+="$p "
  printf -v "${var#OCTOPUS_OPERATOR_}" '%s' "$p"
}
port OCTOPUS_OPERATOR_ETCD_PORT
port OCTOPUS_OPERATOR_ETCD_PEER_PORT
port OCTOPUS_OPERATOR_APISERVER_PORT
port OCTOPUS_OPERATOR_KCM_PORT

APISERVER_HOST=127.0.0.1
STATE_NODE=0
if node_wanted; then
  node_net_up # sets APISERVER_HOST
  STATE_NODE=1
fi

# --- certificates: one CA signs the serving cert and the client certs (EC P-256: instant).
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/$1.key" 2>/dev/null; }
# sign NAME SUBJECT EXTENSIONS...: a leaf certificate for $pki/NAME.key, signed by the CA.
sign() {
  local name=$1 subj=$2
  shift 2
  newkey "$name"
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" "$@" >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days 30 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}
newkey ca
openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=octopus-operator-e2e-ca" -days 30 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
  -out "$pki/ca.crt"
sign apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth" \
  "subjectAltName=IP:127.0.0.1,IP:$APISERVER_HOST,DNS:localhost,IP:$service_ip,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
sign admin "/O=system:masters/CN=octopus-operator-e2e-admin" "extendedKeyUsage=clientAuth"
sign controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
if ((STATE_NODE)); then
  sign kubelet "/O=system:nodes/CN=system:node:$node_name" "extendedKeyUsage=clientAuth"
  sign kube-scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
  sign kube-proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
  sign coredns "/CN=octopus-operator:coredns" "extendedKeyUsage=clientAuth"
  sign apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
fi
newkey sa # service-account token signing key
openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
chmod 600 "$pki"/*.key

# write_kubeconfig FILE USER: a self-contained kubeconfig (certificates embedded).
write_kubeconfig() {
  local b64=(base64 -w0)
  cat >"$1.tmp" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: octopus-e2e
  cluster:
    server: https://$APISERVER_HOST:$APISERVER_PORT
    certificate-authority-data: $("${b64[@]}" <"$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $("${b64[@]}" <"$pki/$2.crt")
    client-key-data: $("${b64[@]}" <"$pki/$2.key")
contexts:
- name: octopus-e2e
  context:
    cluster: octopus-e2e
    user: $2
    namespace: default
current-context: octopus-e2e
KUBECONFIG
  chmod 600 "$1.tmp"
  mv "$1.tmp" "$1"
}
write_kubeconfig "$run/controller-manager.kubeconfig" controller-manager
if ((STATE_NODE)); then
  for c in kubelet kube-scheduler kube-proxy coredns; do write_kubeconfig "$run/$c.kubeconfig" "$c"; done
fi
log "certificates ready ($(elapsed))"

# start COMPONENT ARGS...: runs the binary detached (own session, no inherited lock fd).
start() {
  local name=$1
  shift
  setsid "$bin/$name" "$@" </dev/null >"$run/logs/$name.log" 2>&1 9>&- &
  echo $! >"$run/$name.pid"
}
# wait_for WHAT SECONDS COMMAND...: polls COMMAND every 100 ms; fails if a process died.
wait_for() {
  local what=$1 secs=$2 i c
  shift 2
  for ((i = 0; i < secs * 10; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    for c in "${components[@]}" "${node_components[@]}"; do
      [[ -f "$run/$c.pid" ]] && ! pid_of "$c" >/dev/null && die "$c exited while waiting for $what"
    done
    sleep 0.1
  done
  die "timed out after ${secs}s waiting for $what"
}

start etcd --name=octopus-e2e --data-dir="$run/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="octopus-e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync --log-level=warn
wait_for "etcd /health" 30 curl --silent --fail --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"
log "etcd ready on 127.0.0.1:$ETCD_PORT ($(elapsed))"

# With a node, the API server's own endpoint reconciler keeps the `kubernetes` Service
# pointing at the address it binds; without one that address is loopback, which the
# reconciler refuses, so it is off.
apiserver_node_args=(--endpoint-reconciler-type=none --authorization-mode=RBAC)
if ((STATE_NODE)); then
  apiserver_node_args=(--endpoint-reconciler-type=lease "--authorization-mode=Node,RBAC"
    --kubelet-preferred-address-types=InternalIP
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" --kubelet-client-key="$pki/apiserver-kubelet-client.key")
fi
# Audit: Metadata for requests by people and ServiceAccounts; nothing for the node's own
# components and the health probes, which would only make the log long.
mkdir -p "$run/audit"
cat >"$run/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    userGroups: ["system:nodes"]
  - level: None
    users: ["system:kube-scheduler", "system:kube-proxy", "system:kube-controller-manager", "system:apiserver"]
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*"]
  - level: Metadata
POLICY
start kube-apiserver --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address="$APISERVER_HOST" --advertise-address="$APISERVER_HOST" --secure-port="$APISERVER_PORT" \
  --cert-dir="$run/apiserver" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --enable-admission-plugins=ServiceAccount,PodTolerationRestriction \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --service-cluster-ip-range="$service_cidr" --allow-privileged=true --profiling=false \
  --audit-policy-file="$run/audit-policy.yaml" --audit-log-path="$run/audit/audit.log" \
  --audit-log-format=json --audit-log-mode=blocking \
  --audit-log-maxsize=100 --audit-log-maxbackup=1 --audit-log-maxage=1 \
  "${apiserver_node_args[@]}"
wait_for "kube-apiserver /readyz" 120 api /readyz
log "kube-apiserver ready on $APISERVER_HOST:$APISERVER_PORT ($(elapsed))"

# No --authentication/authorization-kubeconfig: its own HTTPS port only needs /healthz,
# which is always allowed.
start kube-controller-manager --kubeconfig="$run/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$run/controller-manager" \
  --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/sa.key" \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
  --use-service-account-credentials=true --leader-elect=false \
  --controllers="${OCTOPUS_OPERATOR_CONTROLLERS:-*}" --profiling=false \
  --flex-volume-plugin-dir="$run/flexvolume"
wait_for "kube-controller-manager /healthz" 60 \
  curl --silent --fail --max-time 2 --insecure "https://127.0.0.1:$KCM_PORT/healthz"
# The serviceaccount controller creating `default` shows the controllers really run.
wait_for "the default ServiceAccount" 60 api /api/v1/namespaces/default/serviceaccounts/default
log "kube-controller-manager ready on 127.0.0.1:$KCM_PORT ($(elapsed))"

write_kubeconfig "$kubeconfig" admin
if ((STATE_NODE)); then
  coredns_rbac
  node_up
fi
cat >"$run/state.env" <<STATE
STATE_K8S_VERSION=$K8S_VERSION
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
KCM_PORT=$KCM_PORT
APISERVER_HOST=$APISERVER_HOST
STATE_NODE=$STATE_NODE
STATE
trap - EXIT
log "control plane $K8S_VERSION up in $(elapsed); logs in $run/logs; kubeconfig:"
echo "$kubeconfig"
