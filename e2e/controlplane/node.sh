# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2154,SC2153
# (run, cache, bin, here come from lib.sh and the caller; pki and the ports from up.sh.)
# The one real node of a control plane (sourced by lib.sh, driven by up.sh and down.sh):
# containerd + runc, kubelet, kube-proxy (iptables) and CoreDNS, with a CNI bridge.
#
# Isolation, so that several control planes can each have a node on one machine and
# `down.sh` can give the host back as it was:
# - Network: the node lives in its own network namespace (octopus-nodeN), joined to the
#   host by one veth pair on 198.18.N.0/30 (host .1, node .2). Pods sit on a bridge
#   inside it (198.18.N.128/25). kubelet's and kube-proxy's iptables chains, conntrack
#   and ports stay in that namespace; the host's iptables are not touched. Nothing routes
#   out: the namespace has no default route (only its /30 to the host and the pod subnet),
#   pods route only 198.18.0.0/15, the namespace's FORWARD chain drops anything leaving
#   through the veth to an address other than the host's end, and the host keeps
#   ip_forward as it was (0 here), so the host never forwards pod traffic.
# - The API server binds the host end (198.18.N.1) and advertises it: its endpoint
#   reconciler points the `kubernetes` Service (198.19.0.1:443) there, so pods reach it
#   through kube-proxy like on any cluster. Host clients use the same address.
# - Mounts: containerd and kubelet run in a mount namespace of their own (slave of the
#   host's), with private tmpfs over the few host paths they insist on (/run/containerd,
#   /var/lib/cni, /var/log/containers, /run/netns): overlay rootfs, volume, netns and
#   kubelet root bind mounts never reach the host and vanish with the last process.
# - cgroups: kubelet's cgroupRoot is /octopus-nodeN in every hierarchy (kubepods below
#   it); no kube/system reserved cgroups, so kubelet touches no other process's cgroup.
# - sysctls kubelet sets (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops, ...)
#   are host-wide: the first node records the originals, the last one down restores them.
#
# Slots (N) and the sysctl record live in /run/octopus-operator-node, under its flock.

node_host_dir=/run/octopus-operator-node
node_dir="$run/node"
# What kubelet's setupKernelTunables may set (here the first three differ).
node_sysctls=(vm.overcommit_memory kernel.panic kernel.panic_on_oops vm.panic_on_oom kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
node_components=(kubelet kube-proxy coredns containerd-shim-runc-v2 containerd kube-scheduler) # stop order
pod_route=198.18.0.0/15
service_cidr=198.19.0.0/24
# shellcheck disable=SC2034 # up.sh puts it in the API server's certificate
service_ip=198.19.0.1
# Host paths containerd/kubelet/CNI write whatever their config says; each gets a private
# tmpfs in the node's mount namespace.
node_private_dirs=(/run/containerd /var/lib/cni /var/log/containers /run/netns)

# node_wanted: whether up.sh adds a node. OCTOPUS_OPERATOR_NODE=1 or 0 decides; unset,
# a node comes up when running as root (it needs network and mount namespaces).
node_wanted() {
  case ${OCTOPUS_OPERATOR_NODE:-} in
    1) true ;;
    0) false ;;
    *) [[ $(id -u) == 0 ]] ;;
  esac
}

# node_global_lock: serialises slot and sysctl bookkeeping across control planes.
node_global_lock() {
  mkdir -p "$node_host_dir/slots"
  exec 8>"$node_host_dir/lock"
  flock -w 60 8 || die "timed out waiting for $node_host_dir/lock"
}
node_global_unlock() { exec 8>&-; }

# node_load: sets NODE_SLOT and the addresses from $node_dir/state.env; fails without one.
node_load() {
  [[ -f "$node_dir/state.env" ]] || return 1
  # shellcheck source=/dev/null
  source "$node_dir/state.env"
  node_addresses "$NODE_SLOT"
}

# node_addresses N: the names and addresses of slot N.
node_addresses() {
  NODE_SLOT=$1
  node_netns="octopus-node$1"
  node_veth="octopus-node$1" # host end; the node end is uplink0
  host_ip="198.18.$1.1"
  node_ip="198.18.$1.2"
  pod_gateway="198.18.$1.129"
  pod_cidr="198.18.$1.128/25"
  node_cgroup="octopus-node$1"
  node_name=$(hostname | tr '[:upper:]' '[:lower:]') # kubelet's default node name
}

# node_net_up: picks a free slot, creates the network namespace, the veth pair and the
# pod bridge. Sets APISERVER_HOST to the host end, which the API server then binds.
node_net_up() {
  command -v ip >/dev/null || die "iproute2 is not installed"
  [[ $(id -u) == 0 ]] || die "a node needs root (network and mount namespaces, cgroups)"
  node_global_lock
  local n slot=""
  for ((n = 1; n <= 250; n++)); do
    if [[ -f "$node_host_dir/slots/$n" ]]; then
      [[ $(cat "$node_host_dir/slots/$n") == "$run" ]] && { slot=$n; break; }
    elif [[ -z $slot ]] && ! ip -4 -o addr show to "198.18.$n.0/24" | grep -q . &&
      [[ ! -e /run/netns/octopus-node$n ]]; then
      slot=$n
    fi
  done
  [[ -n $slot ]] || die "no free node slot (250 nodes up?)"
  # `ip netns add` makes /run/netns a bind mount of its own (and the directory): the
  # last node down undoes what the first one caused.
  if ! compgen -G "$node_host_dir/slots/*" >/dev/null && [[ ! -f "$node_host_dir/netns-host.env" ]]; then
    { [[ -d /run/netns ]] && echo NETNS_DIR_EXISTED=1 || echo NETNS_DIR_EXISTED=0
      mountpoint -q /run/netns && echo NETNS_MOUNT_EXISTED=1 || echo NETNS_MOUNT_EXISTED=0; } >"$node_host_dir/netns-host.env"
  fi
  echo "$run" >"$node_host_dir/slots/$slot"
  node_global_unlock
  node_addresses "$slot"
  mkdir -p "$node_dir"
  echo "NODE_SLOT=$slot" >"$node_dir/state.env"

  node_net_down # leftovers of a crashed run in this slot
  ip netns add "$node_netns"
  ip link add "$node_veth" type veth peer name uplink0 netns "$node_netns"
  ip addr add "$host_ip/30" dev "$node_veth"
  ip link set "$node_veth" up
  # Replies to pods (they reach the host's end through the API server's Service).
  local nsx=(ip -n "$node_netns")
  "${nsx[@]}" link set lo up
  "${nsx[@]}" addr add "$node_ip/30" dev uplink0
  "${nsx[@]}" link set uplink0 up
  "${nsx[@]}" link add cni0 type bridge
  "${nsx[@]}" addr add "$pod_gateway/25" dev cni0
  "${nsx[@]}" link set cni0 up
  ip route add "$pod_cidr" via "$node_ip" dev "$node_veth"
  # Service addresses are only ever DNATed by kube-proxy; this route lets processes in
  # the namespace (CoreDNS) reach them. It points at the bridge, never out.
  "${nsx[@]}" route add "$service_cidr" dev cni0
  ip netns exec "$node_netns" sysctl -qw net.ipv4.ip_forward=1
  # Pod traffic to anything but the host's end of the veth goes nowhere.
  ip netns exec "$node_netns" iptables -w -N OCTOPUS-NODE-EGRESS
  ip netns exec "$node_netns" iptables -w -A OCTOPUS-NODE-EGRESS -d "$host_ip/32" -j RETURN
  ip netns exec "$node_netns" iptables -w -A OCTOPUS-NODE-EGRESS -j DROP
  ip netns exec "$node_netns" iptables -w -I FORWARD -o uplink0 -j OCTOPUS-NODE-EGRESS
  APISERVER_HOST=$host_ip
}

# node_net_down: removes the namespace (its veth and bridge go with it) and the slot.
node_net_down() {
  [[ -n ${node_netns:-} ]] || return 0
  ip netns del "$node_netns" 2>/dev/null || true
  ip link del "$node_veth" 2>/dev/null || true
}

# in_node CMD...: CMD in the node's network namespace (host mounts; not `ip netns exec`,
# which would remount /sys without the cgroup hierarchies).
in_node() { nsenter --net="/run/netns/$node_netns" -- "$@"; }

# node_cgroups_up: the cgroupRoot in every v1 hierarchy (kubelet refuses a missing one).
node_cgroups_up() {
  local h
  for h in /sys/fs/cgroup/*/; do
    mkdir -p "$h$node_cgroup"
    if [[ -f "$h/cpuset.cpus" ]]; then
      cat "$h/cpuset.cpus" >"$h$node_cgroup/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h$node_cgroup/cpuset.mems"
    fi
  done
}

# node_cgroups_down: kills every process left in the node's cgroups (pods' containers),
# then removes the cgroups, deepest first.
node_cgroups_down() {
  [[ -n ${node_cgroup:-} ]] || return 0
  local i pids d
  for ((i = 0; i < 50; i++)); do
    pids=$(find /sys/fs/cgroup/*/"$node_cgroup" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u || true)
    [[ -z $pids ]] && break
    # shellcheck disable=SC2086 # one pid per word
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  for d in /sys/fs/cgroup/*/"$node_cgroup"; do
    [[ -d $d ]] || continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [[ -d $d ]] && log "warning: could not remove cgroup $d"
  done
  return 0
}

# node_sysctls_claim: records the host's values before the first node changes them.
node_sysctls_claim() {
  node_global_lock
  if [[ ! -f "$node_host_dir/sysctls.env" ]]; then
    local s
    for s in "${node_sysctls[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$node_host_dir/sysctls.env"
  fi
  node_global_unlock
}

# node_release: gives the slot back; the last node restores the recorded sysctls.
node_release() {
  node_global_lock
  rm -f "$node_host_dir/slots/$NODE_SLOT"
  if [[ -f "$node_host_dir/sysctls.env" ]] && ! compgen -G "$node_host_dir/slots/*" >/dev/null; then
    local line
    while IFS= read -r line; do sysctl -qw "$line" || log "warning: cannot restore $line"; done <"$node_host_dir/sysctls.env"
    rm -f "$node_host_dir/sysctls.env"
    log "host sysctls restored: $(paste -sd' ' <<<"$(sysctl "${node_sysctls[@]}")")"
  fi
  if [[ -f "$node_host_dir/netns-host.env" ]] && ! compgen -G "$node_host_dir/slots/*" >/dev/null &&
    ! compgen -G "/run/netns/*" >/dev/null; then
    local NETNS_DIR_EXISTED NETNS_MOUNT_EXISTED
    # shellcheck source=/dev/null
    source "$node_host_dir/netns-host.env"
    ((NETNS_MOUNT_EXISTED)) || umount /run/netns 2>/dev/null || true
    ((NETNS_DIR_EXISTED)) || rmdir /run/netns 2>/dev/null || true
    rm -f "$node_host_dir/netns-host.env"
  fi
  node_global_unlock
}

# node_config: containerd, CNI, kubelet, kube-proxy and CoreDNS configuration files.
node_config() {
  local pause_image cni_bin="$cache/cni-plugins-$CNI_PLUGINS_VERSION/bin"
  pause_image=$("$here/node-images.sh" --list | awk 'NR==1 {print $1}')
  mkdir -p "$node_dir"/{containerd,cni/net.d,cni/ipam,kubelet,pod-logs,volume-plugins,logs}
  cat >"$node_dir/containerd/config.toml" <<EOF
version = 2
root = "$node_dir/containerd/root"
state = "$node_dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$node_dir/containerd/containerd.sock"
[ttrpc]
  address = "$node_dir/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$node_dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  # root here lacks CAP_SYS_RESOURCE: runc must not lower oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin"
    conf_dir = "$node_dir/cni/net.d"
  # Nothing is pulled: every image is imported. A missing one (a scenario's image that
  # cannot be pulled) must fail here, never dial a registry: docker.io and any other
  # registry resolve to a closed port on the node's own loopback.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$node_dir/containerd/certs.d"
EOF
  local registry
  for registry in _default docker.io; do
    mkdir -p "$node_dir/containerd/certs.d/$registry"
    cat >"$node_dir/containerd/certs.d/$registry/hosts.toml" <<EOF
server = "http://127.0.0.1:1"
[host."http://127.0.0.1:1"]
  capabilities = ["pull", "resolve"]
EOF
  done
  # Pods get only a route to 198.18.0.0/15 (their subnet, the Services, the host's end):
  # no default route, and ipMasq off.
  cat >"$node_dir/cni/net.d/10-octopus.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "octopus-node",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$node_dir/cni/ipam",
        "ranges": [[{"subnet": "$pod_cidr", "gateway": "$pod_gateway"}]],
        "routes": [{"dst": "$pod_route"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat >"$node_dir/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$node_dir/containerd/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /$node_cgroup
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failCgroupV1: false
failSwapOn: false
address: $node_ip
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [$pod_gateway]
resolvConf: ""
podLogsDir: $node_dir/pod-logs
volumePluginDir: $node_dir/volume-plugins
registerWithTaints:
- {key: octopus-operator.dev/real-node, value: "true", effect: NoSchedule}
# Images cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The disk is the developer's machine, shared with builds: evict (and taint the node
# with disk-pressure) only when it is really about to fill, not at the default 10-15%.
evictionHard: {memory.available: 100Mi, nodefs.available: 1Gi, imagefs.available: 1Gi, nodefs.inodesFree: 1%, imagefs.inodesFree: 1%}
rotateCertificates: false
serializeImagePulls: false
EOF
  cat >"$node_dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $run/kube-proxy.kubeconfig}
clusterCIDR: $pod_cidr
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$node_ip/32]
# 0 = leave the kernel's conntrack settings alone (some are host-wide).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}
iptables: {localhostNodePorts: false}
EOF
  cat >"$node_dir/Corefile" <<EOF
.:53 {
    bind $pod_gateway
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $run/coredns.kubeconfig
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
}
EOF
}

# node_start NAME ARGS...: like start(), inside the node's network namespace. containerd
# also gets its own mount namespace; kubelet joins it (it must see containerd's mounts).
node_start() {
  local name=$1 enter=(nsenter --net="/run/netns/$node_netns")
  shift
  case $name in
    containerd)
      # shellcheck disable=SC2016 # expanded by the inner shell
      enter=(env "OCTOPUS_NODE_PRIVATE_DIRS=${node_private_dirs[*]}"
        unshare --mount --propagation slave "${enter[@]}" /bin/sh -ec '
        for d in $OCTOPUS_NODE_PRIVATE_DIRS; do mount -t tmpfs -o mode=0755 octopus-node "$d"; done
        exec "$@"' sh "$(command -v containerd)")
      ;;
    kubelet) enter+=(--mount="/proc/$(pid_of containerd)/ns/mnt") ;;
  esac
  case $name in
    containerd) ;;
    kubelet | kube-proxy | coredns | kube-scheduler) enter+=("$(node_binary "$name")") ;;
  esac
  setsid "${enter[@]}" "$@" </dev/null >"$run/logs/$name.log" 2>&1 9>&- 8>&- &
  local pid=$! i
  echo "$pid" >"$run/$name.pid"
  # The wrappers (env, unshare, nsenter, sh) exec the component: wait until it shows.
  for ((i = 0; i < 100; i++)); do
    ours "$pid" "$name" && return 0
    alive "$pid" || break
    sleep 0.05
  done
  die "$name did not start (see $run/logs/$name.log)"
}

node_binary() {
  case $1 in
    coredns) echo "$cache/coredns-$COREDNS_VERSION/bin/coredns" ;;
    *) echo "$bin/$1" ;;
  esac
}

# api_create PATH JSON: creates an object as the admin; an existing one is fine.
api_create() {
  local code
  code=$(curl --silent --output /dev/null --write-out '%{http_code}' --max-time 5 --cacert "$pki/ca.crt" \
    --cert "$pki/admin.crt" --key "$pki/admin.key" -X POST -H 'Content-Type: application/json' \
    --data "$2" "https://$APISERVER_HOST:$APISERVER_PORT$1")
  [[ $code == 201 || $code == 409 ]] || die "creating $1 answered HTTP $code"
}

# coredns_rbac: what CoreDNS's kubernetes plugin reads, for its own user.
coredns_rbac() {
  api_create /apis/rbac.authorization.k8s.io/v1/clusterroles '{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"octopus-operator:coredns"},"rules":[{"apiGroups":[""],"resources":["services","pods","namespaces"],"verbs":["list","watch"]},{"apiGroups":["discovery.k8s.io"],"resources":["endpointslices"],"verbs":["list","watch"]}]}'
  api_create /apis/rbac.authorization.k8s.io/v1/clusterrolebindings '{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"octopus-operator:coredns"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"octopus-operator:coredns"},"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"User","name":"octopus-operator:coredns"}]}'
}

# node_ready: the Node object reports Ready (kubelet registered and its runtime works).
node_ready() {
  api "/api/v1/nodes/$node_name" | tr -d ' \n' | grep -q '"type":"Ready","status":"True"'
}

# node_up: starts containerd, imports the images, then kubelet, kube-scheduler,
# kube-proxy and CoreDNS, and waits for the Node to be Ready.
node_up() {
  local f
  for f in containerd runc iptables nsenter unshare; do
    command -v "$f" >/dev/null || die "$f is not installed (apt: containerd runc iptables util-linux)"
  done
  for f in /run/containerd /var/lib/cni /var/log/containers; do
    [[ -d $f ]] || { mkdir -p "$f" && echo "$f" >>"$node_host_dir/created-dirs"; }
  done
  node_sysctls_claim
  node_cgroups_up
  node_config

  # The mount namespace is entered by a shell that execs containerd: pid_of matches the
  # exec'd process by its command line.
  node_start containerd --config "$node_dir/containerd/config.toml"
  wait_for "containerd" 30 test -S "$node_dir/containerd/containerd.sock"
  local name archive
  while read -r name archive; do
    ctr --address "$node_dir/containerd/containerd.sock" -n k8s.io images import --all-platforms "$archive" >/dev/null ||
      die "cannot import $archive"
  done < <("$here/node-images.sh" --list)
  log "containerd ready, images imported ($(elapsed))"

  node_start kubelet --config="$node_dir/kubelet/config.yaml" --kubeconfig="$run/kubelet.kubeconfig" \
    --root-dir="$node_dir/kubelet" --node-ip="$node_ip" --v=1
  node_start kube-scheduler --kubeconfig="$run/kube-scheduler.kubeconfig" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port=10259 --profiling=false
  node_start kube-proxy --config="$node_dir/kube-proxy.yaml" --hostname-override="$node_name"
  node_start coredns -conf "$node_dir/Corefile"
  wait_for "node $node_name Ready" 120 node_ready
  log "node $node_name Ready on $node_ip, pods on $pod_cidr ($(elapsed))"
}

# node_stop: stops the node's processes and containers and removes its cgroups. The
# network stays until node_down: the API server (stopped after this) dials the address
# it binds, on the host's end of the veth, while it shuts down.
node_stop() {
  node_load 2>/dev/null || return 0
  local c pid
  for c in "${node_components[@]}"; do
    for pid in $( (pid_of "$c" || true; orphans "$c") | sort -u); do
      log "stopping $c (pid $pid)"
      stop_pid "$pid"
    done
    rm -f "$run/$c.pid"
    # Containers outlive their shims: kill them once kubelet and the shims are gone.
    if [[ $c == containerd-shim-runc-v2 ]]; then node_cgroups_down; fi
  done
  node_cgroups_down
}

# node_down: node_stop, then gives back the namespace, the slot and (last node) the
# sysctls and the host directories. A no-op without a node.
node_down() {
  node_load 2>/dev/null || return 0
  local f
  node_stop
  node_net_down
  node_release
  node_global_lock
  if [[ -f "$node_host_dir/created-dirs" ]] && ! compgen -G "$node_host_dir/slots/*" >/dev/null; then
    while IFS= read -r f; do rmdir "$f" 2>/dev/null || true; done <"$node_host_dir/created-dirs"
    rm -f "$node_host_dir/created-dirs"
  fi
  node_global_unlock
  rm -f "$node_dir/state.env"
  log "node $NODE_SLOT down"
}
