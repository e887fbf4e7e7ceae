package keystore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// swtpm control-channel commands (swtpm's tpm_ioctl.h, socket interface:
// a big-endian uint32 command code, its input, then a big-endian uint32
// result).
const (
	swtpmCmdInit  = 2
	swtpmIOTimout = 30 * time.Second
	maxTPMResp    = 64 << 10
)

// OpenTPMSimulator connects to a TPM 2.0 simulator served by swtpm in
// socket mode:
//
//	swtpm socket --tpm2 --server type=tcp,port=2321 --ctrl type=tcp,port=2322 \
//	    --tpmstate dir=/tmp/tpm --flags not-need-init,startup-clear
//
// addr is the server (data) port, which carries raw TPM 2.0 commands.
// ctrlAddr is the control port; when it is not "", the TPM is
// (re)initialised through it (CMD_INIT, as at power-on; this flushes
// transient objects) before use. In both cases TPM2_Startup(CLEAR) is
// sent, and "already started" is accepted. The store uses the default
// directory; set Dir before use. This is meant for tests and
// development, not for production devices.
func OpenTPMSimulator(addr, ctrlAddr string) (*TPMStore, error) {
	if ctrlAddr != "" {
		if err := swtpmInit(ctrlAddr); err != nil {
			return nil, err
		}
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("keystore: connect to TPM simulator: %w", err)
	}
	t := &socketTPM{conn: conn}
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(t); err != nil && !errors.Is(err, tpm2.TPMRCInitialize) {
		t.Close()
		return nil, fmt.Errorf("keystore: TPM simulator startup: %w", err)
	}
	if err := probe(t); err != nil {
		t.Close()
		return nil, err
	}
	return NewTPMStore(t, ""), nil
}

// swtpmInit sends CMD_INIT (flags 0) on swtpm's control channel.
func swtpmInit(ctrlAddr string) error {
	c, err := net.DialTimeout("tcp", ctrlAddr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("keystore: connect to TPM simulator control port: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(swtpmIOTimout))
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:], swtpmCmdInit)
	binary.BigEndian.PutUint32(req[4:], 0) // init flags
	if _, err := c.Write(req[:]); err != nil {
		return fmt.Errorf("keystore: TPM simulator init: %w", err)
	}
	var res [4]byte
	if _, err := io.ReadFull(c, res[:]); err != nil {
		return fmt.Errorf("keystore: TPM simulator init: %w", err)
	}
	if rc := binary.BigEndian.Uint32(res[:]); rc != 0 {
		return fmt.Errorf("keystore: TPM simulator init failed with TPM result %#x", rc)
	}
	return nil
}

// socketTPM is a transport.TPMCloser over swtpm's data channel: raw TPM
// command bytes out, one raw response back (its length is in the
// response header).
type socketTPM struct {
	mu   sync.Mutex
	conn net.Conn
}

// Send implements transport.TPM.
func (t *socketTPM) Send(cmd []byte) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_ = t.conn.SetDeadline(time.Now().Add(swtpmIOTimout))
	if _, err := t.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("keystore: TPM simulator write: %w", err)
	}
	var hdr [10]byte // tag (2), size (4), response code (4)
	if _, err := io.ReadFull(t.conn, hdr[:]); err != nil {
		return nil, fmt.Errorf("keystore: TPM simulator read: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < uint32(len(hdr)) || size > maxTPMResp {
		return nil, fmt.Errorf("keystore: TPM simulator response of %d bytes", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(t.conn, rsp[len(hdr):]); err != nil {
		return nil, fmt.Errorf("keystore: TPM simulator read: %w", err)
	}
	return rsp, nil
}

// Close implements io.Closer.
func (t *socketTPM) Close() error { return t.conn.Close() }
