//go:build linux

// Command quicdemo is a QUIC echo server for rpwrap's tests, built on
// quic-go. It serves on the UDP socket passed as fd 3 (LISTEN_FDS), sends
// READY=1 to NOTIFY_SOCKET, and answers every line a client writes on a
// stream with the line and " gen=<RPWRAP_GENERATION>".
//
// When rpwrap routes QUIC by connection ID (--udp-flows quic) it sets
// RPWRAP_QUIC_SERVER_ID, and every connection ID the server issues carries
// that id in byte 1 (see README, "UDP and QUIC flows"). Every generation
// uses one stateless reset key, so that a generation that receives a
// packet of a connection it does not know answers with a stateless reset
// the client recognizes.
//
// On SIGTERM it stops accepting connections, serves those it has until
// they close (at most 10 s), and exits 0.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/quic-go/quic-go"
)

// ALPN is the application protocol the server speaks.
const ALPN = "rpwrap-echo"

func main() { os.Exit(run()) }

func run() int {
	gen := os.Getenv("RPWRAP_GENERATION")
	f := os.NewFile(3, "udp")
	pc, err := net.FilePacketConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "quicdemo: fd 3 is not a UDP socket (run it under rpwrap --listen udp://...): %v\n", err)
		return 2
	}
	key := quic.StatelessResetKey(sha256.Sum256([]byte("rpwrap quicdemo")))
	tr := &quic.Transport{Conn: pc, StatelessResetKey: &key}
	if s := os.Getenv("RPWRAP_QUIC_SERVER_ID"); s != "" {
		id, err := strconv.Atoi(s)
		if err != nil || id < 1 || id > 255 {
			fmt.Fprintf(os.Stderr, "quicdemo: RPWRAP_QUIC_SERVER_ID=%q: want 1..255\n", s)
			return 2
		}
		tr.ConnectionIDGenerator = serverIDGenerator(id)
	}
	tlsConf, err := selfSigned()
	if err != nil {
		fmt.Fprintf(os.Stderr, "quicdemo: %v\n", err)
		return 1
	}
	ln, err := tr.Listen(tlsConf, &quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintf(os.Stderr, "quicdemo: listen: %v\n", err)
		return 1
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM)
	var conns sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			conns.Go(func() { serve(c, gen) })
		}
	}()
	daemon.SdNotify(false, daemon.SdNotifyReady)
	<-sigc
	fmt.Fprintf(os.Stderr, "quicdemo gen=%s: stopping, serving open connections until they close\n", gen)
	ln.Close()
	done := make(chan struct{})
	go func() { conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	tr.Close()
	return 0
}

// serverIDGenerator issues 8-byte connection IDs with the server id in
// byte 1.
type serverIDGenerator byte

func (g serverIDGenerator) GenerateConnectionID() (quic.ConnectionID, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return quic.ConnectionID{}, err
	}
	b[1] = byte(g)
	return quic.ConnectionIDFromBytes(b), nil
}

func (g serverIDGenerator) ConnectionIDLen() int { return 8 }

// serve echoes on every stream of c until c closes.
func serve(c *quic.Conn, gen string) {
	for {
		s, err := c.AcceptStream(context.Background())
		if err != nil {
			return
		}
		go func() {
			defer s.Close()
			r := bufio.NewScanner(s)
			for r.Scan() {
				if _, err := fmt.Fprintf(s, "%s gen=%s\n", r.Text(), gen); err != nil {
					return
				}
			}
		}()
	}
}

func selfSigned() (*tls.Config, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "quicdemo"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}}, NextProtos: []string{ALPN}}, nil
}
