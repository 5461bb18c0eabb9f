package kube

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// AccessOptions say how to reach the cluster, as kubectl's flags do.
type AccessOptions struct {
	// Kubeconfig is a kubeconfig path (--kubeconfig, or the config file's
	// "kubeconfig"); "" means $KUBECONFIG, then ~/.kube/config (the
	// invoking user's under sudo), then the in-cluster service account.
	Kubeconfig string
	// Context is the kubeconfig context to use; "" is its current one.
	Context string
	// Namespace overrides the context's namespace (-n).
	Namespace string
}

// Access is a connection to one cluster.
type Access struct {
	Client kubernetes.Interface
	REST   *rest.Config
	// Namespace is the namespace to use: -n, else the context's, else "default".
	Namespace string
	// Source says where the configuration came from, for messages.
	Source string
	// File is the one kubeconfig file it came from, to reach the cluster
	// again later ("" for a $KUBECONFIG list, the default loading rules or
	// in-cluster).
	File string
	// Context is the kubeconfig context in use ("" in a cluster).
	Context string
}

// Connect loads the configuration like kubectl and returns a client. It
// does not talk to the cluster yet.
func Connect(o AccessOptions) (*Access, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	source, file := "$KUBECONFIG or ~/.kube/config", ""
	switch env := os.Getenv("KUBECONFIG"); {
	case o.Kubeconfig != "":
		rules.ExplicitPath = o.Kubeconfig
		source, file = o.Kubeconfig, o.Kubeconfig
	case env != "":
		source = "$KUBECONFIG (" + env + ")"
		if !strings.Contains(env, string(filepath.ListSeparator)) {
			file = env
		}
	default:
		if p := sudoUserKubeconfig(); p != "" {
			rules.Precedence = []string{p}
			source, file = p, p
		} else if home, err := os.UserHomeDir(); err == nil {
			source = filepath.Join(home, ".kube", "config")
		}
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.Context}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, fmt.Errorf("no Kubernetes configuration: none in %s and not running in a cluster: "+
				"pass --kubeconfig FILE or set KUBECONFIG", source)
		}
		if o.Context != "" {
			return nil, fmt.Errorf("kubeconfig %s, context %q: %w", source, o.Context, err)
		}
		return nil, fmt.Errorf("kubeconfig %s: %w", source, err)
	}
	ns := o.Namespace
	if ns == "" {
		ns, _, err = cc.Namespace()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: namespace of the context: %w", source, err)
		}
	}
	if ns == "" {
		ns = "default"
	}
	cfg.UserAgent = "trafficpolice"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", source, err)
	}
	context := o.Context
	if raw, err := cc.RawConfig(); err == nil && context == "" {
		context = raw.CurrentContext
	}
	return &Access{Client: client, REST: cfg, Namespace: ns, Source: source, File: file, Context: context}, nil
}

// sudoUserKubeconfig is ~/.kube/config of the user who ran sudo, when
// trafficpolice runs as root under sudo and that file exists: root's own
// home holds no kubeconfig of theirs.
func sudoUserKubeconfig() string {
	name := os.Getenv("SUDO_USER")
	if os.Geteuid() != 0 || name == "" || name == "root" {
		return ""
	}
	u, err := user.Lookup(name)
	if err != nil {
		return ""
	}
	p := filepath.Join(u.HomeDir, ".kube", "config")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

var errNoPod = errors.New("no running pod")
