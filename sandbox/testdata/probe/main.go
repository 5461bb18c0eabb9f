// Command probe is a statically linked test client the sandbox tests run
// inside the sandbox. It uses Go's own resolver and sockets, no libc.
//
//	probe dial ADDR            connect, print "connected" or the error
//	probe echo ADDR N          N concurrent connections, each echoes a message
//	probe sha256 ADDR          read until EOF, print the SHA-256 of the bytes
//	probe resolve NAME         print the addresses NAME resolves to
//	probe self                 listen on 127.0.0.1, connect to itself
//	probe udp ADDR             send a datagram, print the answer or the error
//	probe udpto ADDR           the same from an unconnected socket (sendto)
//	probe read ADDR            print what the server sends
//	probe serve-whoami ADDR TAG   TCP and UDP: answer "TAG peer=IP:PORT"
//	probe serve-echo ADDR         TCP echo
//	probe serve-bytes ADDR N      send N bytes of a fixed pattern, then close
//	probe sameport ADDR...     connect to each ADDR from one local port (SO_REUSEADDR),
//	                           all open at once, each echoes a message
//	probe hold ADDR N FILE     open N connections (each echoes once), print
//	                           "held N", keep them until FILE exists, close
//	                           them all, print "closed N"
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe dial|echo|sha256|resolve|self|udp ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "dial":
		err = dial(os.Args[2])
	case "echo":
		n, _ := strconv.Atoi(os.Args[3])
		err = echo(os.Args[2], n)
	case "sha256":
		err = sum(os.Args[2])
	case "resolve":
		err = resolve(os.Args[2])
	case "self":
		err = self()
	case "udp":
		err = udp(os.Args[2])
	case "udpto":
		err = udpTo(os.Args[2])
	case "read":
		err = read(os.Args[2])
	case "serve-whoami":
		err = serveWhoami(os.Args[2], os.Args[3])
	case "serve-echo":
		err = serveEcho(os.Args[2])
	case "hold":
		n, _ := strconv.Atoi(os.Args[3])
		err = hold(os.Args[2], n, os.Args[4])
	case "sameport":
		err = samePort(os.Args[2:])
	case "serve-bytes":
		n, _ := strconv.Atoi(os.Args[3])
		err = serveBytes(os.Args[2], n)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
}

func dial(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	fmt.Println("connected")
	return c.Close()
}

func echo(addr string, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	conns := make([]net.Conn, n)
	// Open all first, so they are all open at once.
	for i := range n {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns[i] = c
	}
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			msg := fmt.Sprintf("hello %d\n", i)
			c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := c.Write([]byte(msg)); err != nil {
				errs <- err
				return
			}
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
				errs <- fmt.Errorf("connection %d: got %q, %v", i, buf, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	fmt.Printf("%d echoed\n", n)
	return nil
}

// hold opens n connections at once (32 dials in flight) and keeps them
// open, each proven by one echo, until release exists.
func hold(addr string, n int, release string) error {
	conns := make([]net.Conn, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", addr, 20*time.Second)
			if err != nil {
				errs <- fmt.Errorf("connection %d: %w", i, err)
				return
			}
			conns[i] = c
			c.SetDeadline(time.Now().Add(20 * time.Second))
			buf := []byte{byte(i)}
			if _, err := c.Write(buf); err != nil {
				errs <- fmt.Errorf("connection %d: %w", i, err)
				return
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				errs <- fmt.Errorf("connection %d: %w", i, err)
				return
			}
			c.SetDeadline(time.Time{})
		}()
	}
	wg.Wait()
	close(errs)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for err := range errs {
		return err
	}
	fmt.Printf("held %d\n", n)
	for {
		if _, err := os.Stat(release); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range conns {
		c.Close()
	}
	fmt.Printf("closed %d\n", n)
	return nil
}

func sum(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return err
	}
	fmt.Println(n, hex.EncodeToString(h.Sum(nil)))
	return nil
}

func resolve(name string) error {
	r := &net.Resolver{PreferGo: true}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := r.LookupHost(ctx, name)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		fmt.Println(a)
	}
	return nil
}

func self() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("me"))
			c.Close()
		}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	fmt.Println("self:", string(b))
	return nil
}

func udp(addr string) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	fmt.Println("udp:", string(buf[:n]))
	return nil
}

func udpTo(addr string) error {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	c, err := net.ListenUDP("udp", nil)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.WriteToUDP([]byte("ping"), raddr); err != nil {
		return err
	}
	buf := make([]byte, 200)
	n, from, err := c.ReadFromUDP(buf)
	if err != nil {
		return err
	}
	fmt.Printf("udpto: %s from %s\n", buf[:n], from)
	return nil
}

func read(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	fmt.Print(string(b))
	return err
}

func serveWhoami(addr, tag string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(tag+" peer="+from.String()), from)
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		fmt.Fprintf(c, "%s peer=%s\n", tag, c.RemoteAddr())
		c.Close()
	}
}

func serveEcho(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			// Not io.Copy: TCP to TCP it splices through a pipe, two more
			// descriptors per connection, and a soak of 10 000 held
			// connections would run the server out of them.
			buf := make([]byte, 16<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
		}()
	}
}

// Pattern is the byte at offset i of serve-bytes' stream.
func Pattern(i int) byte { return byte(i*7 + i>>11) }

func serveBytes(addr string, n int) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	data := make([]byte, n)
	for i := range data {
		data[i] = Pattern(i)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			c.Write(data)
			c.Close()
		}()
	}
}

// samePort connects to each address from the same local port, as Linux's
// own port choice may for connections to different destinations, keeps
// them all open and echoes a message over each.
func samePort(addrs []string) error {
	reuse := func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}
	var local *net.TCPAddr
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, a := range addrs {
		d := net.Dialer{Timeout: 10 * time.Second, Control: reuse}
		if local != nil {
			d.LocalAddr = local
		}
		c, err := d.Dial("tcp", a)
		if err != nil {
			return fmt.Errorf("connect to %s from %v: %w", a, local, err)
		}
		conns = append(conns, c)
		if local == nil {
			local = c.LocalAddr().(*net.TCPAddr)
		}
	}
	for i, c := range conns {
		msg := fmt.Sprintf("hello %d\n", i)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return fmt.Errorf("%s: %w", addrs[i], err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			return fmt.Errorf("%s: got %q, %v", addrs[i], buf, err)
		}
	}
	fmt.Printf("%d echoed from port %d\n", len(conns), local.Port)
	return nil
}
