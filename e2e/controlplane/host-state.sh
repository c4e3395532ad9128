#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Prints what a real node (node.sh) can change on the host, so that the state before
# `make cluster-up` and after `make cluster-down` can be compared (`make host-state`;
# the two printouts must be equal):
#   sysctls kubelet sets, KUBE-*/CNI-*/OCTOPUS-* chains in the host's iptables and
#   ip6tables (all tables), network namespaces, links (veth, bridges), mounts (the node's
#   run directory, the kubelet root, netns, containerd/CNI paths), cgroups (the node's
#   cgroupRoot and any kubepods), and the node's processes.
#
# Other control planes' nodes may run on the same machine at the same time, so what is
# named after a node slot (octopus-nodeN: netns, veth, cgroupRoot) is shown only for this
# control plane's slot (while it is up) and for slots no control plane holds (leaks);
# other control planes' slots are left out. Host-wide things (sysctls, the host's
# iptables, kubelet paths outside every run directory) are shown whole; the sysctls
# another node holds changed are marked with the values the last node down restores.
#
# Usage: host-state.sh        (env: lib.sh's, e.g. OCTOPUS_OPERATOR_CLUSTER=mine)
# No pipefail: a grep that finds nothing is an empty section, not an error.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

mine=""
if node_load 2>/dev/null; then mine=$NODE_SLOT; fi

# shown NAME: whether an octopus-nodeN name belongs in this printout (ours, or leaked).
shown() {
  local n=${1##*octopus-node}
  n=${n%%[!0-9]*}
  [[ -z $n ]] && return 0
  [[ $n == "$mine" ]] && return 0
  [[ ! -f "$node_host_dir/slots/$n" ]]
}

# filter: keeps the lines naming no octopus-nodeN, or one `shown` accepts.
filter() {
  local line name
  while IFS= read -r line; do
    name=$(grep -o 'octopus-node[0-9]*' <<<"$line" | head -1 || true)
    if [[ -z $name ]] || shown "$name"; then echo "$line"; fi
  done
}

section() { printf '== %s\n' "$1"; }
none() { local out; out=$(cat); if [[ -n $out ]]; then echo "$out"; else echo "(none)"; fi; }

others=$(for f in "$node_host_dir"/slots/*; do
  [[ -f $f ]] || continue
  n=${f##*/}
  [[ $n == "$mine" ]] || echo "$n:$(basename "$(cat "$f")")"
done | paste -sd' ')
echo "# host state for control plane $(basename "$run") (node slot: ${mine:-none})"
echo "# other control planes' node slots, left out: ${others:-none}"

section "sysctls"
for s in "${node_sysctls[@]}"; do
  v=$(sysctl -n "$s")
  saved=$(sed -n "s/^$s=//p" "$node_host_dir/sysctls.env" 2>/dev/null || true)
  if [[ -n $saved && $saved != "$v" ]]; then
    echo "$s = $v (held by a running node; restored to $saved by the last one down)"
  else
    echo "$s = $v"
  fi
done

for tool in iptables ip6tables; do
  section "$tool chains in the host's network namespace (KUBE-*, CNI-*, OCTOPUS-*)"
  if command -v "$tool-save" >/dev/null; then
    "$tool-save" 2>/dev/null | grep -E '^(\*|:(KUBE|CNI|OCTOPUS)-)' | grep -v '^\*' | sort | none
  else
    echo "($tool-save not installed)"
  fi
done

section "network namespaces (octopus-node*, cni-*)"
ip netns list 2>/dev/null | grep -E 'octopus-node|cni-' | filter | none

section "links in the host's namespace (octopus-node*, veth, bridges, cni*)"
ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 |
  grep -E '^(octopus-node|veth|cni|flannel|cbr|kube)' | filter | none
ip -o link show type bridge 2>/dev/null | awk -F': ' '{print "bridge " $2}' | filter | grep -v '^bridge docker' || true

section "routes to 198.18.0.0/15 in the host's namespace"
ip -4 route show 2>/dev/null | grep -E '^198\.(18|19)\.' | filter | none

section "mounts (run directories, kubelet, netns, containerd, CNI)"
grep -E " ($cache/run/|/var/lib/kubelet|/run/netns|/run/containerd|/var/lib/cni|/var/log/containers|/var/lib/containerd)" /proc/self/mountinfo |
  awk '{print $5, $9, $10}' | sed "s|$cache/run/|<run>/|" | filter | sort | none

section "host directories a node creates when missing"
for d in "${node_private_dirs[@]}"; do [[ -e $d ]] && echo "$d exists"; done | none

section "cgroups (octopus-node* cgroupRoots, kubepods)"
{
  for d in /sys/fs/cgroup/*/octopus-node* /sys/fs/cgroup/octopus-node*; do
    [[ -d $d ]] && echo "$d ($(find "$d" -mindepth 1 -type d | wc -l) below)"
  done
  find /sys/fs/cgroup -maxdepth 3 -type d -name 'kubepods*' -not -path '*/octopus-node*' 2>/dev/null
} | sed 's|/sys/fs/cgroup/||' | filter | sort | none

section "processes of this control plane's node"
for c in "${node_components[@]}"; do orphans "$c"; done | sort -u |
  while read -r pid; do echo "$pid $(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-80)"; done | none

# Where pod traffic is stopped from leaving the machine (node.sh, node_net_up): inside the
# node's namespace, only while this control plane's node is up.
if [[ -n $mine ]]; then
  section "egress guard in $node_netns: routes (no default route), pod routes, FORWARD"
  ip -n "$node_netns" -4 route show
  echo "-- pods' routes (CNI conflist): $(grep -o '"routes": \[[^]]*\]' "$node_dir/cni/net.d/10-octopus.conflist")"
  in_node iptables -w -S FORWARD | grep -E 'uplink0|^-P'
  in_node iptables -w -S OCTOPUS-NODE-EGRESS
  echo "-- masquerading out of uplink0: $(in_node iptables -w -t nat -S POSTROUTING | grep -c -- '-o uplink0.*MASQUERADE' || true) rules"
  echo "-- host ip_forward: $(sysctl -n net.ipv4.ip_forward), node's: $(in_node sysctl -n net.ipv4.ip_forward)"
fi
