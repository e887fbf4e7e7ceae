package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// scanAll reads every record after `after` (through: 0 for all).
func scanAll(t *testing.T, s store.Store, after, through int64, body bool) []store.EventRecord {
	t.Helper()
	var out []store.EventRecord
	err := s.ScanEventRecords(ctx, store.EventScan{After: after, Through: through, Body: body}, func(r *store.EventRecord) error {
		c := *r
		c.Body, c.MAC, c.Hash = bytes.Clone(r.Body), bytes.Clone(r.MAC), bytes.Clone(r.Hash)
		out = append(out, c)
		return nil
	})
	must(t, "ScanEventRecords", err)
	return out
}

// testRecordMAC: with a record MAC set, every append (AppendEvent, the
// pending events of a change, InsertEventAt) stores mac(body) for the
// body the store encodes, and reading the row back gives that same body:
// what the sealer checks is what the writer MACed. The body holds each
// stored value, NULL where the store keeps NULL; the leaf read without
// the body is the leaf of the body and the MAC.
func testRecordMAC(t *testing.T, s store.Store) {
	noMAC := fullEvent(model.EventTokenIssued, "u0", "s0", "c0", at(0))
	noMAC.ID = "ev-no-mac"
	_, err := s.AppendEvent(ctx, noMAC)
	must(t, "AppendEvent without a MAC", err)

	var mu sync.Mutex
	bodies := map[string][]byte{} // sha256(body) -> body, as MACed at insert
	s.SetRecordMAC(func(body []byte) []byte {
		sum := sha256.Sum256(body)
		mu.Lock()
		bodies[string(sum[:])] = bytes.Clone(body)
		mu.Unlock()
		return sum[:]
	})
	e1 := fullEvent(model.EventTokenIssued, "u1", "s1", "c1", at(time.Second))
	e2 := &model.Event{ID: "ev-sparse", Type: model.EventSessionRevoked} // no user, no data, zero time
	for _, e := range []*model.Event{e1, e2} {
		_, err := s.AppendEvent(ctx, e)
		must(t, "AppendEvent", err)
	}
	u := fullUser("u1", "alice")
	must(t, "CreateUser", s.CreateUser(ctx, u))
	pending := pendingEvent("ev-pending", model.EventUserDisabled, "u1")
	_, err = s.UpdateUser(store.WithEvent(ctx, pending), "u1", func(u *model.User) error { u.Disabled = true; return nil })
	must(t, "UpdateUser with a pending event", err)

	recs := scanAll(t, s, 0, 0, true)
	leaves := scanAll(t, s, 0, 0, false)
	if len(recs) != 4 || len(leaves) != 4 {
		t.Fatalf("scanned %d records with bodies and %d without, want 4", len(recs), len(leaves))
	}
	for i, r := range recs {
		id, err := store.BodyValue(r.Body, 0)
		must(t, "BodyValue", err)
		if id == noMAC.ID {
			if r.MAC != nil {
				t.Errorf("%s: mac %x, want none (appended before SetRecordMAC)", id, r.MAC)
			}
		} else if got := bodies[string(r.MAC)]; !bytes.Equal(got, r.Body) {
			t.Errorf("%s: the body read back is not the body MACed at insert:\n read %q\n MACed %q", id, r.Body, got)
		}
		if r.Leaf != store.RecordLeaf(r.Seq, r.Body, blobOrNil(r.MAC)) {
			t.Errorf("%s: Leaf is not RecordLeaf of seq, body and mac", id)
		}
		if leaves[i].Seq != r.Seq || leaves[i].Leaf != r.Leaf {
			t.Errorf("%s: the leaf scanned without the body differs", id)
		}
	}
	// The body holds what is stored, column by column.
	sparse := recs[2]
	for i, want := range map[int]any{0: "ev-sparse", 1: string(model.EventSessionRevoked), 2: int64(0), 4: nil, 9: "", 16: ""} {
		got, err := store.BodyValue(sparse.Body, i)
		must(t, "BodyValue", err)
		if got != want {
			t.Errorf("sparse event, %s = %#v, want %#v", store.EventBodyColumns[i], got, want)
		}
	}
	full := recs[1]
	for i, want := range map[int]any{4: "u1", 9: "2001:db8::1", 2: at(time.Second).UnixMicro()} {
		got, err := store.BodyValue(full.Body, i)
		must(t, "BodyValue", err)
		if got != want {
			t.Errorf("full event, %s = %#v, want %#v", store.EventBodyColumns[i], got, want)
		}
	}

	// NULL and the empty text are different values.
	if a, b := store.RecordLeaf(1, []byte{2, 0, 0, 0, 0}, nil), store.RecordLeaf(1, []byte{0}, nil); a == b {
		t.Error("the empty text and NULL have the same leaf")
	}
	s.SetRecordMAC(nil)
	later := *e1
	later.ID = "ev-later"
	_, err = s.AppendEvent(ctx, &later)
	must(t, "AppendEvent after SetRecordMAC(nil)", err)
	last := scanAll(t, s, recs[3].Seq, 0, true)
	if len(last) != 1 || last[0].MAC != nil {
		t.Errorf("after SetRecordMAC(nil): %d records, mac %x; want one without a MAC", len(last), last[0].MAC)
	}
}

func blobOrNil(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

// testScanEventRecords: ascending order, bounds, more records than one
// page, and the chain link of the sealed ones.
func testScanEventRecords(t *testing.T, s store.Store) {
	if got := scanAll(t, s, 0, 0, false); len(got) != 0 {
		t.Fatalf("an empty store scans %d records", len(got))
	}
	const n = 4500 // more than one page
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				if _, err := s.AppendEvent(ctx, &model.Event{ID: fmt.Sprintf("ev-%d", i), Type: model.EventTokenIssued, Time: at(time.Duration(i))}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, "AppendEvent", err)
	}
	all := scanAll(t, s, 0, 0, false)
	if len(all) != n {
		t.Fatalf("scanned %d records, want %d", len(all), n)
	}
	for i := 1; i < n; i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("records out of order: %d after %d", all[i].Seq, all[i-1].Seq)
		}
	}
	for _, r := range all {
		if r.Origin != 0 || r.Hash != nil {
			t.Fatalf("unsealed record %d has a link %d %x", r.Seq, r.Origin, r.Hash)
		}
	}
	first, last := all[0].Seq, all[n-1].Seq
	if got := scanAll(t, s, first+9, first+19, false); len(got) != 10 || got[0].Seq != first+10 || got[9].Seq != first+19 {
		t.Errorf("scan (%d, %d]: %d records", first+9, first+19, len(got))
	}
	if got := scanAll(t, s, last, 0, false); len(got) != 0 {
		t.Errorf("scan after the last: %d records", len(got))
	}
	// Links.
	links := []store.ChainLink{{Seq: first, Origin: 1, Hash: []byte{1}}, {Seq: first + 1, Origin: 3, Hash: []byte{2}}}
	must(t, "SealEvents", s.SealEvents(ctx, links))
	got := scanAll(t, s, 0, first+2, false)
	if got[0].Origin != 1 || !bytes.Equal(got[0].Hash, []byte{1}) || got[1].Origin != 3 || !bytes.Equal(got[1].Hash, []byte{2}) ||
		got[2].Origin != 0 || got[2].Hash != nil {
		t.Errorf("links read back: %+v %+v %+v", got[0], got[1], got[2])
	}
	// fn's error stops the scan and is returned.
	stop := errors.New("stop")
	calls := 0
	err := s.ScanEventRecords(ctx, store.EventScan{}, func(*store.EventRecord) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("a failing fn: %d calls, %v", calls, err)
	}
}

// testSealEvents: links are stored together or not at all, a link taken
// already fails the batch with ErrAlreadyExists, and the head and start
// follow.
func testSealEvents(t *testing.T, s store.Store) {
	_, err := s.AuditChainHead(ctx)
	wantErr(t, "AuditChainHead of an empty chain", err, store.ErrNotFound)
	first, legacy, err := s.AuditChainStart(ctx)
	if err != nil || first != 0 || legacy != 0 {
		t.Errorf("AuditChainStart of a new store = %d, %d, %v; want 0, 0", first, legacy, err)
	}
	var batch []store.ChainLink
	for i := int64(1); i <= 300; i++ { // more than one INSERT
		batch = append(batch, store.ChainLink{Seq: i, Origin: 1, Hash: []byte{byte(i), byte(i >> 8)}})
	}
	must(t, "SealEvents", s.SealEvents(ctx, batch))
	head, err := s.AuditChainHead(ctx)
	must(t, "AuditChainHead", err)
	if head.Seq != 300 || head.Origin != 1 || !bytes.Equal(head.Hash, []byte{44, 1}) {
		t.Errorf("head = %+v", head)
	}
	err = s.SealEvents(ctx, []store.ChainLink{{Seq: 301, Origin: 1, Hash: []byte{1}}, {Seq: 300, Origin: 1, Hash: []byte{9}}})
	wantErr(t, "SealEvents over a sealed number", err, store.ErrAlreadyExists)
	if head, _ := s.AuditChainHead(ctx); head.Seq != 300 || !bytes.Equal(head.Hash, []byte{44, 1}) {
		t.Errorf("a failed batch stored some links: head %+v", head)
	}
	if first, _, _ := s.AuditChainStart(ctx); first != 1 {
		t.Errorf("chain start = %d, want 1", first)
	}
	must(t, "SealEvents of nothing", s.SealEvents(ctx, nil))

	// Concurrent sealers of the same numbers: one wins.
	var wg sync.WaitGroup
	var wins, lost int
	var mu sync.Mutex
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.SealEvents(ctx, []store.ChainLink{{Seq: 301, Origin: 1, Hash: []byte{byte(w)}}, {Seq: 302, Origin: 1, Hash: []byte{byte(w)}}})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, store.ErrAlreadyExists):
				lost++
			default:
				t.Errorf("concurrent SealEvents: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || lost != 5 {
		t.Errorf("concurrent sealers: %d won, %d lost; want 1 and 5", wins, lost)
	}
}

// testInsertEventAt: a number nothing holds takes the event (with its
// MAC); a number an event holds is left alone.
func testInsertEventAt(t *testing.T, s store.Store) {
	var seqs []int64
	for i := range 3 {
		seq, err := s.AppendEvent(ctx, &model.Event{ID: fmt.Sprintf("ev-%d", i), Type: model.EventTokenIssued, Time: at(0)})
		must(t, "AppendEvent", err)
		seqs = append(seqs, seq)
	}
	s.SetRecordMAC(func(body []byte) []byte { sum := sha256.Sum256(body); return sum[:] })
	skipped := &model.Event{ID: "ev-skip", Type: model.EventAuditSequenceSkipped, Time: at(time.Minute), Actor: "system"}
	ok, err := s.InsertEventAt(ctx, seqs[1], skipped)
	if err != nil || ok {
		t.Fatalf("InsertEventAt an event's number = %v, %v; want false", ok, err)
	}
	if e := storedEvents(t, s)["ev-1"]; e == nil || e.Seq != seqs[1] {
		t.Fatal("InsertEventAt replaced an event")
	}
	// Retention frees the first number (it was handed out before).
	_, err = s.DeleteAuditSegment(ctx, seqs[0])
	must(t, "DeleteAuditSegment", err)
	ok, err = s.InsertEventAt(ctx, seqs[0], skipped)
	if err != nil || !ok {
		t.Fatalf("InsertEventAt a free number = %v, %v; want true", ok, err)
	}
	got := storedEvents(t, s)["ev-skip"]
	if got == nil || got.Seq != seqs[0] || got.Type != model.EventAuditSequenceSkipped {
		t.Fatalf("stored %+v", got)
	}
	recs := scanAll(t, s, 0, seqs[0], true)
	if sum := sha256.Sum256(recs[0].Body); len(recs) != 1 || !bytes.Equal(recs[0].MAC, sum[:]) {
		t.Error("InsertEventAt stored no record MAC")
	}
	// Later appends continue after the highest number.
	seq, err := s.AppendEvent(ctx, &model.Event{ID: "ev-next", Type: model.EventTokenIssued})
	must(t, "AppendEvent", err)
	if seq <= seqs[2] {
		t.Errorf("AppendEvent after InsertEventAt = %d, want > %d", seq, seqs[2])
	}
}

// testAuditCheckpoints: one per sequence number, listed ascending within
// bounds, the latest found.
func testAuditCheckpoints(t *testing.T, s store.Store) {
	_, err := s.LatestAuditCheckpoint(ctx)
	wantErr(t, "LatestAuditCheckpoint of none", err, store.ErrNotFound)
	cp := func(seq int64) *store.AuditCheckpoint {
		return &store.AuditCheckpoint{Seq: seq, Hash: []byte{byte(seq)}, CreatedAt: at(time.Duration(seq) * time.Minute), KID: "kid-1", JWS: fmt.Sprintf("jws.%d.sig", seq)}
	}
	for _, seq := range []int64{30, 10, 20} {
		must(t, "CreateAuditCheckpoint", s.CreateAuditCheckpoint(ctx, cp(seq)))
	}
	wantErr(t, "CreateAuditCheckpoint twice", s.CreateAuditCheckpoint(ctx, cp(20)), store.ErrAlreadyExists)
	latest, err := s.LatestAuditCheckpoint(ctx)
	must(t, "LatestAuditCheckpoint", err)
	same(t, "latest checkpoint", latest, cp(30), normCheckpoint)
	list, err := s.AuditCheckpoints(ctx, 0, 0, 0)
	must(t, "AuditCheckpoints", err)
	sameList(t, "all checkpoints", list, []*store.AuditCheckpoint{cp(10), cp(20), cp(30)}, normCheckpoint)
	list, err = s.AuditCheckpoints(ctx, 10, 30, 1)
	must(t, "AuditCheckpoints", err)
	sameList(t, "checkpoints (10, 30] limit 1", list, []*store.AuditCheckpoint{cp(20)}, normCheckpoint)
	list, err = s.AuditCheckpoints(ctx, 10, 25, 0)
	must(t, "AuditCheckpoints", err)
	sameList(t, "checkpoints (10, 25]", list, []*store.AuditCheckpoint{cp(20)}, normCheckpoint)
}

func normCheckpoint(c store.AuditCheckpoint) store.AuditCheckpoint {
	c.CreatedAt = c.CreatedAt.UTC().Truncate(time.Microsecond)
	return c
}

// testAuditKeysAndSecrets: a kid is recorded once (the first key stays),
// a secret is created once even by concurrent callers.
func testAuditKeysAndSecrets(t *testing.T, s store.Store) {
	must(t, "PutAuditKey", s.PutAuditKey(ctx, &store.AuditKey{KID: "k2", PublicEnc: []byte{2}, CreatedAt: at(time.Hour)}))
	must(t, "PutAuditKey", s.PutAuditKey(ctx, &store.AuditKey{KID: "k1", PublicEnc: []byte{1}, CreatedAt: at(0)}))
	must(t, "PutAuditKey again", s.PutAuditKey(ctx, &store.AuditKey{KID: "k1", PublicEnc: []byte{9}, CreatedAt: at(2 * time.Hour)}))
	keys, err := s.ListAuditKeys(ctx)
	must(t, "ListAuditKeys", err)
	if len(keys) != 2 || keys[0].KID != "k1" || !bytes.Equal(keys[0].PublicEnc, []byte{1}) || !keys[0].CreatedAt.Equal(at(0).Truncate(time.Microsecond)) ||
		keys[1].KID != "k2" {
		t.Errorf("ListAuditKeys = %+v %+v", keys[0], keys[1])
	}

	var wg sync.WaitGroup
	got := make([][]byte, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := s.AuditSecret(ctx, "record-mac", func() ([]byte, error) { return []byte{byte(i + 1)}, nil })
			if err != nil {
				t.Errorf("AuditSecret: %v", err)
			}
			got[i] = v
		}()
	}
	wg.Wait()
	for _, v := range got {
		if len(v) != 1 || !bytes.Equal(v, got[0]) {
			t.Fatalf("concurrent AuditSecret callers got %v", got)
		}
	}
	boom := errors.New("boom")
	if _, err := s.AuditSecret(ctx, "other", func() ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("AuditSecret with a failing create: %v", err)
	}
	v, err := s.AuditSecret(ctx, "record-mac", func() ([]byte, error) { return nil, boom })
	if err != nil || !bytes.Equal(v, got[0]) {
		t.Errorf("AuditSecret of a stored secret = %v, %v", v, err)
	}
}

// testDeleteAuditSegment: audit retention deletes the oldest events and
// their links up to a checkpoint, keeps that checkpoint as the anchor and
// deletes the ones before it; nothing newer goes.
func testDeleteAuditSegment(t *testing.T, s store.Store) {
	var seqs []int64
	for i := range 6 {
		seq, err := s.AppendEvent(ctx, &model.Event{ID: fmt.Sprintf("ev-%d", i), Type: model.EventSignInFailed, Time: at(time.Duration(i) * time.Hour)})
		must(t, "AppendEvent", err)
		seqs = append(seqs, seq)
	}
	var links []store.ChainLink
	for _, seq := range seqs[:5] {
		links = append(links, store.ChainLink{Seq: seq, Origin: 1, Hash: []byte{byte(seq)}})
	}
	must(t, "SealEvents", s.SealEvents(ctx, links))
	for _, i := range []int{1, 3} {
		must(t, "CreateAuditCheckpoint", s.CreateAuditCheckpoint(ctx, &store.AuditCheckpoint{Seq: seqs[i], Hash: []byte{1}, CreatedAt: at(0), KID: "k", JWS: "j"}))
	}
	n, err := s.DeleteAuditSegment(ctx, seqs[1])
	if err != nil || n != 2 {
		t.Fatalf("DeleteAuditSegment through the first checkpoint = %d, %v; want 2", n, err)
	}
	n, err = s.DeleteAuditSegment(ctx, seqs[1])
	if err != nil || n != 0 {
		t.Fatalf("DeleteAuditSegment again = %d, %v; want 0", n, err)
	}
	cps, err := s.AuditCheckpoints(ctx, 0, 0, 0)
	must(t, "AuditCheckpoints", err)
	if len(cps) != 2 {
		t.Fatalf("%d checkpoints left, want both (the first is the anchor)", len(cps))
	}
	n, err = s.DeleteAuditSegment(ctx, seqs[3])
	if err != nil || n != 2 {
		t.Fatalf("DeleteAuditSegment through the second = %d, %v; want 2", n, err)
	}
	cps, err = s.AuditCheckpoints(ctx, 0, 0, 0)
	must(t, "AuditCheckpoints", err)
	if len(cps) != 1 || cps[0].Seq != seqs[3] {
		t.Errorf("checkpoints left %v, want only the anchor at %d", cps, seqs[3])
	}
	left, err := s.ListEvents(ctx, store.EventFilter{Limit: 100})
	must(t, "ListEvents", err)
	if len(left) != 2 || left[0].ID != "ev-5" || left[1].ID != "ev-4" {
		t.Errorf("left %d events: %v", len(left), left)
	}
	recs := scanAll(t, s, 0, 0, false)
	if len(recs) != 2 || recs[0].Seq != seqs[4] || recs[0].Hash == nil || recs[1].Hash != nil {
		t.Errorf("records left: %+v", recs)
	}
	if first, _, _ := s.AuditChainStart(ctx); first != seqs[4] {
		t.Errorf("chain start after retention = %d, want %d", first, seqs[4])
	}
}

// testEventSeqAt: the first event stamped at or after a time and the last
// one before it; counting the events after a number.
func testEventSeqAt(t *testing.T, s store.Store) {
	_, err := s.EventSeqAt(ctx, at(0), true)
	wantErr(t, "EventSeqAt on an empty store", err, store.ErrNotFound)
	var seqs []int64
	for i := range 4 {
		seq, err := s.AppendEvent(ctx, &model.Event{Type: model.EventSignInFailed, Time: at(time.Duration(i) * time.Hour)})
		must(t, "AppendEvent", err)
		seqs = append(seqs, seq)
	}
	for _, tc := range []struct {
		t     time.Time
		first bool
		want  int64
	}{
		{at(90 * time.Minute), true, seqs[2]},
		{at(2 * time.Hour), true, seqs[2]},
		{at(2 * time.Hour), false, seqs[1]},
		{at(-time.Hour), true, seqs[0]},
		{at(time.Hour), false, seqs[0]},
	} {
		got, err := s.EventSeqAt(ctx, tc.t, tc.first)
		if err != nil || got != tc.want {
			t.Errorf("EventSeqAt(%s, %v) = %d, %v; want %d", tc.t, tc.first, got, err, tc.want)
		}
	}
	_, err = s.EventSeqAt(ctx, at(0), false)
	wantErr(t, "EventSeqAt before the first", err, store.ErrNotFound)
	if n, err := s.CountEventsAfter(ctx, seqs[1]); err != nil || n != 2 {
		t.Errorf("CountEventsAfter = %d, %v; want 2", n, err)
	}
}
