// Package kube is trafficpolice's Kubernetes side: it finds the cluster
// as kubectl would (kubeconfig, context, namespace, also under sudo and
// in-cluster), resolves a target ("deployment/uwu-app/container/app") to
// one running pod and container, starts the agent in that pod's network
// namespace (an ephemeral container, or a Job on the pod's node that
// enters the namespace through the node's container runtime), opens
// port-forwards to it through the API server, and reads the target's
// environment from its pod spec.
//
// It talks only to the API server (client-go); it must not touch the
// local machine's network, start local processes, or speak the tunnel
// protocol (agent/client does, over the connections Dialer opens). What
// it creates in the cluster is named "trafficpolice-agent-<id>", is
// garbage-collected by Kubernetes (ttlSecondsAfterFinished, owner
// references) and is removed by Agent.Close.
package kube
