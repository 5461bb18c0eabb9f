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
# and end its processes; unzip, for the Go toolchain below.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(iproute2 iptables nftables dnsmasq-base dnsutils iputils-ping curl iperf3 ca-certificates containerd runc busybox-static passt slirp4netns passwd procps unzip "$@")
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "installing: ${missing[*]}"
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Go: the module needs 1.26 and Debian 12 ships 1.19, which cannot switch
# toolchains by itself. Without a new enough go in /usr/local/go or on PATH,
# install Go's own toolchain release from the Go module proxy (the module
# golang.org/toolchain, what GOTOOLCHAIN=auto fetches) into /usr/local/go,
# checked against the hashes pinned here.
go_version=1.26.8
declare -A go_zip_sha256=(
	[amd64]=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7
	[arm64]=02b36b6787b3ac767668f630e2998df45a3b1f9ffee08d1bf3ef6487cd658d99
)
go_is_new_enough() {
	local v
	v=$(PATH="/usr/local/go/bin:$PATH" go env GOVERSION 2>/dev/null) || return 1
	v=${v#go}
	local major=${v%%.*} rest=${v#*.}
	local minor=${rest%%.*}
	((major > 1 || (major == 1 && minor >= 26)))
}
if ! go_is_new_enough; then
	arch=$(dpkg --print-architecture)
	want=${go_zip_sha256[$arch]:-}
	if [[ -z $want ]]; then
		echo "install-deps: no Go toolchain pinned for $arch: install Go $go_version or newer in /usr/local/go" >&2
		exit 1
	fi
	if [[ -e /usr/local/go ]]; then
		echo "install-deps: /usr/local/go holds a Go older than 1.26; move it away, or install Go $go_version there" >&2
		exit 1
	fi
	echo "installing Go $go_version from the Go module proxy into /usr/local/go"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	module="golang.org/toolchain@v0.0.1-go$go_version.linux-$arch"
	curl -fsSL -o "$tmp/go.zip" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$go_version.linux-$arch.zip"
	echo "$want  $tmp/go.zip" | sha256sum --check --quiet
	unzip -q "$tmp/go.zip" -d "$tmp"
	# Module zips keep no file modes: the programs must be made executable.
	chmod 0755 "$tmp/$module"/bin/* "$tmp/$module"/pkg/tool/*/*
	mv "$tmp/$module" /usr/local/go
	/usr/local/go/bin/go version
fi
