package k8s

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestClusterDNSThroughARun asks the cluster's CoreDNS, from a sandboxed
// app of a run whose target is uwu-app, what a pod would: a Service by
// its short name (the pod's search domains), the SRV record of a named
// Service port, a headless Service (its pods' addresses) and a pod record.
func TestClusterDNSThroughARun(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	ns := uwuNamespace(t, c, "tp-dns")
	// Two uwu-service pods, so that the headless Service has two answers.
	scale := &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: "uwu-service", Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: 2}}
	if _, err := c.Client.AppsV1().Deployments(ns).UpdateScale(ctx, "uwu-service", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitDeployment(ctx, ns, "uwu-service"); err != nil {
		t.Fatal(err)
	}
	for _, svc := range []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Name: "uwu-web"}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "uwu-service"},
			Ports:    []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt(ServicePort)}},
		}},
		{ObjectMeta: metav1.ObjectMeta{Name: "uwu-headless"}, Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  map[string]string{"app": "uwu-service"},
			Ports:     []corev1.ServicePort{{Name: "http", Port: ServicePort}},
		}},
	} {
		if _, err := c.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create service %s: %v", svc.Name, err)
		}
	}
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=uwu-service"})
	if err != nil {
		t.Fatal(err)
	}
	var podIPs []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			podIPs = append(podIPs, p.Status.PodIP)
		}
	}
	slices.Sort(podIPs)
	if len(podIPs) != 2 {
		t.Fatalf("want two uwu-service pods with addresses, got %v", podIPs)
	}
	// The headless Service's endpoints are ready once their pods are:
	// wait until CoreDNS would see both, so that the answer is complete.
	if err := c.waitFor("uwu-headless's endpoints", 60*time.Second, func() error {
		return readyEndpoints(ctx, c, ns, "uwu-headless", len(podIPs))
	}); err != nil {
		t.Fatal(err)
	}
	svcIP := func(name string) string {
		s, err := c.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s.Spec.ClusterIP
	}
	suffix := ns + ".svc." + ClusterDomain
	podName := strings.ReplaceAll(podIPs[0], ".", "-") + "." + ns + ".pod." + ClusterDomain
	script := fmt.Sprintf(`echo "SHORT $(getent hosts uwu-service | awk '{print $1}')"
echo "SRV $(dig +short SRV _http._tcp.uwu-web.%s)"
echo "HEADLESS $(dig +short A uwu-headless.%s | sort | tr '\n' ' ')"
echo "POD $(dig +short A %s)"`, suffix, suffix, podName)
	cfg := map[string]any{
		"target": map[string]any{"path": "deployment/uwu-app", "namespace": ns},
		"agent":  map[string]any{"image": c.AgentImage, "startup_timeout": 60, "ttl": 0},
	}
	out, errOut, err := sandboxRun(t, c, cfg, script)
	if err != nil {
		t.Fatalf("sandbox run: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, " ")
		got[k] = strings.TrimSpace(v)
	}
	want := map[string]string{
		"SHORT":    svcIP("uwu-service"),
		"SRV":      "0 100 80 uwu-web." + suffix + ".",
		"HEADLESS": strings.Join(podIPs, " "),
		"POD":      podIPs[0],
	}
	for _, k := range []string{"SHORT", "SRV", "HEADLESS", "POD"} {
		if got[k] != want[k] {
			t.Errorf("%s: got %q, want %q", k, got[k], want[k])
		}
	}
	if t.Failed() {
		t.Logf("the script printed:\n%s\nCoreDNS's log:\n%s", out, c.Logs("coredns", 20))
	}
}

// readyEndpoints returns nil once the Service's EndpointSlices list n
// ready addresses.
func readyEndpoints(ctx context.Context, c *Cluster, ns, svc string, n int) error {
	l, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc})
	if err != nil {
		return err
	}
	ready := 0
	for _, es := range l.Items {
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
				ready += len(ep.Addresses)
			}
		}
	}
	if ready != n {
		return fmt.Errorf("%d ready addresses, want %d: %w", ready, n, errNotYet)
	}
	return nil
}
