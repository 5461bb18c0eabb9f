#!/usr/bin/env bash
# Installs the Debian packages trafficpolice's tests and demo use for real,
# when they are missing: iproute2 (ip netns in tests), iptables (nat rules
# inside namespaces, nf_tables backend), dnsmasq (the namespace cluster's
# DNS server), dig (a DNS client inside the sandbox), curl, iperf3;
# containerd and runc (containers, and the Kubernetes harness's runtime);
# busybox-static (the small image `sandbox run --image` tests use);
# passt (pasta) and slirp4netns (the peers `make bench` measures beside
# trafficpolice: what a user without root would otherwise run); passwd
# (useradd) and procps (pkill): the rootless tests create an ordinary user
# and end its processes.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(iproute2 iptables nftables dnsmasq-base dnsutils iputils-ping curl iperf3 ca-certificates containerd runc busybox-static passt slirp4netns passwd procps "$@")
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "installing: ${missing[*]}"
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
