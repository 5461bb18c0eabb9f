// Package connect connects a run to its agent: a running agent at a
// direct address, or one it starts through Kubernetes (find the target,
// start the agent in its network namespace, tunnel through an API-server
// port-forward, import the target's environment). It is the orchestration
// between the configuration and a connected tunnel, so that the command
// line only parses flags and prints.
package connect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/trafficpolice/trafficpolice/agent/client"
	"github.com/trafficpolice/trafficpolice/agent/kube"
	"github.com/trafficpolice/trafficpolice/agent/proto"
	"github.com/trafficpolice/trafficpolice/agent/tunneltls"
	"github.com/trafficpolice/trafficpolice/config"
)

// Progress hears about the steps of connecting; *sandbox.Progress is one.
type Progress interface {
	// Step starts a step; the returned function ends it, with its error.
	Step(what string) func(error)
	// Note prints a line of information.
	Note(format string, args ...any)
}

// Options say which agent a run uses.
type Options struct {
	Config *config.Config
	// Address is a running agent's HOST:PORT (over the file's
	// agent.address); TokenFile holds its token (else $TRAFFICPOLICE_AGENT_TOKEN)
	// and, on an optional second line, its key's fingerprint.
	Address, TokenFile string
	// Fingerprint pins the running agent's key (over the file's
	// agent.fingerprint and the token file's second line).
	Fingerprint string
	// Insecure connects to a running agent without TLS, in clear, when
	// no fingerprint is pinned.
	Insecure bool
	// Kubeconfig and Context override the file's kubeconfig and
	// kube_context.
	Kubeconfig, Context string
	// Version is this build's version: the default agent image's tag.
	Version  string
	Progress Progress
	Logger   *slog.Logger
	// StateDir is where the run records what it creates in the cluster
	// before creating it (CollectStale reads it); "" records nothing.
	StateDir string
	// Announced says the caller already printed Where's line, first in
	// the run's progress: it is not printed again.
	Announced bool
}

// Run is a run's connection to its agent.
type Run struct {
	// Client is the connected tunnel.
	Client *client.Client
	// Env is the target's environment (feature.env), as KEY=VALUE, in
	// name order; empty without target or with feature.env off.
	Env []string

	agent  *kube.Agent    // the agent this run started or joined, removed by Close (a shared one by its last run)
	record *clusterRecord // what it created, removed once Close removed it
	notes  Progress       // where Close says what became of a shared agent
}

// Address is the agent address a run uses: the flag's, else the file's.
func Address(o Options) string {
	return first(o.Address, o.Config.Agent.Address)
}

// Connect connects to the run's agent: at the direct address when there is
// one, else through Kubernetes when the configuration names a target.
// Without either it returns nil and no error: the run has no agent. On
// error, whatever it started is removed already.
func Connect(ctx context.Context, o Options) (*Run, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if address := Address(o); address != "" {
		c, err := connectDirect(ctx, address, o)
		if err != nil {
			return nil, err
		}
		return &Run{Client: c}, nil
	}
	if o.Config.Target.Path == "" {
		return nil, nil
	}
	run, err := startThroughKubernetes(ctx, o)
	if err != nil {
		if run != nil {
			run.Close()
		}
		return nil, err
	}
	return run, nil
}

// ErrNoFingerprint is returned (wrapped) for a running agent without a
// pinned key or Insecure.
var ErrNoFingerprint = errors.New("no fingerprint pinned for the agent")

// connectDirect connects to a running agent and reports on the tunnel as
// it comes and goes.
func connectDirect(ctx context.Context, address string, o Options) (*client.Client, error) {
	token, fileFingerprint, err := proto.LoadTokenFile(o.TokenFile)
	if err != nil {
		return nil, err
	}
	fingerprint, err := pinFor(address, o, fileFingerprint)
	if err != nil {
		return nil, err
	}
	if fingerprint == "" {
		o.Progress.Note("WARNING: --agent-insecure: the tunnel to %s is in clear and the agent is not authenticated; "+
			"whoever can see or redirect this connection can read the flows and take the token", address)
	}
	timeout := time.Duration(o.Config.Agent.CommunicationTimeout) * time.Second
	done := o.Progress.Step("connected to agent at " + address)
	c, err := client.Dial(ctx, client.Options{
		Address:              address,
		Token:                token,
		Fingerprint:          fingerprint,
		Logger:               o.Logger,
		CommunicationTimeout: timeout,
		OnState: func(st client.State, err error) {
			switch st {
			case client.StateReconnecting:
				o.Progress.Note("lost the agent (%v): reconnecting; new remote flows wait up to %s", err, timeout)
			case client.StateConnected:
				o.Progress.Note("reconnected to the agent")
			}
		},
	})
	done(err)
	if err != nil {
		return nil, fmt.Errorf("connect to the agent at %s: %w", address, err)
	}
	facts := c.Facts()
	o.Progress.Note("pod %s %v, search %v", facts.Hostname, facts.Addresses, facts.SearchDomains)
	return c, nil
}

// pinFor is the fingerprint a run pins for the agent at address: the
// flag's, else the file's agent.fingerprint, else the token file's second
// line; "" with Insecure and none of them. Neither a pin nor Insecure is
// an error that says where the fingerprint comes from: the token must not
// go to an agent that has not proved who it is.
func pinFor(address string, o Options, fileFingerprint string) (string, error) {
	fp, source := o.Fingerprint, "--agent-fingerprint"
	switch {
	case fp == "" && o.Config.Agent.Fingerprint != "":
		fp, source = o.Config.Agent.Fingerprint, "agent.fingerprint"
	case fp == "" && fileFingerprint != "":
		fp, source = fileFingerprint, "the token file's second line ("+o.TokenFile+")"
	}
	switch {
	case fp != "" && o.Insecure:
		return "", fmt.Errorf("--agent-insecure with a pinned fingerprint (%s): drop one of them; pinned, the tunnel is TLS with that key", fp)
	case fp == "" && !o.Insecure:
		return "", fmt.Errorf("agent at %s: %w: the token is sent only to an agent that proved its key. "+
			"Start the agent with --tls-key FILE; it logs its fingerprint at start, and "+
			"`trafficpolice agent fingerprint --tls-key FILE` prints it on the agent's host. Then pass "+
			"--agent-fingerprint sha256:..., set agent.fingerprint, or put it on the token file's second line. "+
			"(For an agent without TLS behind a secure channel of your own, --agent-insecure connects in clear.)",
			address, ErrNoFingerprint)
	}
	if fp != "" {
		if _, err := tunneltls.ParseFingerprint(fp); err != nil {
			return "", fmt.Errorf("%s: %w", source, err)
		}
	}
	return fp, nil
}
