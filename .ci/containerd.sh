#!/usr/bin/env bash
# Starts and stops the containerd daemon that `sandbox run --image`, `images
# import` and their tests use: Debian's containerd with runc, on the default
# socket, started only when nothing answers there already (a developer's own
# daemon is used as it is), and stopped only if this script started it.
#
#   .ci/containerd.sh start    # install nothing; needs the containerd and runc packages
#   .ci/containerd.sh stop
#   .ci/containerd.sh with CMD...   # start if needed, run CMD, stop only what this call started
#
# No systemd here, so the daemon runs in the background with a pid file.
set -euo pipefail

address=${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}
conf_dir=/run/tp-containerd
pid_file=$conf_dir/containerd.pid
log_file=$conf_dir/containerd.log

# ctr waits 10 s for a socket that is not there: look for it first.
answers() { [ -S "$address" ] && ctr --address "$address" --connect-timeout 2s version >/dev/null 2>&1; }

start() {
	if answers; then
		echo "containerd already answers at $address; using it"
		return 0
	fi
	command -v containerd >/dev/null || { echo "containerd is not installed: apt-get install containerd runc" >&2; exit 1; }
	mkdir -p "$conf_dir"
	# The CRI plugin serves the Kubernetes test harness (test/k8s), which
	# cannot run a daemon of its own: /run/containerd and /opt/containerd
	# are fixed paths. This machine needs restrict_oom_score_adj (runc may
	# not raise oom_score_adj without CAP_SYS_RESOURCE), cgroupfs (cgroup
	# v1, no systemd) and a pause image imported locally (no registry).
	# CNI plugins and networks live under $conf_dir/cni, which only the
	# harness fills while its cluster runs.
	mkdir -p "$conf_dir/cni/bin" "$conf_dir/cni/net.d"
	cat >"$conf_dir/config.toml" <<-EOF
		version = 2
		root = "/var/lib/containerd"
		state = "/run/containerd"
		[grpc]
		  address = "$address"
		[plugins."io.containerd.grpc.v1.cri"]
		  sandbox_image = "localhost/pause:v1"
		  restrict_oom_score_adj = true
		  enable_unprivileged_ports = true
		  [plugins."io.containerd.grpc.v1.cri".containerd]
		    snapshotter = "overlayfs"
		    default_runtime_name = "runc"
		    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
		      runtime_type = "io.containerd.runc.v2"
		      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
		        SystemdCgroup = false
		  [plugins."io.containerd.grpc.v1.cri".cni]
		    bin_dir = "$conf_dir/cni/bin"
		    conf_dir = "$conf_dir/cni/net.d"
		    max_conf_num = 1
	EOF
	# setsid: the daemon must outlive this shell but not take its signals.
	setsid containerd --config "$conf_dir/config.toml" >"$log_file" 2>&1 </dev/null &
	echo $! >"$pid_file"
	for _ in $(seq 100); do
		if answers; then
			echo "containerd $(containerd --version | awk '{print $3}') started at $address (log: $log_file)"
			return 0
		fi
		kill -0 "$(cat "$pid_file")" 2>/dev/null || break
		sleep 0.1
	done
	echo "containerd did not start; its log:" >&2
	tail -n 30 "$log_file" >&2 || true
	exit 1
}

stop() {
	[ -f "$pid_file" ] || return 0
	pid=$(cat "$pid_file")
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid"
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
	fi
	rm -f "$pid_file"
	echo "containerd stopped"
}

# with runs a command with the daemon up and leaves the host as it found it:
# a daemon that was already running keeps running, one started here stops.
with() {
	local started=no
	answers || started=yes
	start
	set +e
	"$@"
	local rc=$?
	set -e
	[ "$started" = yes ] && stop
	return $rc
}

case "${1:-}" in
start) start ;;
stop) stop ;;
with)
	shift
	with "$@"
	;;
*)
	echo "usage: $0 start|stop|with CMD..." >&2
	exit 2
	;;
esac
