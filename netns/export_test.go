package netns

// InstallLoopbackRules lets the external tests apply the redirect again.
var InstallLoopbackRules = installLoopbackRules

// ListeningPortsBothWays reads n's listeners through sock_diag and through
// the /proc tables, which must agree.
func ListeningPortsBothWays(n *Namespace) (diag, proc [2]map[uint16]bool, err error) {
	for _, m := range []*[2]map[uint16]bool{&diag, &proc} {
		m[0], m[1] = map[uint16]bool{}, map[uint16]bool{}
	}
	err = n.Do(func() error {
		if err := diagListeningPorts(diag[0], diag[1]); err != nil {
			return err
		}
		return readProcNet("/proc/thread-self/net/", proc[0], proc[1])
	})
	return diag, proc, err
}
