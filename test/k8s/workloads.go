package k8s

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/coreos/go-iptables/iptables"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The seed story's workloads, as the tests deploy them.
const (
	// UwuAppPort is the target app's port; SidecarPort the sidecar's, on
	// the pod's 127.0.0.1 only; ServicePort uwu-service's.
	UwuAppPort  = 9999
	SidecarPort = 7070
	ServicePort = 8080
)

// NewNamespace creates a namespace "PREFIX-<random>" and returns its name;
// remove it with DeleteNamespace.
func (c *Cluster) NewNamespace(ctx context.Context, prefix string) (string, error) {
	b := make([]byte, 3)
	rand.Read(b)
	name := prefix + "-" + hex.EncodeToString(b)
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create namespace %s: %w", name, err)
	}
	// The service account controller adds "default"; pods wait for it.
	err = c.waitFor("service account default in "+name, 30*time.Second, func() error {
		_, err := c.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	return name, err
}

// DeleteNamespace deletes a namespace and waits until it is gone.
func (c *Cluster) DeleteNamespace(ctx context.Context, ns string) error {
	zero := int64(0)
	c.Client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
	if err := c.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete namespace %s: %w", ns, err)
	}
	return c.waitFor("namespace "+ns+" to be gone", 90*time.Second, func() error {
		_, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err == nil {
			return errNotYet
		}
		return nil
	})
}

// appContainer runs testapp with args.
func (c *Cluster) appContainer(name string, args []string, env []corev1.EnvVar) corev1.Container {
	image, pull := AppImage, corev1.PullNever
	if c.appImage != "" {
		image, pull = c.appImage, corev1.PullIfNotPresent
	}
	return corev1.Container{Name: name, Image: image, ImagePullPolicy: pull, Args: args, Env: env}
}

// DeployUwu deploys the seed story in ns: deployment uwu-app (testapp on
// :9999, with a native sidecar on 127.0.0.1:7070 and an environment from
// literals, a ConfigMap, a Secret and the downward API), deployment
// uwu-service behind service uwu-service:8080. It waits for both to be
// ready.
func (c *Cluster) DeployUwu(ctx context.Context, ns string) error {
	core := c.Client.CoreV1()
	if _, err := core.ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "uwu-config"},
		Data:       map[string]string{"MESSAGES_DB": "messages-db:8888", "LOG_LEVEL": "debug"},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create configmap: %w", err)
	}
	if _, err := core.Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "uwu-secret"},
		StringData: map[string]string{"SECRET_TOKEN": "hunter2"},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create secret: %w", err)
	}
	always := corev1.ContainerRestartPolicyAlways
	sidecar := c.appContainer("sidecar", []string{"serve", "--listen", fmt.Sprintf("127.0.0.1:%d", SidecarPort), "--name", "sidecar"}, nil)
	sidecar.RestartPolicy = &always
	app := c.appContainer("app", []string{"serve", "--listen", fmt.Sprintf(":%d", UwuAppPort), "--name", "uwu-app"}, []corev1.EnvVar{
		{Name: "GREETING", Value: "hello from the pod"},
		{Name: "UWU_SERVICE", Value: fmt.Sprintf("uwu-service:%d", ServicePort)},
		{Name: "UWU_URL", Value: "http://$(UWU_SERVICE)/"},
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		{Name: "SECRET_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "uwu-secret"}, Key: "SECRET_TOKEN"}}},
	})
	app.EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "uwu-config"}}}}
	app.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(UwuAppPort)}}, PeriodSeconds: 1}
	if err := c.deploy(ctx, ns, "uwu-app", []corev1.Container{app}, []corev1.Container{sidecar}); err != nil {
		return err
	}
	svc := c.appContainer("uwu-service", []string{"serve", "--listen", fmt.Sprintf(":%d", ServicePort), "--name", "uwu-service"}, nil)
	svc.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(ServicePort)}}, PeriodSeconds: 1}
	if err := c.deploy(ctx, ns, "uwu-service", []corev1.Container{svc}, nil); err != nil {
		return err
	}
	if _, err := core.Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "uwu-service"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "uwu-service"},
			Ports:    []corev1.ServicePort{{Port: ServicePort, TargetPort: intstr.FromInt(ServicePort)}},
		},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create service uwu-service: %w", err)
	}
	for _, d := range []string{"uwu-app", "uwu-service"} {
		if err := c.WaitDeployment(ctx, ns, d); err != nil {
			return err
		}
	}
	return c.WaitService(ctx, ns, "uwu-service")
}

// WaitService waits until kube-proxy has programmed the service's cluster
// IP with endpoints behind it: a Service that exists is not yet reachable.
func (c *Cluster) WaitService(ctx context.Context, ns, name string) error {
	svc, err := c.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("service %s/%s: %w", ns, name, err)
	}
	if len(c.components) == 0 {
		// Not the harness's cluster (Attach): its proxies are out of
		// sight; ready endpoints and a moment must do.
		err := c.waitFor("endpoints of service "+ns+"/"+name, 60*time.Second, func() error {
			l, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + name})
			if err != nil {
				return err
			}
			for _, es := range l.Items {
				for _, ep := range es.Endpoints {
					if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
						return nil
					}
				}
			}
			return errNotYet
		})
		time.Sleep(2 * time.Second)
		return err
	}
	ipt, err := iptables.New()
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	return c.waitFor("kube-proxy to program service "+ns+"/"+name, 60*time.Second, func() error {
		rules, err := ipt.List("nat", "KUBE-SERVICES")
		if err != nil {
			return err
		}
		for _, r := range rules {
			if strings.Contains(r, "-d "+svc.Spec.ClusterIP+"/32") && strings.Contains(r, "-j KUBE-SVC-") {
				return nil
			}
		}
		return errNotYet
	})
}

func (c *Cluster) deploy(ctx context.Context, ns, name string, containers, initContainers []corev1.Container) error {
	one := int32(1)
	zero := int64(0)
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers:                    containers,
					InitContainers:                initContainers,
					TerminationGracePeriodSeconds: &zero,
					AutomountServiceAccountToken:  new(bool),
				},
			},
		},
	}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create deployment %s: %w", name, err)
	}
	return nil
}

// WaitDeployment waits for every replica of a deployment to be ready.
func (c *Cluster) WaitDeployment(ctx context.Context, ns, name string) error {
	return c.waitFor("deployment "+ns+"/"+name+" to be ready", 120*time.Second, func() error {
		d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Spec.Replicas != nil && d.Status.ReadyReplicas == *d.Spec.Replicas && d.Status.UpdatedReplicas == *d.Spec.Replicas {
			return nil
		}
		pods, _ := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if pods != nil {
			for _, p := range pods.Items {
				for _, st := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
					if w := st.State.Waiting; w != nil {
						return fmt.Errorf("pod %s container %s waiting: %s %s", p.Name, st.Name, w.Reason, w.Message)
					}
				}
			}
		}
		return fmt.Errorf("%d of %d ready", d.Status.ReadyReplicas, *d.Spec.Replicas)
	})
}

// UserKubeconfig writes a kubeconfig for a user the cluster knows by its
// client certificate (CN name, no groups) and no RBAC grants: everything
// it asks is denied unless a test binds a role to it.
func (c *Cluster) UserKubeconfig(name string) (string, error) {
	if err := c.pki.cert(name, name, "", false, nil, nil); err != nil {
		return "", err
	}
	return c.pki.kubeconfig(name, c.server)
}

// The seed story's ports: uwu-app's, uwu-service's (ServicePort) and
// messages-db's.
const (
	SeedAppPort    = 9999
	MessagesDBPort = 8888
)

// DeploySeed deploys the seed story with its real programs in ns:
// deployment uwu-app (uwu-app on :9999, MESSAGES_DB=messages-db:8888,
// UWU_SERVICE=uwu-service:8080) behind service uwu-app:9999, uwu-service
// behind uwu-service:8080, and the cluster's messages-db (in memory)
// behind messages-db:8888. It waits until all are ready and reachable.
func (c *Cluster) DeploySeed(ctx context.Context, ns string) error {
	seed := func(name string, port int, env []corev1.EnvVar) corev1.Container {
		ctr := c.appContainer(name, []string{"--listen", fmt.Sprintf(":%d", port)}, env)
		ctr.Command = []string{"/" + name}
		ctr.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(port)}}, PeriodSeconds: 1}
		return ctr
	}
	app := seed("uwu-app", SeedAppPort, []corev1.EnvVar{
		{Name: "MESSAGES_DB", Value: fmt.Sprintf("messages-db:%d", MessagesDBPort)},
		{Name: "UWU_SERVICE", Value: fmt.Sprintf("uwu-service:%d", ServicePort)},
	})
	app.Name = "app"
	workloads := []struct {
		name string
		port int
		ctr  corev1.Container
	}{
		{"uwu-app", SeedAppPort, app},
		{"uwu-service", ServicePort, seed("uwu-service", ServicePort, nil)},
		{"messages-db", MessagesDBPort, seed("messages-db", MessagesDBPort, nil)},
	}
	for _, w := range workloads {
		if err := c.deploy(ctx, ns, w.name, []corev1.Container{w.ctr}, nil); err != nil {
			return err
		}
		if _, err := c.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: w.name},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": w.name},
				Ports:    []corev1.ServicePort{{Port: int32(w.port), TargetPort: intstr.FromInt(w.port)}},
			},
		}, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create service %s: %w", w.name, err)
		}
	}
	for _, w := range workloads {
		if err := c.WaitDeployment(ctx, ns, w.name); err != nil {
			return err
		}
		if err := c.WaitService(ctx, ns, w.name); err != nil {
			return err
		}
	}
	return nil
}

// RunPod runs `testapp ARGS...` once in a pod of ns (a client inside the
// cluster), waits for it to end, and returns what it printed; the error
// says how it failed. The pod is deleted before RunPod returns.
func (c *Cluster) RunPod(ctx context.Context, ns, name string, args []string) (string, error) {
	zero := int64(0)
	pods := c.Client.CoreV1().Pods(ns)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &zero,
			AutomountServiceAccountToken:  new(bool),
			Containers:                    []corev1.Container{c.appContainer("client", args, nil)},
		},
	}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create pod %s/%s: %w", ns, name, err)
	}
	defer pods.Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	var phase corev1.PodPhase
	err := c.waitFor("pod "+ns+"/"+name+" to end", 90*time.Second, func() error {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		phase = p.Status.Phase
		if phase == corev1.PodSucceeded || phase == corev1.PodFailed {
			return nil
		}
		return fmt.Errorf("phase %s", phase)
	})
	if err != nil {
		return "", err
	}
	out, lerr := c.PodLogs(ctx, ns, name, "client")
	if lerr != nil {
		return "", lerr
	}
	if phase == corev1.PodFailed {
		return out, fmt.Errorf("pod %s/%s failed", ns, name)
	}
	return out, nil
}

// PodLogs returns a container's log.
func (c *Cluster) PodLogs(ctx context.Context, ns, pod, container string) (string, error) {
	b, err := c.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("logs of %s/%s container %s: %w", ns, pod, container, err)
	}
	return string(b), nil
}

// DeployOtherKinds starts, in ns, the targets of kinds other than a
// deployment: statefulset NAME-sts (behind a headless service of that
// name, as a StatefulSet's pods are named) and job NAME-job, whose one pod
// serves until it is deleted. Both pods run testapp on UwuAppPort with
// POD_NAME from the downward API and carry the label app=<their name>.
// It does not wait: see WaitOtherKinds.
func (c *Cluster) DeployOtherKinds(ctx context.Context, ns, name string) error {
	zero := int64(0)
	one := int32(1)
	pod := func(app string, restart corev1.RestartPolicy) corev1.PodTemplateSpec {
		ctr := c.appContainer("app", []string{"serve", "--listen", fmt.Sprintf(":%d", UwuAppPort), "--name", app}, []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		})
		ctr.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(UwuAppPort)}}, PeriodSeconds: 1}
		return corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{
				Containers:                    []corev1.Container{ctr},
				RestartPolicy:                 restart,
				TerminationGracePeriodSeconds: &zero,
				AutomountServiceAccountToken:  new(bool),
			},
		}
	}
	sts := name + "-sts"
	if _, err := c.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: sts},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  map[string]string{"app": sts},
			Ports:     []corev1.ServicePort{{Port: UwuAppPort, TargetPort: intstr.FromInt(UwuAppPort)}},
		},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create headless service %s: %w", sts, err)
	}
	if _, err := c.Client.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: sts},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    &one,
			ServiceName: sts,
			Selector:    &metav1.LabelSelector{MatchLabels: map[string]string{"app": sts}},
			Template:    pod(sts, corev1.RestartPolicyAlways),
		},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create statefulset %s: %w", sts, err)
	}
	job := name + "-job"
	if _, err := c.Client.BatchV1().Jobs(ns).Create(ctx, &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: job},
		Spec:       batchv1.JobSpec{BackoffLimit: new(int32), Template: pod(job, corev1.RestartPolicyNever)},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create job %s: %w", job, err)
	}
	return nil
}

// WaitOtherKinds waits until the pods DeployOtherKinds started run and are
// ready, and returns them: the statefulset's, then the job's.
func (c *Cluster) WaitOtherKinds(ctx context.Context, ns, name string) (sts, job *corev1.Pod, err error) {
	pods := make([]*corev1.Pod, 2)
	for i, app := range []string{name + "-sts", name + "-job"} {
		err := c.waitFor("the pod of "+ns+"/"+app+" to be ready", 120*time.Second, func() error {
			l, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
			if err != nil {
				return err
			}
			if len(l.Items) != 1 {
				return fmt.Errorf("%d pods", len(l.Items))
			}
			p := &l.Items[0]
			for _, st := range p.Status.ContainerStatuses {
				if w := st.State.Waiting; w != nil {
					return fmt.Errorf("pod %s container %s waiting: %s %s", p.Name, st.Name, w.Reason, w.Message)
				}
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue && p.Status.PodIP != "" {
					pods[i] = p
					return nil
				}
			}
			return fmt.Errorf("pod %s is %s, not ready", p.Name, p.Status.Phase)
		})
		if err != nil {
			return nil, nil, err
		}
	}
	return pods[0], pods[1], nil
}
