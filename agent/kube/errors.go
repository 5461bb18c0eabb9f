package kube

import (
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// RBACError says which permission the cluster refused.
type RBACError struct {
	Verb, Resource, Namespace string
	// Message is the API server's own explanation.
	Message string
}

func (e *RBACError) Error() string {
	where := fmt.Sprintf(" in namespace %q", e.Namespace)
	nsFlag := " -n " + e.Namespace
	if e.Namespace == "" {
		where, nsFlag = " (cluster-wide)", ""
	}
	return fmt.Sprintf("RBAC denied: you may not %s %s%s (the API server says: %s); "+
		"ask for a Role that grants it, check with `kubectl auth can-i %s %s%s`",
		e.Verb, e.Resource, where, e.Message, e.Verb, e.Resource, nsFlag)
}

// NotFoundError says that the target does not exist, with the names
// that do and look close.
type NotFoundError struct {
	Kind, Name, Namespace string
	Close                 []string
}

func (e *NotFoundError) Error() string {
	msg := fmt.Sprintf("%s/%s not found in namespace %q", e.Kind, e.Name, e.Namespace)
	if len(e.Close) > 0 {
		quoted := make([]string, len(e.Close))
		for i, c := range e.Close {
			quoted[i] = fmt.Sprintf("%s/%s", e.Kind, c)
		}
		msg += "; did you mean " + strings.Join(quoted, " or ") + "?"
	} else {
		msg += fmt.Sprintf(" (list them: kubectl get %s -n %s)", e.Kind, e.Namespace)
	}
	return msg
}

// apiError turns an API error into one that says what was attempted, and
// an RBAC refusal into an *RBACError.
func apiError(err error, verb, resource, namespace string) error {
	var se apierrors.APIStatus
	switch {
	case apierrors.IsForbidden(err):
		msg := err.Error()
		if errors.As(err, &se) {
			msg = se.Status().Message
		}
		return &RBACError{Verb: verb, Resource: resource, Namespace: namespace, Message: msg}
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%s %s: the cluster refused our credentials (%w): log in again or check the kubeconfig's user", verb, resource, err)
	}
	if namespace == "" {
		return fmt.Errorf("%s %s: %w", verb, resource, err)
	}
	return fmt.Errorf("%s %s in namespace %q: %w", verb, resource, namespace, err)
}

// closeNames returns up to three of candidates that look like name: the
// same but for a few edits, or one containing the other.
func closeNames(name string, candidates []string) []string {
	var out []string
	for _, c := range candidates {
		limit := max(2, len(name)/4)
		if c == name {
			continue
		}
		if editDistance(name, c) <= limit || (len(name) >= 3 && (strings.Contains(c, name) || strings.Contains(name, c))) {
			out = append(out, c)
			if len(out) == 3 {
				break
			}
		}
	}
	return out
}

// editDistance is Levenshtein's distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }
