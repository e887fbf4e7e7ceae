// Package swtpmtest runs a software TPM 2.0 (swtpm) for tests of code that
// talks to a TPM: the agent's TPM key store and the key attestation Ward
// verifies. A simulator listens on two loopback TCP ports (the TPM command
// channel and swtpm's control channel); connect to it with
// keystore.OpenTPMSimulator(sim.Addr, sim.CtrlAddr).
//
// Optionally the TPM is manufactured first like a real one: swtpm_setup
// creates its endorsement keys (RSA-2048 persisted at 0x81010001) and an
// EK certificate in NV index 0x01c00002, issued by a local certificate
// authority (swtpm_localca) that stands in for the TPM vendor. Several
// simulators may share one authority (one vendor, several TPMs).
//
// When swtpm (or, for EK certificates, swtpm_setup) is missing, the test
// is skipped with the command that installs it, or fails when the CI
// environment variable is set: CI must run these tests.
package swtpmtest

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Install is the command that installs what the simulator needs.
const Install = "apt-get install -y swtpm swtpm-tools"

// Options configure Start.
type Options struct {
	// StateDir keeps the TPM's state; "" is a new temporary directory.
	// Starting a simulator again on the same directory is a reboot of the
	// same TPM.
	StateDir string
	// EKCertificate manufactures a TPM with endorsement keys and an EK
	// certificate signed by CA (a new authority when CA is nil). Only for
	// a new StateDir.
	EKCertificate bool
	// CA is the authority that signs the EK certificate (EKCertificate);
	// nil creates one for this simulator.
	CA *CA
}

// Sim is a running swtpm.
type Sim struct {
	// Addr is the TPM command channel, CtrlAddr swtpm's control channel
	// (host:port on 127.0.0.1).
	Addr, CtrlAddr string
	// StateDir holds the TPM's state.
	StateDir string
	// CA signed the EK certificate (nil without one).
	CA *CA

	cmd  *exec.Cmd
	done chan error
	once sync.Once
}

// CA is a local certificate authority standing in for a TPM vendor: a
// self-signed root and an intermediate that issues EK certificates.
type CA struct {
	dir string
}

// NewCA returns an authority kept in a temporary directory of t; it is
// created by the first simulator manufactured with it.
func NewCA(t testing.TB) *CA {
	t.Helper()
	return &CA{dir: t.TempDir()}
}

// PEM returns the authority's certificates, root and intermediate, in
// PEM: what an operator configures as the TPM vendor's CA bundle.
func (ca *CA) PEM(t testing.TB) []byte {
	t.Helper()
	var out []byte
	for _, f := range []string{"swtpm-localca-rootca-cert.pem", "issuercert.pem"} {
		b, err := os.ReadFile(filepath.Join(ca.dir, f))
		if err != nil {
			t.Fatalf("swtpmtest: the local CA has no %s yet (start a simulator with EKCertificate first): %v", f, err)
		}
		out = append(out, b...)
	}
	return out
}

// Root returns the authority's self-signed root certificate.
func (ca *CA) Root(t testing.TB) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ca.dir, "swtpm-localca-rootca-cert.pem"))
	if err != nil {
		t.Fatalf("swtpmtest: %v", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("swtpmtest: the local CA's root certificate is not PEM")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("swtpmtest: %v", err)
	}
	return c
}

// require returns the path of a program or skips (fails under CI).
func require(t testing.TB, prog string) string {
	t.Helper()
	bin, err := exec.LookPath(prog)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed; CI must run: %s", prog, Install)
		}
		t.Skipf("%s is not installed (run: %s)", prog, Install)
	}
	return bin
}

// Start runs a simulator on two free loopback ports and stops it when the
// test ends.
func Start(t testing.TB, o Options) *Sim {
	t.Helper()
	bin := require(t, "swtpm")
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	var ca *CA
	if o.EKCertificate {
		ca = o.CA
		if ca == nil {
			ca = NewCA(t)
		}
		manufacture(t, o.StateDir, ca)
	}
	for attempt := 0; attempt < 10; attempt++ {
		p := 20000 + rand.IntN(40000) // well away from 6000, 6665-6669, 10080
		if !portPairFree(p) {
			continue
		}
		s := &Sim{
			Addr:     "127.0.0.1:" + strconv.Itoa(p),
			CtrlAddr: "127.0.0.1:" + strconv.Itoa(p+1),
			StateDir: o.StateDir,
			CA:       ca,
			done:     make(chan error, 1),
		}
		s.cmd = exec.Command(bin, "socket", "--tpm2",
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", p),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", p+1),
			"--tpmstate", "dir="+o.StateDir,
			"--flags", "not-need-init,startup-clear")
		var stderr bytes.Buffer
		s.cmd.Stderr = &stderr
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("swtpmtest: start swtpm: %v", err)
		}
		go func() { s.done <- s.cmd.Wait() }()
		if s.waitListening(t, &stderr) {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatal("swtpmtest: no free port pair for swtpm")
	return nil
}

// waitListening waits until swtpm accepts connections; false when it
// exited (ports taken meanwhile: try others).
func (s *Sim) waitListening(t testing.TB, stderr *bytes.Buffer) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			t.Logf("swtpm exited (%v): %s; retrying on other ports", err, stderr.String())
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Stop()
	t.Fatalf("swtpmtest: swtpm did not listen on %s: %s", s.Addr, stderr.String())
	return false
}

// Stop terminates swtpm and waits for it (idempotent).
func (s *Sim) Stop() {
	s.once.Do(func() {
		_ = s.cmd.Process.Signal(os.Interrupt)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
}

// portPairFree reports whether 127.0.0.1:p and p+1 can be bound now.
func portPairFree(p int) bool {
	for _, q := range []int{p, p + 1} {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(q))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}

// caLock serialises manufacturing with one authority: swtpm_localca
// creates it on first use and numbers the certificates it issues.
var caLock sync.Mutex

// manufacture creates the TPM's endorsement keys and EK certificates in
// stateDir with swtpm_setup, the authority in ca issuing them.
func manufacture(t testing.TB, stateDir string, ca *CA) {
	t.Helper()
	setup := require(t, "swtpm_setup")
	localca := require(t, "swtpm_localca")
	conf := t.TempDir()
	caConf := filepath.Join(conf, "swtpm-localca.conf")
	write(t, caConf, fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", ca.dir))
	caOpts := filepath.Join(conf, "swtpm-localca.options")
	write(t, caOpts, "--platform-manufacturer Ward\n--platform-version 2.1\n--platform-model swtpmtest\n")
	setupConf := filepath.Join(conf, "swtpm_setup.conf")
	write(t, setupConf, fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
		localca, caConf, caOpts))
	caLock.Lock()
	defer caLock.Unlock()
	out, err := exec.Command(setup, "--tpm2", "--tpmstate", stateDir, "--create-ek-cert", "--config", setupConf,
		"--overwrite").CombinedOutput()
	if err != nil {
		t.Fatalf("swtpmtest: swtpm_setup: %v\n%s", err, out)
	}
}

func write(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
