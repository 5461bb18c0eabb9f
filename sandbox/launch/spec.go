package launch

import (
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Spec is what to start and how.
type Spec struct {
	// NetnsPath is the network namespace to run in, e.g. /run/netns/NAME.
	NetnsPath string
	// ResolvConf and Hosts are files bind-mounted over /etc/resolv.conf
	// and /etc/hosts in the app's mount namespace; "" leaves the host's.
	// The app must be able to read them (mode 0644).
	ResolvConf, Hosts string
	// Argv is the command and its arguments; Argv[0] is looked up in the
	// PATH of Env, as a shell would.
	Argv []string
	// Env is the app's environment; nil means this process's. With UID
	// set, HOME, USER and LOGNAME are that user's from the user database
	// (under sudo they still name root).
	Env []string
	// Dir is the app's working directory; "" means this process's.
	Dir string
	// UID and GID are the credentials to run as; nil stays root. Setting
	// UID requires GID.
	UID, GID *uint32
	// Groups are the supplementary groups when UID is set; nil means the
	// user's groups from the user database (or just GID if it has none).
	Groups []uint32
	// CapAdd are capabilities the app gets on top of DefaultCapabilities
	// (names as ParseCapabilities takes them). They bound what any app may
	// hold; an app that runs as root holds them all, one that runs as UID
	// none (a setuid program it runs may gain them back).
	CapAdd []string
	// Stdin, Stdout and Stderr are as in exec.Cmd: an *os.File is passed
	// to the app as is, anything else through a pipe.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Terminal, when set, is the controlling terminal the app gets as its
	// foreground process group, so Ctrl-C reaches the app once (not the app
	// and trafficpolice, which would forward it a second time). The caller
	// takes the terminal back with ReclaimTerminal.
	Terminal *os.File

	// extraBinds lets the tests bind files over paths of their own.
	extraBinds []bindMount
}

type bindMount struct {
	Source, Target string
}

// payload is what the init helper receives, as JSON on its spec pipe.
type payload struct {
	NetnsPath string
	Binds     []bindMount
	Argv      []string
	Env       []string
	Dir       string
	UID, GID  *uint32
	Groups    []uint32
	// Caps are the capabilities the app may keep, canonical names.
	Caps      []string
	ParentPID int
}

func (s Spec) payload() (*payload, error) {
	if s.NetnsPath == "" {
		return nil, fmt.Errorf("Spec.NetnsPath is empty: want the sandbox's namespace, e.g. /run/netns/NAME")
	}
	if _, err := os.Stat(s.NetnsPath); err != nil {
		return nil, fmt.Errorf("Spec.NetnsPath %q: %w", s.NetnsPath, err)
	}
	if len(s.Argv) == 0 || s.Argv[0] == "" {
		return nil, fmt.Errorf("Spec.Argv %q is invalid: want the command and its arguments", s.Argv)
	}
	if s.UID != nil && s.GID == nil {
		return nil, fmt.Errorf("Spec.UID is %d but Spec.GID is nil: set both", *s.UID)
	}
	added, err := ParseCapabilities(s.CapAdd)
	if err != nil {
		return nil, fmt.Errorf("Spec.CapAdd: %w", err)
	}
	p := &payload{
		Caps:      append(slices.Clone(DefaultCapabilities), added...),
		NetnsPath: s.NetnsPath,
		Argv:      s.Argv,
		Env:       s.Env,
		Dir:       s.Dir,
		UID:       s.UID,
		GID:       s.GID,
		Groups:    s.Groups,
		ParentPID: os.Getpid(),
	}
	if p.Env == nil {
		p.Env = os.Environ()
	}
	for _, b := range []struct{ field, src, dst string }{
		{"ResolvConf", s.ResolvConf, "/etc/resolv.conf"},
		{"Hosts", s.Hosts, "/etc/hosts"},
	} {
		if b.src == "" {
			continue
		}
		if fi, err := os.Stat(b.src); err != nil {
			return nil, fmt.Errorf("Spec.%s: %w", b.field, err)
		} else if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("Spec.%s %q is not a regular file", b.field, b.src)
		}
		p.Binds = append(p.Binds, bindMount{b.src, b.dst})
	}
	p.Binds = append(p.Binds, s.extraBinds...)
	if p.UID != nil && p.Groups == nil {
		p.Groups = userGroups(*p.UID, *p.GID)
	}
	if p.UID != nil {
		p.Env = withUserEnv(p.Env, *p.UID)
	}
	return p, nil
}

// withUserEnv sets HOME, USER and LOGNAME in env to uid's, as login(1)
// would. A user the database does not know keeps env as it is.
func withUserEnv(env []string, uid uint32) []string {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return env
	}
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		switch name, _, _ := strings.Cut(kv, "="); name {
		case "HOME", "USER", "LOGNAME":
		default:
			out = append(out, kv)
		}
	}
	return append(out, "HOME="+u.HomeDir, "USER="+u.Username, "LOGNAME="+u.Username)
}

// userGroups returns the supplementary groups of uid from the user
// database, or just gid when it has none to tell.
func userGroups(uid, gid uint32) []uint32 {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return []uint32{gid}
	}
	ids, err := u.GroupIds()
	if err != nil {
		return []uint32{gid}
	}
	groups := []uint32{gid}
	for _, id := range ids {
		g, err := strconv.ParseUint(id, 10, 32)
		if err == nil && uint32(g) != gid {
			groups = append(groups, uint32(g))
		}
	}
	return groups
}

// CredentialsFromSudo returns the invoking user's SUDO_UID and SUDO_GID, or
// nils when this process is not root started through sudo.
func CredentialsFromSudo() (uid, gid *uint32, err error) {
	return credentialsFrom(os.Getenv, os.Geteuid())
}

func credentialsFrom(getenv func(string) string, euid int) (uid, gid *uint32, err error) {
	su, sg := getenv("SUDO_UID"), getenv("SUDO_GID")
	if euid != 0 || (su == "" && sg == "") {
		return nil, nil, nil
	}
	if su == "" || sg == "" {
		return nil, nil, fmt.Errorf("SUDO_UID=%q and SUDO_GID=%q: want both set or neither", su, sg)
	}
	u, err := strconv.ParseUint(su, 10, 32)
	if err != nil {
		return nil, nil, fmt.Errorf("SUDO_UID=%q is invalid: want a numeric user ID", su)
	}
	g, err := strconv.ParseUint(sg, 10, 32)
	if err != nil {
		return nil, nil, fmt.Errorf("SUDO_GID=%q is invalid: want a numeric group ID", sg)
	}
	u32, g32 := uint32(u), uint32(g)
	return &u32, &g32, nil
}

// StartError is a failure of the init helper before the app ran.
type StartError struct {
	// Step is what failed: "spec" (bad Spec or unreadable by the helper),
	// "init" (the helper died or panicked), "mount", "setns",
	// "capabilities", "credentials", "parent" (trafficpolice died
	// meanwhile), "chdir",
	// "lookup" or "exec".
	Step string
	// Msg says what, for lookup and exec as a shell would
	// ("./app: no such file or directory").
	Msg string
	// ExitCode is what a shell would exit with: 127 when the command is
	// not found, 126 when it cannot be executed; 0 for the other steps
	// (a failure of trafficpolice, not of the app).
	ExitCode int
	// Errno is the system error behind it, if any.
	Errno syscall.Errno
}

func (e *StartError) Error() string {
	if e.Step == "lookup" || e.Step == "exec" {
		return e.Msg
	}
	return "sandbox init: " + e.Step + ": " + e.Msg
}

// Unwrap makes errors.Is(err, fs.ErrNotExist) and the like work.
func (e *StartError) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}
