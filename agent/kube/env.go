package kube

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Env returns the target container's environment as its spec defines it:
// envFrom ConfigMaps and Secrets, then env (literal values, $(VAR)
// references, ConfigMap and Secret keys, and the downward API's pod
// fields), in Kubernetes' order, later entries winning. Variables the
// image itself sets are not included: they are not in the spec.
func (a *Access) Env(ctx context.Context, t *Target) (map[string]string, error) {
	var c *corev1.Container
	for i := range t.Pod.Spec.Containers {
		if t.Pod.Spec.Containers[i].Name == t.Container {
			c = &t.Pod.Spec.Containers[i]
		}
	}
	if c == nil {
		return nil, fmt.Errorf("pod %s has no container %q", t.Pod.Name, t.Container)
	}
	ns := t.Pod.Namespace
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			cm, err := a.Client.CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if isNotFound(err) && optional(from.ConfigMapRef.Optional) {
					continue
				}
				return nil, apiError(err, "get", "configmaps", ns)
			}
			data = cm.Data
		case from.SecretRef != nil:
			s, err := a.Client.CoreV1().Secrets(ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if isNotFound(err) && optional(from.SecretRef.Optional) {
					continue
				}
				return nil, apiError(err, "get", "secrets", ns)
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		for k, v := range data {
			env[from.Prefix+k] = v
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = expand(e.Value, env)
			continue
		}
		v, ok, err := a.valueFrom(ctx, t.Pod, c, e.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s of container %s: %w", e.Name, c.Name, err)
		}
		if ok {
			env[e.Name] = v
		}
	}
	return env, nil
}

func (a *Access) valueFrom(ctx context.Context, pod *corev1.Pod, c *corev1.Container, src *corev1.EnvVarSource) (string, bool, error) {
	ns := pod.Namespace
	switch {
	case src.ConfigMapKeyRef != nil:
		r := src.ConfigMapKeyRef
		cm, err := a.Client.CoreV1().ConfigMaps(ns).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			if isNotFound(err) && optional(r.Optional) {
				return "", false, nil
			}
			return "", false, apiError(err, "get", "configmaps", ns)
		}
		v, ok := cm.Data[r.Key]
		return v, ok, nil
	case src.SecretKeyRef != nil:
		r := src.SecretKeyRef
		s, err := a.Client.CoreV1().Secrets(ns).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			if isNotFound(err) && optional(r.Optional) {
				return "", false, nil
			}
			return "", false, apiError(err, "get", "secrets", ns)
		}
		v, ok := s.Data[r.Key]
		return string(v), ok, nil
	case src.FieldRef != nil:
		v, err := podField(pod, src.FieldRef.FieldPath)
		return v, err == nil, err
	case src.ResourceFieldRef != nil:
		// Limits and requests as the container sees them; a missing
		// limit is the node's capacity, which the spec does not say.
		r := src.ResourceFieldRef
		res, _ := strings.CutPrefix(r.Resource, "limits.")
		list := c.Resources.Limits
		if rest, ok := strings.CutPrefix(r.Resource, "requests."); ok {
			res, list = rest, c.Resources.Requests
		}
		q, ok := list[corev1.ResourceName(res)]
		if !ok {
			return "", false, nil
		}
		return q.String(), true, nil
	}
	return "", false, nil
}

// podField answers the downward API's fieldRef paths.
func podField(p *corev1.Pod, field string) (string, error) {
	switch field {
	case "metadata.name":
		return p.Name, nil
	case "metadata.namespace":
		return p.Namespace, nil
	case "metadata.uid":
		return string(p.UID), nil
	case "spec.nodeName":
		return p.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName, nil
	case "status.hostIP":
		return p.Status.HostIP, nil
	case "status.podIP":
		return p.Status.PodIP, nil
	case "status.podIPs":
		var ips []string
		for _, ip := range p.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		return strings.Join(ips, ","), nil
	case "status.hostIPs":
		var ips []string
		for _, ip := range p.Status.HostIPs {
			ips = append(ips, ip.IP)
		}
		return strings.Join(ips, ","), nil
	}
	for _, prefix := range []string{"metadata.labels", "metadata.annotations"} {
		if rest, ok := strings.CutPrefix(field, prefix); ok {
			m := p.Labels
			if prefix == "metadata.annotations" {
				m = p.Annotations
			}
			if key, ok := strings.CutPrefix(rest, "['"); ok {
				return m[strings.TrimSuffix(key, "']")], nil
			}
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var b strings.Builder
			for _, k := range keys {
				fmt.Fprintf(&b, "%s=%q\n", k, m[k])
			}
			return b.String(), nil
		}
	}
	return "", fmt.Errorf("fieldRef %q is not supported", field)
}

// expand replaces $(VAR) with earlier variables' values, and $$ with $,
// as the kubelet does; unknown references stay as they are.
func expand(s string, env map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i:], ')'); end > 0 {
				name := s[i+2 : i+end]
				if v, ok := env[name]; ok {
					b.WriteString(v)
					i += end
					continue
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func optional(b *bool) bool { return b != nil && *b }

// FilterEnv applies feature.env's include (only these), exclude (not
// these) and override (set these) to env. Patterns use * and ?.
func FilterEnv(env map[string]string, include, exclude []string, override map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range env {
		if len(include) > 0 && !matchAny(include, k) {
			continue
		}
		if matchAny(exclude, k) {
			continue
		}
		out[k] = v
	}
	for k, v := range override {
		out[k] = v
	}
	return out
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}
