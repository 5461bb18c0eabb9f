// Package registry moves images between OCI archives and registries with
// the user's registry credentials: `trafficpolice images push` (an archive,
// or a mirror of an image already in a registry, every platform of it)
// and the credentials containerd pulls `--image` with.
//
// Credentials come from where `docker login` and podman put them — the
// docker config.json ($DOCKER_CONFIG, ~/.docker), its credential helpers,
// containers/auth.json — read by go-containerregistry's default keychain.
// Errors name the registry, where the credentials came from and what to
// do. It does not build images (that is package images) or run them.
package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Keychain is where registry credentials come from: docker's config.json
// with its credential helpers, or podman's auth.json.
var Keychain = authn.DefaultKeychain

// Options say how to reach registries.
type Options struct {
	// Insecure allows plain HTTP and unverified TLS for the registries of
	// the references (a loopback registry is reached over HTTP anyway).
	Insecure bool
}

func (o Options) nameOptions() []name.Option {
	if o.Insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

func remoteOptions(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(Keychain)}
}

// Credentials returns the user name and secret for a registry host, as
// containerd's resolver asks for them (docker.ResolverOptions.Credentials):
// both empty when the keychain has none, a secret alone for an identity
// (refresh) token.
func Credentials(host string) (string, string, error) {
	// containerd asks for Docker Hub's API host; the keychain knows it as
	// docker.io.
	if host == "registry-1.docker.io" {
		host = name.DefaultRegistry
	}
	reg, err := name.NewRegistry(host, name.WeakValidation)
	if err != nil {
		return "", "", fmt.Errorf("registry host %q: %w", host, err)
	}
	auth, err := Keychain.Resolve(reg)
	if err != nil {
		return "", "", fmt.Errorf("read the credentials for registry %s from %s: %w", host, ConfigSource(), err)
	}
	cfg, err := authn.Authorization(context.Background(), auth)
	if err != nil {
		return "", "", fmt.Errorf("credentials for registry %s from %s: %w", host, ConfigSource(), err)
	}
	if cfg.IdentityToken != "" {
		return "", cfg.IdentityToken, nil
	}
	return cfg.Username, cfg.Password, nil
}

// ConfigSource says where the keychain reads credentials, for errors: the
// docker config.json the default keychain loads (credential helpers are
// named in it).
func ConfigSource() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".docker", "config.json")
	}
	return "the docker config.json (no home folder: set DOCKER_CONFIG)"
}

// Explain turns a registry error for ref into one that names the
// registry, where the credentials came from and what to do; verb is what
// was attempted ("push", "pull").
func Explain(err error, verb string, ref name.Reference) error {
	if err == nil {
		return nil
	}
	reg := ref.Context().RegistryStr()
	var terr *transport.Error
	if !errors.As(err, &terr) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%s %s: %w", verb, ref, err)
		}
		return fmt.Errorf("%s %s: cannot talk to registry %s (%w): check the name, that this machine reaches it, "+
			"and give --insecure for a registry that serves plain HTTP or a self-signed certificate", verb, ref, reg, err)
	}
	switch {
	case terr.StatusCode == http.StatusUnauthorized || hasCode(terr, transport.UnauthorizedErrorCode):
		who := credentialsOf(ref.Context())
		return fmt.Errorf("%s %s: registry %s refused %s (%w): log in with `docker login %s` "+
			"(trafficpolice reads the same config.json and credential helpers)%s",
			verb, ref, reg, who, err, reg, sudoHint())
	case terr.StatusCode == http.StatusForbidden || hasCode(terr, transport.DeniedErrorCode):
		return fmt.Errorf("%s %s: registry %s denied it to %s (%w): ask for %s rights on repository %s, or use a repository you may %s to",
			verb, ref, reg, credentialsOf(ref.Context()), err, verb, ref.Context().RepositoryStr(), verb)
	case terr.StatusCode == http.StatusNotFound || hasCode(terr, transport.ManifestUnknownErrorCode) || hasCode(terr, transport.NameUnknownErrorCode):
		return fmt.Errorf("%s %s: registry %s has no such image (%w): check the name and tag", verb, ref, reg, err)
	}
	return fmt.Errorf("%s %s: registry %s: %w", verb, ref, reg, err)
}

// credentialsOf says whose credentials the keychain gives for repo.
func credentialsOf(repo name.Repository) string {
	auth, err := Keychain.Resolve(repo)
	if err != nil {
		return fmt.Sprintf("the credentials in %s, which cannot be read (%v)", ConfigSource(), err)
	}
	if auth == authn.Anonymous {
		return fmt.Sprintf("an anonymous request: %s has no credentials for it", ConfigSource())
	}
	cfg, err := authn.Authorization(context.Background(), auth)
	if err == nil && cfg.Username != "" {
		return fmt.Sprintf("the credentials of user %q from %s", cfg.Username, ConfigSource())
	}
	return "the credentials from " + ConfigSource()
}

// sudoHint warns that under sudo the keychain is root's, not the user's.
func sudoHint() string {
	if u := os.Getenv("SUDO_USER"); u != "" && os.Getenv("DOCKER_CONFIG") == "" {
		return fmt.Sprintf("; under sudo the keychain is root's: log in as root, or run with DOCKER_CONFIG=~%s/.docker", u)
	}
	return ""
}

func hasCode(e *transport.Error, code transport.ErrorCode) bool {
	for _, d := range e.Errors {
		if d.Code == code {
			return true
		}
	}
	return false
}

// parseRef parses an image reference, saying which one was bad and what
// is valid.
func parseRef(what, ref string, o Options) (name.Reference, error) {
	r, err := name.ParseReference(ref, o.nameOptions()...)
	if err != nil {
		return nil, fmt.Errorf("%s %q is not an image reference (%v): want REGISTRY/REPOSITORY:TAG, such as registry.example.com/trafficpolice/agent:v1", what, ref, err)
	}
	if strings.TrimSpace(ref) != ref {
		return nil, fmt.Errorf("%s %q has blanks around it", what, ref)
	}
	return r, nil
}

// Exists asks ref's registry, with the keychain's credentials, whether it
// has ref (a HEAD of its manifest); the error says why not, as Explain
// does.
func Exists(ctx context.Context, ref string, o Options) error {
	r, err := parseRef("image", ref, o)
	if err != nil {
		return err
	}
	if _, err := remote.Head(r, remoteOptions(ctx)...); err != nil {
		return Explain(err, "look up", r)
	}
	return nil
}
