package k8s

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listers "k8s.io/client-go/listers/core/v1"
)

// dnsServer is the cluster's DNS: SERVICE.NAMESPACE.svc.cluster.local
// answers the Service's cluster IP (a headless Service: its ready
// endpoints), from a watch on the API server, as CoreDNS's kubernetes
// plugin would. Every other name is NXDOMAIN: nothing is forwarded off
// the machine. Pods reach it as their nameserver (kubelet's clusterDNS).
type dnsServer struct {
	services listers.ServiceLister
	servers  []*dns.Server
	suffix   string
}

func startDNS(ctx context.Context, client kubernetes.Interface, addr netip.AddrPort, log io.Writer) (*dnsServer, error) {
	f := informers.NewSharedInformerFactory(client, 0)
	d := &dnsServer{services: f.Core().V1().Services().Lister(), suffix: ".svc." + ClusterDomain + "."}
	f.Start(ctx.Done())
	syncCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for typ, ok := range f.WaitForCacheSync(syncCtx.Done()) {
		if !ok {
			return nil, fmt.Errorf("cluster DNS: watch %v: not synced", typ)
		}
	}
	udp, err := net.ListenPacket("udp4", addr.String())
	if err != nil {
		return nil, fmt.Errorf("cluster DNS: listen on udp %s: %w", addr, err)
	}
	tcp, err := net.Listen("tcp4", addr.String())
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("cluster DNS: listen on tcp %s: %w", addr, err)
	}
	h := dns.HandlerFunc(d.serve)
	d.servers = []*dns.Server{{PacketConn: udp, Handler: h}, {Listener: tcp, Handler: h}}
	for _, s := range d.servers {
		go func() {
			if err := s.ActivateAndServe(); err != nil && ctx.Err() == nil {
				fmt.Fprintf(log, "k8s harness: cluster DNS stopped: %v\n", err)
			}
		}()
	}
	return d, nil
}

func (d *dnsServer) stop() {
	for _, s := range d.servers {
		s.Shutdown()
	}
}

func (d *dnsServer) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	ips, found := d.lookup(strings.ToLower(q.Name))
	switch {
	case !found:
		m.Rcode = dns.RcodeNameError
	case q.Qtype == dns.TypeA:
		for _, ip := range ips {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: ip})
		}
	}
	w.WriteMsg(m)
}

// lookup answers SERVICE.NAMESPACE.svc.cluster.local.
func (d *dnsServer) lookup(name string) ([]net.IP, bool) {
	rest, ok := strings.CutSuffix(name, d.suffix)
	if !ok {
		return nil, false
	}
	svcName, ns, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(ns, ".") {
		return nil, false
	}
	svc, err := d.services.Services(ns).Get(svcName)
	if err != nil {
		return nil, false
	}
	var ips []net.IP
	for _, s := range svc.Spec.ClusterIPs {
		if ip := net.ParseIP(s).To4(); ip != nil {
			ips = append(ips, ip)
		}
	}
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil, true // headless: the harness's tests do not use them
	}
	return ips, true
}
