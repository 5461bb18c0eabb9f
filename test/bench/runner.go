package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// path is where a client runs and how its flows travel.
type path int

const (
	kernelPath   path = iota // a client in the pod netns, plain kernel routing
	localPath                // a client in the sandbox, flows local (the kernel path: kernelpath)
	remotePath               // a client in the sandbox, flows through the agent in the pod netns
	rootlessPath             // localPath with the sandbox in a user namespace (sandbox run --rootless)
	pastaPath                // a peer: the client under pasta as an unprivileged user (peers.go)
	slirpPath                // a peer: the client under slirp4netns as an unprivileged user
	routerPath               // localPath with --no-kernel-path: the router dials from the host
	relayPath                // a floor, not a tool: the remote route through two plain relays (relay.go)
)

func (p path) String() string {
	return [...]string{"kernel", "local", "remote", "rootless", "pasta", "slirp4netns", "router", "relay"}[p]
}

// tool is what carries p's flows: trafficpolice, or the peer.
func (p path) tool() string {
	if p.isPeer() {
		return p.String()
	}
	switch p {
	case relayPath:
		return "two relays"
	}
	return "trafficpolice"
}

// toolOf is the tool of the path named name.
func toolOf(name string) string {
	for p := kernelPath; p <= relayPath; p++ {
		if p.String() == name {
			return p.tool()
		}
	}
	return "trafficpolice"
}

// isPeer says p is another tool's path, measured for comparison.
func (p path) isPeer() bool {
	return p == pastaPath || p == slirpPath
}

// runner starts clients on each path.
type runner struct {
	tmp       string
	tp        string // the trafficpolice binary
	self      string // this program, readable by the sandboxed app
	topo      *topology
	agentAddr string // "" without agent
	// agentPID and agentDebug are the agent's process and its debug
	// server on the pod's loopback.
	agentPID   int
	agentDebug string
	token      string
	pin        string // the agent's key fingerprint, pinned by runs; "" for a trafficpolice without TLS
	profile    string // directory for CPU profiles; "" for none
	trace      bool   // execution traces instead of CPU profiles
	verbose    bool
	mtu        int // the sandbox TUN's MTU; 0 for trafficpolice's default
	// restored counts the times another program had turned forwarding
	// off on the bench's links (see ensureForwarding).
	restored int
}

// proc is one running client.
type proc struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	stdout    *bufio.Reader
	stderr    *bytes.Buffer
	debugAddr string // trafficpolice's pprof/expvar listener ("" on the kernel path)
	started   time.Time
}

// start runs "bench client ARGS" on path p. The caller must wait for it.
func (r *runner) start(ctx context.Context, p path, args []string, debug bool) (*proc, error) {
	if again, err := r.topo.ensureForwarding(); err != nil {
		return nil, err
	} else if again {
		r.restored++
	}
	client := append([]string{r.self, "client"}, args...)
	pr := &proc{stderr: new(bytes.Buffer)}
	var cmd *exec.Cmd
	switch {
	case p == kernelPath:
		cmd = exec.CommandContext(ctx, client[0], client[1:]...)
	case p == relayPath:
		client = append([]string{r.self, "client"}, r.relayArgs(args)...)
		cmd = exec.CommandContext(ctx, client[0], client[1:]...)
	case p.isPeer():
		cmd = r.peerCommand(ctx, p, client)
	default:
		argv := []string{"sandbox", "run", "-q"}
		if r.mtu != 0 {
			argv = append(argv, "--mtu", fmt.Sprint(r.mtu))
		}
		if debug {
			addr, err := freeLoopbackPort()
			if err != nil {
				return nil, err
			}
			pr.debugAddr = addr
			argv = append(argv, "--debug-listen", addr)
		}
		if p == rootlessPath {
			argv = append(argv, "--rootless")
		}
		if p == routerPath {
			argv = append(argv, "--no-kernel-path")
		}
		if p == remotePath {
			if r.agentAddr == "" {
				return nil, fmt.Errorf("the remote path needs the agent, which is not running")
			}
			argv = append(argv, "--agent-address", r.agentAddr)
			if r.pin != "" {
				argv = append(argv, "--agent-fingerprint", r.pin)
			}
		}
		argv = append(argv, "--")
		cmd = exec.CommandContext(ctx, r.tp, append(argv, client...)...)
		// trafficpolice cleans up on SIGTERM; SIGKILL would leave its
		// namespace for the next run's collector.
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 15 * time.Second
	}
	cmd.Env = r.env(p)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = pr.stderr
	pr.cmd, pr.stdin, pr.stdout = cmd, stdin, bufio.NewReader(stdout)
	pr.started = time.Now()
	if p == kernelPath || p == relayPath {
		err = r.topo.pod.Do(cmd.Start)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		return nil, fmt.Errorf("start %s client: %w", p, err)
	}
	return pr, nil
}

// env is the client's environment: this one without sudo's variables, so
// the sandboxed app runs as root like the kernel path's client.
func (r *runner) env(p path) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SUDO_") || strings.HasPrefix(kv, "TRAFFICPOLICE_AGENT_TOKEN=") {
			continue
		}
		env = append(env, kv)
	}
	if p == remotePath {
		env = append(env, "TRAFFICPOLICE_AGENT_TOKEN="+r.token)
	}
	return env
}

// wait waits for the client and returns its result line.
func (pr *proc) wait() (clientResult, error) {
	pr.stdin.Close()
	out, _ := io.ReadAll(pr.stdout)
	err := pr.cmd.Wait()
	if err != nil {
		return clientResult{}, fmt.Errorf("%v: %s", err, strings.TrimSpace(pr.stderr.String()))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var res clientResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		return res, fmt.Errorf("client result %q: %w (stderr: %s)", lines[len(lines)-1], err, pr.stderr.String())
	}
	return res, nil
}

// run runs a client to its end. With a profile directory and a name, it
// records trafficpolice's CPU profile meanwhile (profileFor long).
func (r *runner) run(ctx context.Context, p path, args []string, profileName string, profileFor time.Duration) (clientResult, error) {
	debug := r.profile != "" && profileName != "" && p != kernelPath && p != relayPath && !p.isPeer()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	pr, err := r.start(ctx, p, args, debug)
	if err != nil {
		return clientResult{}, err
	}
	if debug {
		go func() {
			// The client needs a moment to connect; then sample the
			// steady state.
			time.Sleep(200 * time.Millisecond)
			if err := r.saveProfile(ctx, http.DefaultClient, pr.debugAddr, filepath.Join(r.profile, profileName+".pprof"), profileFor); err != nil {
				fmt.Fprintf(os.Stderr, "bench: profile %s: %v\n", profileName, err)
			}
		}()
		// The remote path's other half runs in the agent.
		if p == remotePath && r.agentDebug != "" {
			go func() {
				time.Sleep(200 * time.Millisecond)
				if err := r.saveProfile(ctx, r.agentClient(), r.agentDebug, filepath.Join(r.profile, profileName+"-agent.pprof"), profileFor); err != nil {
					fmt.Fprintf(os.Stderr, "bench: agent profile %s: %v\n", profileName, err)
				}
			}()
		}
	}
	return pr.wait()
}

func (r *runner) saveProfile(ctx context.Context, c *http.Client, addr, file string, d time.Duration) error {
	secs := max(1, int(d.Seconds()))
	kind := "profile"
	if r.trace {
		kind = "trace"
		file = strings.TrimSuffix(file, ".pprof") + ".trace"
	}
	var body []byte
	var err error
	for range 20 {
		body, err = httpGetWith(ctx, c, fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", addr, kind, secs))
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	return os.WriteFile(file, body, 0o644)
}

func httpGet(ctx context.Context, url string) ([]byte, error) {
	return httpGetWith(ctx, http.DefaultClient, url)
}

func httpGetWith(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// freeLoopbackPort finds a free port on 127.0.0.1 for trafficpolice's
// debug listener.
func freeLoopbackPort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// expect reads one line from the client, which must start with the word
// want, and returns the rest of the line.
func (pr *proc) expect(want string) (string, error) {
	line, err := pr.stdout.ReadString('\n')
	if err != nil {
		pr.stdin.Close()
		werr := pr.cmd.Wait()
		return "", fmt.Errorf("client ended before %q: %v %v: %s", want, err, werr, strings.TrimSpace(pr.stderr.String()))
	}
	word, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	if word != want {
		return "", fmt.Errorf("client said %q, want %q", strings.TrimSpace(line), want)
	}
	return rest, nil
}

// rss is a process's resident set in bytes, from /proc/PID/status.
func rss(pid int) (int64, error) {
	return procStatusKB("/proc/"+strconv.Itoa(pid)+"/status", "VmRSS:")
}

// slab is the kernel's slab memory in bytes, from /proc/meminfo.
func slab() (int64, error) { return procStatusKB("/proc/meminfo", "Slab:") }

func procStatusKB(file, key string) (int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("%s: no %s line", file, key)
}

// debugVars reads trafficpolice's /debug/vars at addr after a garbage
// collection, through c.
func debugVars(ctx context.Context, c *http.Client, addr string) (goroutines int, heap int64, err error) {
	if _, err := httpGetWith(ctx, c, "http://"+addr+"/debug/pprof/heap?gc=1"); err != nil {
		return 0, 0, err
	}
	body, err := httpGetWith(ctx, c, "http://"+addr+"/debug/vars")
	if err != nil {
		return 0, 0, err
	}
	var v struct {
		Goroutines int `json:"goroutines"`
		MemStats   struct {
			HeapAlloc int64
		} `json:"memstats"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return 0, 0, fmt.Errorf("debug vars: %w", err)
	}
	return v.Goroutines, v.MemStats.HeapAlloc, nil
}

// agentVars is debugVars for the agent, whose debug server listens on
// the pod namespace's loopback.
func (r *runner) agentVars(ctx context.Context) (goroutines int, heap int64, err error) {
	g, h, err := debugVars(ctx, r.agentClient(), r.agentDebug)
	if err != nil {
		return 0, 0, fmt.Errorf("the agent's debug vars: %w", err)
	}
	return g, h, nil
}

// agentClient reaches the agent's debug server on the pod namespace's
// loopback.
func (r *runner) agentClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := r.topo.pod.Do(func() error {
				var d net.Dialer
				var err error
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
}

// saveMemProfiles saves, for the memory rows, what a process holds: its
// live heap profile, its goroutines' stacks and its /debug/vars (memstats:
// stack, heap and runtime overhead) as prefix.heap.pprof, prefix.goroutines.txt
// and prefix.vars.json.
func saveMemProfiles(ctx context.Context, c *http.Client, addr, prefix string) error {
	for _, f := range []struct{ url, file string }{
		{"/debug/pprof/heap?gc=1", ".heap.pprof"},
		{"/debug/pprof/goroutine?debug=1", ".goroutines.txt"},
		{"/debug/vars", ".vars.json"},
	} {
		body, err := httpGetWith(ctx, c, "http://"+addr+f.url)
		if err != nil {
			return err
		}
		if err := os.WriteFile(prefix+f.file, body, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// waitDebug waits until trafficpolice's debug listener answers.
func waitDebug(ctx context.Context, addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := httpGet(ctx, "http://"+addr+"/debug/vars")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("trafficpolice's debug listener %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
