package preflight

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/trafficpolice/trafficpolice/images/registry"
)

// checkAgentImage asks the agent image's registry, with this machine's
// credentials, whether it has the image: the default one is where releases
// publish it, and a build of one's own must be pushed first. A localhost/
// image is one a node has imported: no registry can tell. The nodes may
// reach registries this machine does not (and the other way round), so a
// registry that cannot be asked is a warning; one that answers "no such
// image" fails the run before an agent is started that could never run.
func checkAgentImage(ctx context.Context, env Env) Result {
	r := Result{Check: "agent image"}
	image := env.AgentImage
	if strings.HasPrefix(image, "localhost/") {
		r.Status, r.Detail = Warn, image+" is a local image: only nodes that imported it can start the agent"
		r.Fix = "push it to a registry the nodes pull from (trafficpolice images push) and set agent.image, or import it on every node"
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := registry.Exists(ctx, image, registry.Options{Insecure: env.InsecureRegistry})
	switch {
	case err == nil:
		r.Status, r.Detail = OK, image+" is in its registry"
	case strings.Contains(err.Error(), "has no such image"):
		r.Status, r.Detail = Fail, err.Error()
		r.Fix = fmt.Sprintf("build and push it: trafficpolice images build agent -o agent.tar && trafficpolice images push agent.tar %s (or set agent.image to an image your nodes can pull)", image)
	default:
		r.Status, r.Detail = Warn, err.Error()
		r.Fix = "if the nodes can pull it, nothing to do; otherwise push it (trafficpolice images push) and set agent.image"
	}
	return r
}
