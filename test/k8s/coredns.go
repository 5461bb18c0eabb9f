package k8s

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// coreDNSUser is the identity CoreDNS reads the API server as; the
// ClusterRole of the same name gives it what its kubernetes plugin
// watches, and nothing else.
const coreDNSUser = "system:coredns"

// startCoreDNS runs CoreDNS with its kubernetes plugin as the cluster's
// DNS, on DNSAddr:53 (the bridge, kubelet's clusterDNS). It answers the
// cluster's zone and reverse zones from the API server; every other name
// is refused: no forward plugin is built in, so nothing leaves the
// machine. It returns when the kubernetes plugin has synced (CoreDNS's
// ready plugin says so).
func (c *Cluster) startCoreDNS(ctx context.Context) error {
	if err := c.pki.cert("coredns", coreDNSUser, "", false, nil, nil); err != nil {
		return err
	}
	kubeconfig, err := c.pki.kubeconfig("coredns", c.server)
	if err != nil {
		return err
	}
	if err := c.coreDNSRBAC(ctx); err != nil {
		return err
	}
	readyPort, err := freePort()
	if err != nil {
		return err
	}
	corefile := fmt.Sprintf(`.:53 {
    bind %s
    ready 127.0.0.1:%d
    errors
    kubernetes %s in-addr.arpa ip6.arpa {
        kubeconfig %s tp-test
        pods insecure
        ttl 5
    }
}
`, DNSAddr, readyPort, ClusterDomain, kubeconfig)
	path := filepath.Join(c.dir, "Corefile")
	if err := os.WriteFile(path, []byte(corefile), 0o644); err != nil {
		return fmt.Errorf("write the Corefile: %w", err)
	}
	if _, err := c.startComponent("coredns", c.Bin.CoreDNS, "-conf", path); err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second}
	return c.waitFor("CoreDNS to be ready", 60*time.Second, func() error {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", readyPort))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("CoreDNS's /ready: %s", resp.Status)
		}
		return nil
	})
}

// coreDNSRBAC lets coreDNSUser list and watch what the kubernetes plugin
// reads (as a cluster installer's CoreDNS role does).
func (c *Cluster) coreDNSRBAC(ctx context.Context) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: coreDNSUser},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create ClusterRole %s: %w", coreDNSUser, err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: coreDNSUser},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: coreDNSUser},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: coreDNSUser}},
	}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create ClusterRoleBinding %s: %w", coreDNSUser, err)
	}
	return nil
}
