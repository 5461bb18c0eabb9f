package preflight

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/trafficpolice/trafficpolice/sandbox/launch"
)

// Rootless runs put the app's network namespace in a user namespace of
// their own (sandbox/launch's holder). These checks say whether this user
// may have one, and why not.

// Sysctls that may forbid unprivileged user namespaces; tests point
// Env.ProcSys elsewhere.
const (
	sysctlMaxUserNS         = "user/max_user_namespaces"
	sysctlDebianUsernsClone = "kernel/unprivileged_userns_clone"
	sysctlAppArmorUserns    = "kernel/apparmor_restrict_unprivileged_userns"
)

// AppArmorProfile is the profile that lets trafficpolice create user
// namespaces where AppArmor restricts them (Ubuntu 23.10 and later), as
// rootless Podman ships one; the fix tells where it goes.
const AppArmorProfile = `abi <abi/4.0>,
include <tunables/global>

profile trafficpolice /usr/{local/,}bin/trafficpolice flags=(unconfined) {
  userns,
  include if exists <local/trafficpolice>
}
`

func readSysctl(env Env, key string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(env.ProcSys, key))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// checkUserns says whether this user can create the user and network
// namespaces a rootless run needs, reading the sysctls that forbid them
// for the reason, then trying (in a child process, which also tries the
// nat table there).
func checkUserns(env Env) Result {
	r := Result{Check: "userns"}
	if v, ok := readSysctl(env, sysctlMaxUserNS); ok && v == "0" {
		r.Status, r.Detail = Fail, "user namespaces are disabled (user.max_user_namespaces = 0)"
		r.Fix = "sudo sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d to keep it), or run with sudo"
		return r
	}
	if v, ok := readSysctl(env, sysctlDebianUsernsClone); ok && v == "0" {
		r.Status, r.Detail = Fail, "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)"
		r.Fix = "sudo sysctl -w kernel.unprivileged_userns_clone=1 (and in /etc/sysctl.d to keep it), or run with sudo"
		return r
	}
	if v, ok := readSysctl(env, sysctlAppArmorUserns); ok && v == "1" {
		r.Status, r.Detail = Fail, "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1)"
		r.Fix = "install trafficpolice's AppArmor profile: `trafficpolice doctor --apparmor-profile | sudo tee /etc/apparmor.d/trafficpolice && sudo apparmor_parser -r /etc/apparmor.d/trafficpolice`, or run with sudo"
		return r
	}
	if env.SkipUsernsProbe {
		r.Status, r.Detail = OK, "user namespaces are allowed (not tried)"
		return r
	}
	if _, err := exec.LookPath(env.IPTables); err != nil {
		r.Status, r.Detail = Fail, env.IPTables+" is not installed"
		r.Fix = "apt-get install iptables (the sandbox sends the app's loopback traffic to the router with a nat rule)"
		return r
	}
	out, err := probeUserns(env)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			// The namespaces were made; the nat table inside was not usable.
			r.Status, r.Detail = Fail, fmt.Sprintf("%s cannot use the nat table in a user namespace: %s", env.IPTables, out)
			r.Fix = "install iptables with the nf_tables backend (Debian and Ubuntu's default), and check that the kernel has nf_tables nat"
			return r
		}
		r.Status, r.Detail = Fail, fmt.Sprintf("cannot create a user namespace: %v", err)
		r.Fix = "check user.max_user_namespaces and your security modules (AppArmor, SELinux, seccomp in a container), or run with sudo"
		return r
	}
	r.Status, r.Detail = OK, fmt.Sprintf("user and network namespaces can be created as uid %d, with nat inside", env.Euid)
	return r
}

// probeUserns runs `iptables -t nat -S` in new user and network
// namespaces, started as the holder is (launch.UserNamespaceAttr).
func probeUserns(env Env) (string, error) {
	path, err := exec.LookPath(env.IPTables)
	if err != nil {
		return "", fmt.Errorf("%s is not installed (apt-get install iptables)", env.IPTables)
	}
	attr, err := launch.UserNamespaceAttr()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "-w", "-t", "nat", "-S")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = attr
	err = cmd.Run()
	return strings.TrimSpace(out.String()), err
}
