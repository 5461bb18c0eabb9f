// Package k8s brings up a real single-node Kubernetes on this machine for
// the end-to-end tests of agent/kube and `sandbox run --target` (issue 8):
// kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
// kube-proxy built from k8s.io/kubernetes through the Go module proxy,
// etcd, the bridge CNI plugins, CoreDNS (the cluster's DNS, with its
// kubernetes plugin) and the distribution project's OCI registry (from
// which the node pulls the agent image) built the same way, and the
// machine's containerd (with its CRI plugin) and runc.
//
// Binaries are built once per version into a cache (see CacheDir) and
// reused by later runs. A test binary starts one cluster in TestMain
// (Start), shares it between its tests, and tears it down completely at
// the end (Cluster.Stop): processes, mounts, cgroups, the bridge, the
// iptables chains kubelet, kube-proxy and CNI added, the CNI and kubelet
// state under fixed paths, and the sysctls they changed.
//
// It is test-only plumbing: it needs root, it sends traffic only to this
// machine's own addresses and to the pods' namespaces it created, and it
// must not touch containerd's images or containers outside its own
// Kubernetes namespace ("k8s.io") nor any iptables chain it did not add.
package k8s
