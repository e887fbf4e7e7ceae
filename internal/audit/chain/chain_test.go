package chain_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/audit/chain"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// build writes 65 events: 1..60 sealed with a checkpoint at 20, 40 and
// 60, then 61..65 sealed after the newest checkpoint.
func build(t *testing.T, b backend) *env {
	e := newEnv(t, b, chain.Options{CheckpointEvents: 20, CheckpointInterval: time.Hour})
	for range 3 {
		e.appendEvents(20)
		e.advance(time.Minute)
		e.seal()
	}
	e.appendEvents(5)
	e.seal()
	var seqs []int64
	for _, cp := range e.checkpoints() {
		seqs = append(seqs, cp.Seq)
	}
	if len(seqs) != 3 || seqs[0] != 20 || seqs[1] != 40 || seqs[2] != 60 {
		t.Fatalf("checkpoints at %v, want 20, 40, 60", seqs)
	}
	return e
}

// A log sealed as it is written verifies, with every checkpoint on the
// way, the unsigned tail and the unsealed events counted.
func TestSealAndVerify(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			e := build(t, b)
			rep := e.mustVerify(chain.VerifyOptions{})
			if rep.From != 1 || rep.To != 65 || rep.Records != 65 || !rep.Genesis || rep.Checkpoints != 3 ||
				rep.Latest == nil || rep.Latest.Seq != 60 || rep.Unsigned != 5 || rep.Unsealed != 0 || rep.Legacy != 0 {
				t.Errorf("report %+v", rep)
			}
			e.appendEvents(3)
			if rep := e.mustVerify(chain.VerifyOptions{}); rep.Unsealed != 3 || rep.To != 65 {
				t.Errorf("with 3 unsealed: %+v", rep)
			}
			// The interval passes: the next round signs.
			e.advance(2 * time.Hour)
			if n := e.seal(); n != 3 {
				t.Errorf("sealed %d, want 3", n)
			}
			rep = e.mustVerify(chain.VerifyOptions{})
			if rep.Latest.Seq != 68 || rep.Unsigned != 0 || rep.Checkpoints != 4 {
				t.Errorf("after the interval: %+v", rep)
			}
			// The signed checkpoint says what the chain says.
			cps := e.checkpoints()
			cp, err := chain.VerifyCheckpoint(cps[len(cps)-1], trusted(t, e))
			if err != nil {
				t.Fatal(err)
			}
			head, err := e.st.AuditChainHead(ctx)
			if err != nil || !bytes.Equal(cp.ChainHash(), head.Hash) || cp.Start != 0 || cp.KID != e.keys.ActiveKID() {
				t.Errorf("checkpoint %+v, head %+v", cp, head)
			}
		})
	}
}

func trusted(t *testing.T, e *env) chain.Keys {
	t.Helper()
	keys, untrusted, err := chain.TrustedKeys(ctx, e.st, e.kek)
	if err != nil || len(untrusted) != 0 {
		t.Fatalf("TrustedKeys: %v, untrusted %v", err, untrusted)
	}
	return keys
}

// rehash recomputes, as an attacker can (the chain is plain SHA-256),
// every link from seq on, so that each record matches its stored hash.
func rehash(t *testing.T, e *env, from int64) {
	t.Helper()
	var prev []byte
	var links []store.ChainLink
	err := e.st.ScanEventRecords(ctx, store.EventScan{After: from - 2}, func(r *store.EventRecord) error {
		if r.Seq < from {
			prev = bytes.Clone(r.Hash)
			return nil
		}
		h := chain.Link(prev, r.Origin, r.Leaf)
		links = append(links, store.ChainLink{Seq: r.Seq, Origin: r.Origin, Hash: h})
		prev = h
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		e.exec(t, `UPDATE audit_chain SET hash = $1 WHERE seq = $2`, l.Hash, l.Seq)
	}
}

// Someone with database access changes, removes, inserts records, forges
// links and checkpoints, truncates the log: Verify names each, at the
// right sequence number, on both backends.
func TestTamperingIsDetected(t *testing.T) {
	forged := `INSERT INTO events (id, type, time, actor, ip) VALUES ('ev-forged', 'signin.succeeded', 1, 'alice', '192.0.2.1')`
	cases := []struct {
		name   string
		tamper func(t *testing.T, e *env)
		seq    int64
		kind   string
		detail string // in the first problem's detail
	}{
		{"edit a field", func(t *testing.T, e *env) {
			e.exec(t, `UPDATE events SET ip = '198.51.100.66' WHERE seq = 37`)
		}, 37, chain.Changed, "does not match its hash"},
		{"edit a NULL into an empty text", func(t *testing.T, e *env) {
			e.exec(t, `UPDATE events SET user_id = '' WHERE seq = 12 AND user_id IS NULL`)
		}, 12, chain.Changed, ""},
		{"edit a record after the newest checkpoint", func(t *testing.T, e *env) {
			e.exec(t, `UPDATE events SET outcome = 'failure' WHERE seq = 63`)
		}, 63, chain.Changed, ""},
		{"edit and recompute every hash after it", func(t *testing.T, e *env) {
			e.exec(t, `UPDATE events SET actor = 'mallory' WHERE seq = 37`)
			rehash(t, e, 37)
		}, 21, chain.Rewritten, "checkpoint signed at seq 40"},
		{"edit after the newest checkpoint and recompute the hashes", func(t *testing.T, e *env) {
			e.exec(t, `UPDATE events SET actor = 'mallory' WHERE seq = 62`)
			rehash(t, e, 62)
		}, 62, chain.Changed, "record MAC"},
		{"edit a link's origin", func(t *testing.T, e *env) {
			e.exec(t, `UPDATE audit_chain SET origin = 2 WHERE seq = 8`)
		}, 8, chain.Changed, ""},
		{"delete a record", func(t *testing.T, e *env) {
			e.exec(t, `DELETE FROM events WHERE seq = 45`)
		}, 45, chain.Removed, "seq 45 is missing"},
		{"delete records and their links", func(t *testing.T, e *env) {
			e.exec(t, `DELETE FROM events WHERE seq IN (45, 46)`)
			e.exec(t, `DELETE FROM audit_chain WHERE seq IN (45, 46)`)
		}, 45, chain.Removed, "seq 45 to 46 are missing"},
		{"delete the first records", func(t *testing.T, e *env) {
			e.exec(t, `DELETE FROM events WHERE seq <= 3`)
			e.exec(t, `DELETE FROM audit_chain WHERE seq <= 3`)
		}, 1, chain.Removed, "started after seq 0"},
		{"insert a record", func(t *testing.T, e *env) {
			e.exec(t, forged)
			e.seal() // the sealer links it as not written by Ward
		}, 66, chain.Inserted, "not written by Ward"},
		{"insert a record with a link of its own", func(t *testing.T, e *env) {
			e.exec(t, forged)
			var leaf [32]byte
			e.st.ScanEventRecords(ctx, store.EventScan{After: 65}, func(r *store.EventRecord) error { leaf = r.Leaf; return nil })
			head, err := e.st.AuditChainHead(ctx)
			if err != nil {
				t.Fatal(err)
			}
			e.exec(t, `INSERT INTO audit_chain (seq, origin, hash) VALUES (66, 1, $1)`, chain.Link(head.Hash, chain.OriginWard, leaf))
			// The sealer does not sign it.
			if err := e.sealer.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			if cps := e.checkpoints(); cps[len(cps)-1].Seq != 65 {
				t.Errorf("the newest checkpoint is at seq %d, want 65: the forged record must not be signed", cps[len(cps)-1].Seq)
			}
		}, 66, chain.Inserted, "no record MAC"},
		{"remove a record's link", func(t *testing.T, e *env) {
			e.exec(t, `DELETE FROM audit_chain WHERE seq = 30`)
		}, 30, chain.Inserted, "not in the chain"},
		{"truncate the tail", func(t *testing.T, e *env) {
			e.exec(t, `DELETE FROM events WHERE seq > 50`)
			e.exec(t, `DELETE FROM audit_chain WHERE seq > 50`)
		}, 51, chain.Truncated, "checkpoint signed at seq 60"},
		{"truncate the tail but not the links", func(t *testing.T, e *env) {
			e.exec(t, `DELETE FROM events WHERE seq > 62`)
		}, 63, chain.Removed, "the chain links them"},
		{"garble a checkpoint's signature", func(t *testing.T, e *env) {
			e.exec(t, `UPDATE audit_checkpoints SET jws = jws || 'A' WHERE seq = 40`)
		}, 40, chain.BadCheckpoint, ""},
		{"change a checkpoint's hash", func(t *testing.T, e *env) {
			e.exec(t, `UPDATE audit_checkpoints SET hash = $1 WHERE seq = 20`, make([]byte, 32))
		}, 20, chain.BadCheckpoint, "does not say what its signature covers"},
	}
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					e := build(t, b)
					tc.tamper(t, e)
					p := firstProblem(t, e.verify(chain.VerifyOptions{}), tc.seq, tc.kind)
					if !strings.Contains(p.Detail, tc.detail) {
						t.Errorf("detail %q lacks %q", p.Detail, tc.detail)
					}
				})
			}
			if b.name == "postgres" {
				t.Run("insert a duplicate sequence number", func(t *testing.T) {
					e := build(t, b)
					e.exec(t, `ALTER TABLE events DROP CONSTRAINT events_pkey`)
					e.exec(t, `INSERT INTO events (seq, id, type) OVERRIDING SYSTEM VALUE VALUES (30, 'ev-dup', 'signin.succeeded')`)
					firstProblem(t, e.verify(chain.VerifyOptions{}), 30, chain.Inserted)
				})
			}
			t.Run("sign checkpoints with a key of ones own", func(t *testing.T) {
				e := build(t, b)
				// A forged key row (sealed under another KEK) and the
				// checkpoint it "signs".
				other := newEnvKEK(t, b, chain.Options{CheckpointEvents: 1}, otherKEK)
				other.appendEvents(1)
				other.seal()
				ks, _ := other.st.ListAuditKeys(ctx)
				cps := other.checkpoints()
				e.exec(t, `INSERT INTO audit_keys (kid, public_enc, created_at) VALUES ($1, $2, 0)`, ks[0].KID, ks[0].PublicEnc)
				e.exec(t, `UPDATE audit_checkpoints SET jws = $1, kid = $2 WHERE seq = 60`, cps[0].JWS, cps[0].KID)
				rep := e.verify(chain.VerifyOptions{})
				if rep.Problems[0].Kind != chain.UntrustedKey || rep.Problems[1].Seq != 60 || rep.Problems[1].Kind != chain.BadCheckpoint {
					t.Errorf("problems %v", rep.Problems)
				}
			})
		})
	}
}

// The sealer refuses to sign on top of tampering: a checkpoint covers
// only what it verified, and the link it stored last must still be
// there.
func TestSealerSignsOnlyWhatItVerified(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			e := build(t, b)
			// Records 61..65 are sealed, not signed. Someone removes 63 and
			// renumbers 64 and 65 down, recomputing the links: the chain
			// is consistent, but not the one this sealer stored.
			e.exec(t, `DELETE FROM events WHERE seq = 63`)
			e.exec(t, `DELETE FROM audit_chain WHERE seq >= 63`)
			moveEvent(t, e, b, 64, 63)
			moveEvent(t, e, b, 65, 64)
			var prev []byte
			var links []store.ChainLink
			e.st.ScanEventRecords(ctx, store.EventScan{After: 61}, func(r *store.EventRecord) error {
				if r.Seq == 62 {
					prev = bytes.Clone(r.Hash)
					return nil
				}
				h := chain.Link(prev, chain.OriginWard, r.Leaf)
				links = append(links, store.ChainLink{Seq: r.Seq, Origin: chain.OriginWard, Hash: h})
				prev = h
				return nil
			})
			if err := e.st.SealEvents(ctx, links); err != nil {
				t.Fatal(err)
			}
			if err := e.sealer.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			if cps := e.checkpoints(); cps[len(cps)-1].Seq != 60 {
				t.Errorf("newest checkpoint at %d, want 60: nothing after it can be vouched for", cps[len(cps)-1].Seq)
			}
			// The same rebuild by a process that did not store those links
			// (restarted) is consistent: only the tail after the newest
			// checkpoint is exposed so (docs/secops.md).
			fresh := e.join(chain.Options{})
			if err := fresh.sealer.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			if cps := e.checkpoints(); cps[len(cps)-1].Seq != 64 {
				t.Errorf("newest checkpoint at %d, want 64", cps[len(cps)-1].Seq)
			}
		})
	}
}

// Retention deletes whole segments and leaves the checkpoint at the cut
// as the anchor: the rest still verifies from it. Deleting more the same
// way, while the anchor is younger than the retention, is reported.
func TestRetentionKeepsVerificationWorking(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			e := build(t, b) // checkpoints at 20, 40, 60, one minute apart
			e.advance(30 * 24 * time.Hour)
			e.appendEvents(5)
			e.seal()
			e.advance(time.Hour)
			if err := e.sealer.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			// 10 days: every segment up to the checkpoint at 60.
			n, err := audit.Prune(ctx, e.st, e.Now(), 10*24*time.Hour)
			if err != nil || n != 60 {
				t.Fatalf("Prune = %d, %v; want 60", n, err)
			}
			if cps := e.checkpoints(); cps[0].Seq != 60 {
				t.Fatalf("oldest checkpoint %d, want the anchor at 60", cps[0].Seq)
			}
			rep := e.mustVerify(chain.VerifyOptions{Retention: 10 * 24 * time.Hour})
			if rep.Genesis || rep.AnchorSeq != 60 || rep.From != 61 || rep.To != 70 || rep.Records != 10 {
				t.Errorf("after retention: %+v", rep)
			}
			// The sealer goes on from the anchor.
			e.appendEvents(2)
			e.seal()
			if err := e.sealer.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			rep = e.mustVerify(chain.VerifyOptions{Retention: 10 * 24 * time.Hour})
			if rep.Latest.Start != 60 || rep.Latest.Seq != 72 {
				t.Errorf("checkpoint after retention: %+v", rep.Latest)
			}
			// Someone deletes the next segment as retention would: its
			// anchor is an hour old, the retention 10 days.
			if _, err := e.st.DeleteAuditSegment(ctx, 70); err != nil {
				t.Fatal(err)
			}
			p := firstProblem(t, e.verify(chain.VerifyOptions{Retention: 10 * 24 * time.Hour}), 61, chain.Removed)
			if !strings.Contains(p.Detail, "retention does not explain") {
				t.Errorf("detail %q", p.Detail)
			}
			// Had retention been one hour, it would (the minimum does not
			// apply to what verification accepts).
			e.mustVerify(chain.VerifyOptions{Retention: time.Minute})
		})
	}
}

// crashing fails every SealEvents after the first n: a sealer killed
// after its first transactions.
type crashing struct {
	store.Store
	n int
}

func (c *crashing) SealEvents(ctx context.Context, links []store.ChainLink) error {
	if c.n == 0 {
		return errors.New("killed")
	}
	c.n--
	return c.Store.SealEvents(ctx, links)
}

// A sealer that stops in the middle (a crash: no final round) leaves a
// chain the next process continues, on a reopened store.
func TestRestartInTheMiddle(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			e := newEnv(t, b, chain.Options{})
			e.appendEvents(40)
			s1, err := chain.New(ctx, chain.Options{Store: &crashing{Store: e.st, n: 1}, KEK: e.kek, Signer: e.keys, Now: e.Now, Batch: 7})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s1.Seal(ctx); err == nil {
				t.Fatal("the crashing sealer did not fail")
			}
			head, err := e.st.AuditChainHead(ctx)
			if err != nil || head.Seq != 7 {
				t.Fatalf("head after one batch: %+v, %v", head, err)
			}
			// The first checkpoint is signed at once: over what was sealed.
			if cps := e.checkpoints(); len(cps) != 1 || cps[0].Seq != 7 {
				t.Fatalf("checkpoints after the crash: %v", cps)
			}
			// A new process on a reopened store.
			e.st.Close()
			again := e.join(chain.Options{CheckpointEvents: 25})
			again.appendEvents(10)
			if n := again.seal(); n != 43 {
				t.Errorf("sealed %d, want the other 43", n)
			}
			if err := again.sealer.Close(); err != nil {
				t.Fatal(err)
			}
			rep := again.mustVerify(chain.VerifyOptions{})
			if rep.Records != 50 || rep.Latest.Seq != 50 || rep.Unsigned != 0 {
				t.Errorf("after the restart: %+v", rep)
			}
		})
	}
}

// Verification of a range starts at the checkpoint before it and goes on
// to the checkpoint after it; a problem outside what it reads is not
// seen, one inside is.
func TestVerifyRange(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			e := build(t, b)
			rep := e.mustVerify(chain.VerifyOptions{From: 30, To: 45})
			if rep.AnchorSeq != 20 || rep.From != 21 || rep.To != 60 || rep.Checkpoints != 2 {
				t.Errorf("range 30..45: %+v", rep)
			}
			e.exec(t, `UPDATE events SET ip = '198.51.100.66' WHERE seq = 10`)
			e.mustVerify(chain.VerifyOptions{From: 30, To: 45})
			e.exec(t, `UPDATE events SET ip = '198.51.100.66' WHERE seq = 25`)
			firstProblem(t, e.verify(chain.VerifyOptions{From: 30, To: 45}), 25, chain.Changed)
			firstProblem(t, e.verify(chain.VerifyOptions{}), 10, chain.Changed)
		})
	}
}

// A run of sequence numbers nobody committed (here: an event stored far
// ahead, as after a sequence moved by hand) is filled: its first
// thousand numbers get a record each, the last of them stands for the
// rest, and the log verifies.
func TestLongGap(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			e := newEnv(t, b, chain.Options{CheckpointEvents: 100000})
			e.appendEvents(3)
			// An event written by Ward (with its MAC) under seq 2503.
			ev := &model.Event{ID: "ev-far", Type: model.EventTokenIssued, Time: e.Now()}
			if ok, err := e.st.InsertEventAt(ctx, 2503, ev); err != nil || !ok {
				t.Fatal(ok, err)
			}
			e.seal() // waits GapWait first
			time.Sleep(60 * time.Millisecond)
			e.seal()
			head, err := e.st.AuditChainHead(ctx)
			if err != nil || head.Seq != 2503 {
				t.Fatalf("head %+v, %v; want 2503", head, err)
			}
			evs, _ := e.st.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventAuditSequenceSkipped}, Limit: 1000})
			if len(evs) != 1000 || evs[0].Seq != 1003 || evs[0].Data[chain.DataSkippedThrough] != "2502" {
				t.Fatalf("%d skipped records, newest %+v", len(evs), evs[0])
			}
			if err := e.sealer.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			if rep := e.mustVerify(chain.VerifyOptions{}); rep.Latest.Seq != 2503 {
				t.Errorf("latest %+v", rep.Latest)
			}
			// A record that appears inside the run is not in the chain.
			if ok, err := e.st.InsertEventAt(ctx, 1700, &model.Event{ID: "ev-late", Type: model.EventTokenIssued, Time: e.Now()}); err != nil || !ok {
				t.Fatal(ok, err)
			}
			rep := e.verify(chain.VerifyOptions{})
			if len(rep.Problems) != 1 {
				t.Fatalf("problems %v, want one", rep.Problems)
			}
			firstProblem(t, rep, 1700, chain.Inserted)
		})
	}
}

// A checkpoint stays verifiable after its key was rotated out and
// deleted: the public key is kept, sealed under the KEK.
func TestCheckpointAfterKeyRotation(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			e := newEnv(t, b, chain.Options{CheckpointEvents: 5})
			e.appendEvents(5)
			e.seal()
			old := e.keys.ActiveKID()
			if _, err := e.keys.Rotate(ctx, "test"); err != nil {
				t.Fatal(err)
			}
			if err := e.keys.Retire(ctx, "test", old); err != nil {
				t.Fatal(err)
			}
			if err := e.keys.PurgeRetired(ctx); err != nil {
				t.Fatal(err)
			}
			if ks, _ := e.st.ListSigningKeys(ctx); len(ks) != 1 || ks[0].KID == old {
				t.Fatalf("signing keys after retirement: %v", ks)
			}
			e.appendEvents(5)
			e.seal()
			rep := e.mustVerify(chain.VerifyOptions{})
			if rep.Checkpoints != 2 || rep.Latest.KID == old {
				t.Errorf("report %+v", rep)
			}
			cps := e.checkpoints()
			if cps[0].KID != old {
				t.Errorf("first checkpoint signed by %s, want %s", cps[0].KID, old)
			}
		})
	}
}

// The record MAC and the chain value depend on every input.
func TestRecordMACs(t *testing.T) {
	key := make([]byte, 32)
	mac := chain.RecordMAC(key)
	body := []byte("body")
	if a, b := mac(body), mac(body); !bytes.Equal(a, b) || len(a) != 32 {
		t.Fatal("RecordMAC is not a deterministic 32-byte MAC")
	}
	if bytes.Equal(mac(body), chain.RecordMAC(append([]byte{1}, key[1:]...))(body)) {
		t.Error("RecordMAC ignores the key")
	}
	// The chain value depends on every input.
	var leaf [32]byte
	base := chain.Link(chain.Genesis, chain.OriginWard, leaf)
	leaf[0] = 1
	for i, h := range [][]byte{chain.Link(chain.Genesis, chain.OriginLegacy, [32]byte{}), chain.Link(base, chain.OriginWard, [32]byte{}), chain.Link(chain.Genesis, chain.OriginWard, leaf)} {
		if bytes.Equal(h, base) {
			t.Errorf("link %d equals the base", i)
		}
	}
}

// moveEvent renumbers an event, as someone with database access can.
func moveEvent(t *testing.T, e *env, b backend, from, to int64) {
	t.Helper()
	over := ""
	if b.name == "postgres" {
		over = " OVERRIDING SYSTEM VALUE"
	}
	cols := strings.Join(store.EventColumns[1:], ", ")
	e.exec(t, `INSERT INTO events (seq, `+cols+`)`+over+` SELECT $1, `+cols+` FROM events WHERE seq = $2`, to, from)
	e.exec(t, `DELETE FROM events WHERE seq = $1`, from)
}

// Verify cuts a long log at checkpoints and verifies the pieces at once:
// problems at and across the cuts are found as in one piece.
func TestVerifyInParallelSegments(t *testing.T) {
	defer chain.SetSegmentSize(60)()
	cases := []struct {
		name   string
		tamper func(t *testing.T, e *env)
		seq    int64
		kind   string
		more   []int64 // the sequence numbers of the other problems
	}{
		{"nothing", func(*testing.T, *env) {}, 0, "", nil},
		// The cuts are at 60, 120, 180…
		{"delete the record at a cut", func(t *testing.T, e *env) { e.exec(t, `DELETE FROM events WHERE seq = 120`) }, 120, chain.Removed, nil},
		{"edit the first record of a segment", func(t *testing.T, e *env) {
			e.exec(t, `UPDATE events SET ip = '198.51.100.66' WHERE seq = 121`)
		}, 121, chain.Changed, nil},
		{"delete across a cut", func(t *testing.T, e *env) { e.exec(t, `DELETE FROM events WHERE seq BETWEEN 119 AND 121`) }, 119, chain.Removed, []int64{121}},
		{"edit and recompute in two places", func(t *testing.T, e *env) {
			e.exec(t, `UPDATE events SET actor = 'mallory' WHERE seq = 250`)
			e.exec(t, `UPDATE events SET actor = 'mallory' WHERE seq = 55`)
			rehash(t, e, 55)
		}, 41, chain.Rewritten, nil},
	}
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					e := newEnv(t, b, chain.Options{CheckpointEvents: 20, CheckpointInterval: time.Hour})
					for range 20 {
						e.appendEvents(20)
						e.seal()
					}
					tc.tamper(t, e)
					rep := e.verify(chain.VerifyOptions{})
					if tc.kind == "" {
						if !rep.OK() || rep.Records != 400 || rep.Checkpoints != 20 {
							t.Fatalf("report %+v", rep)
						}
						return
					}
					firstProblem(t, rep, tc.seq, tc.kind)
					for _, seq := range tc.more {
						found := false
						for _, p := range rep.Problems {
							found = found || p.Seq == seq
						}
						if !found {
							t.Errorf("no problem at seq %d: %v", seq, rep.Problems)
						}
					}
				})
			}
		})
	}
}

// countingStore counts the scans that verify a segment (bounded above;
// the sealer's own scans are not).
type countingStore struct {
	store.Store
	bounded int
}

func (c *countingStore) ScanEventRecords(ctx context.Context, sc store.EventScan, fn func(*store.EventRecord) error) error {
	if sc.Through > 0 {
		c.bounded++
	}
	return c.Store.ScanEventRecords(ctx, sc, fn)
}

// After finding tampering, the sealer does not verify the growing tail
// again every round: it tries again after the checkpoint interval.
func TestSealerBacksOffAfterTampering(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			e := build(t, b)
			e.exec(t, `DELETE FROM audit_chain WHERE seq = 63`)
			cs := &countingStore{Store: e.st}
			s, err := chain.New(ctx, chain.Options{Store: cs, KEK: e.kek, Signer: e.keys, Now: e.Now, CheckpointEvents: 20, CheckpointInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			e.advance(2 * time.Hour) // a checkpoint is due
			if _, err := s.Seal(ctx); err != nil {
				t.Fatal(err)
			}
			if cs.bounded != 1 {
				t.Fatalf("%d verifications, want 1", cs.bounded)
			}
			for range 3 {
				e.appendEvents(1)
				if _, err := s.Seal(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if cs.bounded != 1 {
				t.Errorf("%d verifications within the interval, want 1", cs.bounded)
			}
			if cps := e.checkpoints(); cps[len(cps)-1].Seq != 62 {
				t.Errorf("newest checkpoint %d, want 62 (before the record without a link)", cps[len(cps)-1].Seq)
			}
			e.advance(2 * time.Hour)
			if _, err := s.Seal(ctx); err != nil {
				t.Fatal(err)
			}
			if cs.bounded != 2 {
				t.Errorf("%d verifications after the interval, want 2", cs.bounded)
			}
		})
	}
}
