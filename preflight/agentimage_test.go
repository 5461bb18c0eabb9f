package preflight

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// A real OCI registry on loopback holds one agent image: the check finds
// it, fails with the push command for a tag it lacks, and only warns for a
// registry it cannot reach (the nodes may) and for a local image.
func TestAgentImageIsAskedOfItsRegistry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	host := ln.Addr().String()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(host+"/trafficpolice/agent:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	check := func(image string) Result {
		return checkAgentImage(context.Background(), Env{AgentImage: image, InsecureRegistry: true})
	}
	want(t, check(host+"/trafficpolice/agent:v1"), OK, "is in its registry", "")
	want(t, check(host+"/trafficpolice/agent:v2"), Fail, "has no such image", "trafficpolice images push agent.tar "+host+"/trafficpolice/agent:v2")
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadHost := dead.Addr().String()
	dead.Close()
	want(t, check(deadHost+"/trafficpolice/agent:v1"), Warn, "cannot talk to registry", "if the nodes can pull it")
	want(t, check("localhost/trafficpolice/agent:dev"), Warn, "a local image", "trafficpolice images push")
}
