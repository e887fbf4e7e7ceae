package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// ---- Shared Signals transmitter: streams and the SET outbox ----

func normSSFStream(s model.SSFStream) model.SSFStream {
	s.Audience, s.EventsRequested, s.EventsDelivered, s.Excluded = nl(s.Audience), nl(s.EventsRequested), nl(s.EventsDelivered), nl(s.Excluded)
	s.AuthHeaderEnc = nl(s.AuthHeaderEnc)
	s.CreatedAt, s.UpdatedAt = nt(s.CreatedAt), nt(s.UpdatedAt)
	return s
}

func ssfStream(id, client, method string) *model.SSFStream {
	return &model.SSFStream{
		ID: id, ClientID: client, Audience: []string{client, "https://rs.example/" + id}, Method: method,
		EndpointURL: "https://rs.example/events/" + id, AuthHeaderEnc: []byte{0, 1, 2, 0xff},
		EventsRequested: []string{"urn:a", "urn:b"}, EventsDelivered: []string{"urn:a"}, Description: "stream " + id,
		Status: model.StreamEnabled, StatusReason: "", Excluded: []string{`{"format":"opaque","id":"x"}`},
		CreatedAt: at(0), UpdatedAt: at(time.Second),
	}
}

func setEntry(stream, key string) *store.SETEntry {
	return &store.SETEntry{StreamID: stream, JTI: "jti-" + stream + "-" + key, DedupKey: key, SubjectKey: "user:" + key,
		EventType: "urn:a", SET: "h.p." + key, CreatedAt: at(time.Minute)}
}

func testSSFStreams(t *testing.T, s store.Store) {
	v0, err := s.SSFStreamsVersion(ctx)
	must(t, "SSFStreamsVersion", err)
	a := ssfStream("s1", "c1", model.DeliveryPush)
	b := ssfStream("s2", "c2", model.DeliveryPoll)
	b.AuthHeaderEnc, b.EndpointURL, b.Excluded = nil, "", nil
	c := ssfStream("s3", "c1", model.DeliveryPoll)
	c.CreatedAt = at(time.Hour)
	for _, st := range []*model.SSFStream{a, b, c} {
		must(t, "CreateSSFStream", s.CreateSSFStream(ctx, st))
	}
	wantErr(t, "CreateSSFStream duplicate", s.CreateSSFStream(ctx, ssfStream("s1", "c9", model.DeliveryPoll)), store.ErrAlreadyExists)
	v1, err := s.SSFStreamsVersion(ctx)
	must(t, "SSFStreamsVersion", err)
	if v1 <= v0 {
		t.Errorf("version did not grow on create: %d -> %d", v0, v1)
	}
	got, err := s.GetSSFStream(ctx, "s1")
	must(t, "GetSSFStream", err)
	same(t, "GetSSFStream", got, a, normSSFStream)
	got, err = s.GetSSFStream(ctx, "s2")
	must(t, "GetSSFStream", err)
	same(t, "GetSSFStream s2", got, b, normSSFStream)
	_, err = s.GetSSFStream(ctx, "nope")
	wantErr(t, "GetSSFStream missing", err, store.ErrNotFound)

	list, err := s.ListSSFStreams(ctx, "c1")
	must(t, "ListSSFStreams", err)
	sameList(t, "ListSSFStreams c1", list, []*model.SSFStream{a, c}, normSSFStream)
	list, err = s.ListSSFStreams(ctx, "")
	must(t, "ListSSFStreams all", err)
	if len(list) != 3 {
		t.Errorf("ListSSFStreams all: %d streams, want 3", len(list))
	}
	list, err = s.ListSSFStreams(ctx, "nobody")
	must(t, "ListSSFStreams nobody", err)
	if len(list) != 0 {
		t.Errorf("ListSSFStreams nobody: %d streams", len(list))
	}

	up, err := s.UpdateSSFStream(ctx, "s1", func(st *model.SSFStream) error {
		st.ClientID, st.ID = "thief", "other" // ignored
		st.Status, st.StatusReason, st.Description = model.StreamPaused, "maintenance", "new"
		st.AuthHeaderEnc, st.Excluded = nil, nil
		st.UpdatedAt = at(time.Hour)
		return nil
	})
	must(t, "UpdateSSFStream", err)
	want := *a
	want.Status, want.StatusReason, want.Description, want.AuthHeaderEnc, want.Excluded, want.UpdatedAt =
		model.StreamPaused, "maintenance", "new", nil, nil, at(time.Hour)
	same(t, "UpdateSSFStream result", up, &want, normSSFStream)
	got, _ = s.GetSSFStream(ctx, "s1")
	same(t, "UpdateSSFStream stored", got, &want, normSSFStream)
	v2, _ := s.SSFStreamsVersion(ctx)
	if v2 <= v1 {
		t.Errorf("version did not grow on update: %d -> %d", v1, v2)
	}
	_, err = s.UpdateSSFStream(ctx, "s1", func(*model.SSFStream) error { return errBoom })
	wantErr(t, "UpdateSSFStream fn error", err, errBoom)
	_, err = s.UpdateSSFStream(ctx, "nope", func(*model.SSFStream) error { return nil })
	wantErr(t, "UpdateSSFStream missing", err, store.ErrNotFound)

	must(t, "DeleteSSFStream", s.DeleteSSFStream(ctx, "s1"))
	wantErr(t, "DeleteSSFStream again", s.DeleteSSFStream(ctx, "s1"), store.ErrNotFound)
	_, err = s.GetSSFStream(ctx, "s1")
	wantErr(t, "GetSSFStream deleted", err, store.ErrNotFound)
	v3, _ := s.SSFStreamsVersion(ctx)
	if v3 <= v2 {
		t.Errorf("version did not grow on delete: %d -> %d", v2, v3)
	}
}

var errBoom = fmt.Errorf("boom")

func seqs(es []*store.SETEntry) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func keys(es []*store.SETEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.DedupKey
	}
	return out
}

func testSSFQueue(t *testing.T, s store.Store) {
	for _, id := range []string{"a", "b", "off", "gone"} {
		must(t, "CreateSSFStream", s.CreateSSFStream(ctx, ssfStream(id, "c1", model.DeliveryPush)))
	}
	_, err := s.UpdateSSFStream(ctx, "off", func(st *model.SSFStream) error { st.Status = model.StreamDisabled; return nil })
	must(t, "disable", err)
	must(t, "delete", s.DeleteSSFStream(ctx, "gone"))

	batch := []*store.SETEntry{setEntry("a", "1"), setEntry("b", "1"), setEntry("a", "2"), setEntry("off", "1"), setEntry("gone", "1")}
	n, err := s.EnqueueSETs(ctx, batch)
	must(t, "EnqueueSETs", err)
	if n != 3 {
		t.Errorf("EnqueueSETs stored %d, want 3 (disabled and deleted streams skipped)", n)
	}
	if batch[0].Seq == 0 || batch[3].Seq != 0 || batch[4].Seq != 0 {
		t.Errorf("seq of stored / skipped entries = %v, want set / 0 / 0", seqs([]*store.SETEntry{batch[0], batch[3], batch[4]}))
	}
	batch2 := []*store.SETEntry{setEntry("a", "3"), setEntry("a", "1") /* duplicate key */, setEntry("b", "2")}
	n, err = s.EnqueueSETs(ctx, batch2)
	must(t, "EnqueueSETs 2", err)
	if n != 2 {
		t.Errorf("EnqueueSETs with a duplicate dedup key stored %d, want 2", n)
	}
	if batch2[0].Seq == 0 || batch2[1].Seq != 0 || batch2[2].Seq == 0 {
		t.Errorf("seq of stored / duplicate / stored entries = %v", seqs(batch2))
	}
	n, err = s.EnqueueSETs(ctx, nil)
	if err != nil || n != 0 {
		t.Errorf("EnqueueSETs(nil) = %d, %v", n, err)
	}

	qa, err := s.QueuedSETs(ctx, "a", 0, 10)
	must(t, "QueuedSETs", err)
	if got := keys(qa); !reflect.DeepEqual(got, []string{"1", "2", "3"}) {
		t.Errorf("queue a holds %v, want [1 2 3] in order", got)
	}
	for i := 1; i < len(qa); i++ {
		if qa[i].Seq <= qa[i-1].Seq {
			t.Errorf("queue a sequence not increasing: %v", seqs(qa))
		}
	}
	if len(qa) > 0 {
		e := qa[0]
		want := setEntry("a", "1")
		want.Seq = e.Seq
		if e.JTI != want.JTI || e.SET != want.SET || e.SubjectKey != want.SubjectKey || e.EventType != want.EventType ||
			!e.CreatedAt.Equal(nt(want.CreatedAt)) || e.State != store.SETQueued || e.Attempts != 0 || e.StreamID != "a" {
			t.Errorf("entry round trip:\n got  %+v\n want %+v", e, want)
		}
		after, err := s.QueuedSETs(ctx, "a", qa[0].Seq, 10)
		must(t, "QueuedSETs after", err)
		if got := keys(after); !reflect.DeepEqual(got, []string{"2", "3"}) {
			t.Errorf("QueuedSETs after first: %v", got)
		}
		lim, _ := s.QueuedSETs(ctx, "a", 0, 1)
		if len(lim) != 1 {
			t.Errorf("QueuedSETs limit 1: %d entries", len(lim))
		}
	}
	ids, err := s.SSFStreamsWithQueuedSETs(ctx)
	must(t, "SSFStreamsWithQueuedSETs", err)
	slices.Sort(ids)
	if !reflect.DeepEqual(ids, []string{"a", "b"}) {
		t.Errorf("SSFStreamsWithQueuedSETs = %v, want [a b]", ids)
	}
	if len(qa) != 3 {
		t.FailNow()
	}

	must(t, "RecordSETFailure", s.RecordSETFailure(ctx, store.SETKey{StreamID: "a", Seq: qa[0].Seq}, "status 503"))
	must(t, "RefuseSET", s.RefuseSET(ctx, store.SETKey{StreamID: "a", Seq: qa[1].Seq}, "invalid_request: bad"))
	must(t, "DeleteSETs", s.DeleteSETs(ctx, []store.SETKey{{StreamID: "a", Seq: qa[0].Seq}, {StreamID: "b", Seq: 999}}))
	must(t, "DeleteSETs one", s.DeleteSETs(ctx, []store.SETKey{{StreamID: "zzz", Seq: 1}}))
	rest, _ := s.QueuedSETs(ctx, "a", 0, 10)
	if got := keys(rest); !reflect.DeepEqual(got, []string{"3"}) {
		t.Errorf("after delete and refuse, queue a holds %v, want [3]", got)
	}
	cnt, err := s.CountSETs(ctx, "a")
	must(t, "CountSETs", err)
	if cnt != (store.SETCounts{Queued: 1, Refused: 1}) {
		t.Errorf("CountSETs a = %+v, want 1 queued, 1 refused", cnt)
	}

	// New entries continue the sequence after deletions.
	_, err = s.EnqueueSETs(ctx, []*store.SETEntry{setEntry("a", "4")})
	must(t, "EnqueueSETs 3", err)
	rest, _ = s.QueuedSETs(ctx, "a", 0, 10)
	if len(rest) != 2 || rest[1].Seq <= qa[2].Seq {
		t.Errorf("sequence reused after delete: %v (last was %d)", seqs(rest), qa[2].Seq)
	}

	// Disabling drops the queue; pausing keeps it.
	_, err = s.UpdateSSFStream(ctx, "b", func(st *model.SSFStream) error { st.Status = model.StreamPaused; return nil })
	must(t, "pause", err)
	if cnt, _ := s.CountSETs(ctx, "b"); cnt.Queued != 2 {
		t.Errorf("paused stream queue: %+v, want 2 queued", cnt)
	}
	_, err = s.UpdateSSFStream(ctx, "b", func(st *model.SSFStream) error { st.Status = model.StreamDisabled; return nil })
	must(t, "disable b", err)
	if cnt, _ := s.CountSETs(ctx, "b"); cnt.Queued != 0 {
		t.Errorf("disabled stream queue: %+v, want empty", cnt)
	}

	// Purge refused entries by age.
	n64, err := s.PurgeRefusedSETs(ctx, at(time.Minute))
	must(t, "PurgeRefusedSETs early", err)
	if n64 != 0 {
		t.Errorf("PurgeRefusedSETs before creation deleted %d", n64)
	}
	n64, err = s.PurgeRefusedSETs(ctx, at(time.Hour))
	must(t, "PurgeRefusedSETs", err)
	if n64 != 1 {
		t.Errorf("PurgeRefusedSETs deleted %d, want 1", n64)
	}
	// Deleting a stream deletes its queue.
	must(t, "DeleteSSFStream", s.DeleteSSFStream(ctx, "a"))
	if cnt, _ := s.CountSETs(ctx, "a"); cnt != (store.SETCounts{}) {
		t.Errorf("deleted stream still has entries: %+v", cnt)
	}
}

// testSSFQueueConcurrent: concurrent enqueuers get gap-free, unique
// sequence numbers and each enqueuer's entries keep their order.
func testSSFQueueConcurrent(t *testing.T, s store.Store) {
	streams := []string{"x", "y", "z"}
	for _, id := range streams {
		must(t, "CreateSSFStream", s.CreateSSFStream(ctx, ssfStream(id, "c1", model.DeliveryPoll)))
	}
	const workers, rounds = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				var batch []*store.SETEntry
				for _, id := range streams {
					for k := range 2 {
						batch = append(batch, setEntry(id, fmt.Sprintf("w%d-r%02d-%d", w, r, k)))
					}
				}
				if _, err := s.EnqueueSETs(ctx, batch); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("EnqueueSETs: %v", err)
	}
	for _, id := range streams {
		q, err := s.QueuedSETs(ctx, id, 0, 1000)
		must(t, "QueuedSETs", err)
		if len(q) != workers*rounds*2 {
			t.Fatalf("stream %s: %d entries, want %d", id, len(q), workers*rounds*2)
		}
		last := map[int]string{}
		for i, e := range q {
			if e.Seq != int64(i+1) {
				t.Fatalf("stream %s: entry %d has seq %d (gap or duplicate)", id, i, e.Seq)
			}
			var w int
			fmt.Sscanf(e.DedupKey, "w%d-", &w)
			if e.DedupKey < last[w] {
				t.Fatalf("stream %s: worker %d's entries out of order: %s after %s", id, w, e.DedupKey, last[w])
			}
			last[w] = e.DedupKey
		}
	}
}

func testSSFPoll(t *testing.T, s store.Store) {
	must(t, "CreateSSFStream", s.CreateSSFStream(ctx, ssfStream("p", "c1", model.DeliveryPoll)))
	must(t, "CreateSSFStream", s.CreateSSFStream(ctx, ssfStream("other", "c1", model.DeliveryPoll)))
	var batch []*store.SETEntry
	for i := range 5 {
		batch = append(batch, setEntry("p", fmt.Sprint(i)))
	}
	batch = append(batch, setEntry("other", "0"))
	_, err := s.EnqueueSETs(ctx, batch)
	must(t, "EnqueueSETs", err)
	now := at(time.Hour)
	hold := now.Add(time.Minute)

	got, more, err := s.PollSETs(ctx, "p", store.SETPoll{Max: 2, Now: now, Hold: hold})
	must(t, "PollSETs", err)
	if !reflect.DeepEqual(keys(got), []string{"0", "1"}) || !more {
		t.Fatalf("first poll: %v more=%v, want [0 1] more=true", keys(got), more)
	}
	// Held entries are not returned again before Hold.
	got, more, err = s.PollSETs(ctx, "p", store.SETPoll{Max: 10, Now: now.Add(time.Second), Hold: hold})
	must(t, "PollSETs 2", err)
	if !reflect.DeepEqual(keys(got), []string{"2", "3", "4"}) || more {
		t.Fatalf("second poll: %v more=%v, want [2 3 4] more=false", keys(got), more)
	}
	// Acknowledge 0 and 2, refuse 1, acknowledge another stream's jti
	// (ignored): only 3 and 4 remain; before Hold nothing is returned.
	got, more, err = s.PollSETs(ctx, "p", store.SETPoll{
		Ack:  []string{"jti-p-0", "jti-p-2", "jti-other-0", ""},
		Errs: map[string]string{"jti-p-1": "invalid_request: nope"},
		Max:  10, Now: now.Add(2 * time.Second), Hold: hold,
	})
	must(t, "PollSETs acks", err)
	if len(got) != 0 || more {
		t.Fatalf("poll with acks before hold: %v more=%v, want nothing", keys(got), more)
	}
	if cnt, _ := s.CountSETs(ctx, "p"); cnt != (store.SETCounts{Queued: 2, Refused: 1}) {
		t.Errorf("after acks: %+v, want 2 queued, 1 refused", cnt)
	}
	if cnt, _ := s.CountSETs(ctx, "other"); cnt.Queued != 1 {
		t.Errorf("another stream's entry was acknowledged: %+v", cnt)
	}
	// After Hold the unacknowledged ones come back, in order.
	got, _, err = s.PollSETs(ctx, "p", store.SETPoll{Max: 10, Now: hold.Add(time.Second), Hold: hold.Add(time.Hour)})
	must(t, "PollSETs redelivery", err)
	if !reflect.DeepEqual(keys(got), []string{"3", "4"}) {
		t.Fatalf("redelivery: %v, want [3 4]", keys(got))
	}
	if got[0].Attempts != 2 {
		t.Errorf("redelivered entry attempts = %d, want 2", got[0].Attempts)
	}
	// Max 0 only acknowledges.
	got, _, err = s.PollSETs(ctx, "p", store.SETPoll{Ack: []string{"jti-p-3", "jti-p-4"}, Now: hold.Add(2 * time.Hour)})
	must(t, "PollSETs ack only", err)
	if len(got) != 0 {
		t.Errorf("Max 0 returned %d entries", len(got))
	}
	if cnt, _ := s.CountSETs(ctx, "p"); cnt.Queued != 0 {
		t.Errorf("after final acks: %+v", cnt)
	}

	// A batch: several polls in one transaction, each with its own result.
	_, err = s.EnqueueSETs(ctx, []*store.SETEntry{setEntry("p", "b1"), setEntry("p", "b2"), setEntry("other", "b1")})
	must(t, "EnqueueSETs batch", err)
	later := hold.Add(3 * time.Hour)
	res, err := s.PollSETsBatch(ctx, []store.SETPollRequest{
		{StreamID: "p", Poll: store.SETPoll{Max: 1, Now: later, Hold: later.Add(time.Minute)}},
		{StreamID: "other", Poll: store.SETPoll{Ack: []string{"jti-other-0"}, Max: 10, Now: later, Hold: later.Add(time.Minute)}},
		{StreamID: "p", Poll: store.SETPoll{Max: 10, Now: later, Hold: later.Add(time.Minute)}},
	})
	must(t, "PollSETsBatch", err)
	if len(res) != 3 || !reflect.DeepEqual(keys(res[0].Sets), []string{"b1"}) || !res[0].More ||
		!reflect.DeepEqual(keys(res[1].Sets), []string{"b1"}) || !reflect.DeepEqual(keys(res[2].Sets), []string{"b2"}) {
		t.Fatalf("batch results: %+v", res)
	}
	if !res[2].Sets[0].HeldUntil.Equal(later.Add(time.Minute)) {
		t.Errorf("HeldUntil = %v", res[2].Sets[0].HeldUntil)
	}
	if cnt, _ := s.CountSETs(ctx, "other"); cnt.Queued != 1 {
		t.Errorf("the batch's acknowledgement was not applied: %+v", cnt)
	}
	if res, err := s.PollSETsBatch(ctx, nil); err != nil || len(res) != 0 {
		t.Errorf("empty batch: %v %v", res, err)
	}
}

// testSSFPollSubjectOrder: a SET handed out and not acknowledged (its
// answer lost) keeps the later SETs of its subject back, not those of
// other subjects, until it is acknowledged or handed out again.
func testSSFPollSubjectOrder(t *testing.T, s store.Store) {
	must(t, "CreateSSFStream", s.CreateSSFStream(ctx, ssfStream("o", "c1", model.DeliveryPoll)))
	e := func(key, subject string) *store.SETEntry {
		x := setEntry("o", key)
		x.SubjectKey = subject
		return x
	}
	_, err := s.EnqueueSETs(ctx, []*store.SETEntry{e("a1", "user:a"), e("b1", "user:b"), e("a2", "user:a"), e("c1", "user:c"), e("a3", "user:a")})
	must(t, "EnqueueSETs", err)
	now := at(time.Hour)
	hold := now.Add(time.Minute)
	poll := func(p store.SETPoll) []string {
		t.Helper()
		got, _, err := s.PollSETs(ctx, "o", p)
		must(t, "PollSETs", err)
		return keys(got)
	}
	if got := poll(store.SETPoll{Max: 1, Now: now, Hold: hold}); !reflect.DeepEqual(got, []string{"a1"}) {
		t.Fatalf("first poll: %v", got)
	}
	// a1's answer was lost: b1 and c1 go out, a2 and a3 wait.
	if got := poll(store.SETPoll{Max: 10, Now: now.Add(time.Second), Hold: hold}); !reflect.DeepEqual(got, []string{"b1", "c1"}) {
		t.Fatalf("poll with a1 held: %v, want [b1 c1]", got)
	}
	// The held-back ones were not held themselves: after a1 is
	// acknowledged they go out at once, in order.
	if got := poll(store.SETPoll{Ack: []string{"jti-o-a1"}, Max: 10, Now: now.Add(2 * time.Second), Hold: hold}); !reflect.DeepEqual(got, []string{"a2", "a3"}) {
		t.Fatalf("after acknowledging a1: %v, want [a2 a3]", got)
	}
	// Unacknowledged, a2 comes back after its hold, before a3 (held too,
	// so both come back, in order).
	if got := poll(store.SETPoll{Ack: []string{"jti-o-b1", "jti-o-c1"}, Max: 10, Now: hold.Add(time.Second), Hold: hold.Add(time.Hour)}); !reflect.DeepEqual(got, []string{"a2", "a3"}) {
		t.Fatalf("after the hold: %v, want [a2 a3]", got)
	}
	if got, _, _ := s.PollSETs(ctx, "o", store.SETPoll{Max: 10, Now: hold.Add(2 * time.Second), Hold: hold.Add(time.Hour)}); len(got) != 0 {
		t.Fatalf("held entries handed out again: %v", keys(got))
	}
	if c, _ := s.CountSETs(ctx, "o"); c.Queued != 2 {
		t.Errorf("queued %+v, want a2 and a3", c)
	}
	if got, _ := s.QueuedSETs(ctx, "o", 0, 10); len(got) != 2 || got[0].Attempts != 2 {
		t.Errorf("a2 attempts: %+v", got)
	}
}

// testSSFPollManyHeld: with more SETs held back at the head of the queue
// than a poll reads ahead, the visible ones behind them still go out, and
// the subject order still holds.
func testSSFPollManyHeld(t *testing.T, s store.Store) {
	must(t, "CreateSSFStream", s.CreateSSFStream(ctx, ssfStream("m", "c1", model.DeliveryPoll)))
	e := func(key, subject string) *store.SETEntry {
		x := setEntry("m", key)
		x.SubjectKey = subject
		return x
	}
	batch := []*store.SETEntry{e("a0", "user:a")}
	for i := range 40 {
		batch = append(batch, e(fmt.Sprintf("h%02d", i), fmt.Sprintf("user:h%02d", i)))
	}
	batch = append(batch, e("b1", "user:b"), e("a1", "user:a"), e("b2", "user:b"))
	_, err := s.EnqueueSETs(ctx, batch)
	must(t, "EnqueueSETs", err)
	now := at(time.Hour)
	hold := now.Add(time.Minute)
	got, _, err := s.PollSETs(ctx, "m", store.SETPoll{Max: 41, Now: now, Hold: hold})
	must(t, "PollSETs", err)
	if len(got) != 41 || got[0].JTI != "jti-m-a0" || got[40].JTI != "jti-m-h39" {
		t.Fatalf("first poll: %v", keys(got))
	}
	// 41 held SETs in front: b1 and b2 go out, a1 waits for a0.
	got, more, err := s.PollSETs(ctx, "m", store.SETPoll{Max: 10, Now: now.Add(time.Second), Hold: hold})
	must(t, "PollSETs 2", err)
	if !reflect.DeepEqual(keys(got), []string{"b1", "b2"}) || more {
		t.Fatalf("poll behind 41 held: %v more=%v, want [b1 b2] more=false", keys(got), more)
	}
	got, more, err = s.PollSETs(ctx, "m", store.SETPoll{Ack: []string{"jti-m-a0"}, Max: 1, Now: now.Add(2 * time.Second), Hold: hold})
	must(t, "PollSETs 3", err)
	if !reflect.DeepEqual(keys(got), []string{"a1"}) || more {
		t.Fatalf("after acknowledging a0: %v more=%v, want [a1] more=false", keys(got), more)
	}
}

func testSSFLeases(t *testing.T, s store.Store) {
	for _, id := range []string{"p1", "p2"} {
		must(t, "CreateSSFStream", s.CreateSSFStream(ctx, ssfStream(id, "c1", model.DeliveryPush)))
	}
	must(t, "CreateSSFStream", s.CreateSSFStream(ctx, ssfStream("poll", "c1", model.DeliveryPoll)))
	paused := ssfStream("paused", "c1", model.DeliveryPush)
	paused.Status = model.StreamPaused
	must(t, "CreateSSFStream", s.CreateSSFStream(ctx, paused))

	now := at(time.Hour)
	lease := 15 * time.Second
	claim := func(owner string, now time.Time) []string {
		t.Helper()
		ids, err := s.ClaimSSFStreams(ctx, owner, now, now.Add(lease/2), now.Add(lease), -1)
		must(t, "ClaimSSFStreams", err)
		slices.Sort(ids)
		return ids
	}
	if got := claim("A", now); !reflect.DeepEqual(got, []string{"p1", "p2"}) {
		t.Fatalf("A claimed %v, want the enabled push streams [p1 p2]", got)
	}
	if got := claim("B", now.Add(time.Second)); len(got) != 0 {
		t.Errorf("B claimed %v while A's leases live", got)
	}
	if got := claim("A", now.Add(time.Second)); len(got) != 0 {
		t.Errorf("A renewed %v long before its leases end", got)
	}
	if got := claim("A", now.Add(lease/2+time.Second)); !reflect.DeepEqual(got, []string{"p1", "p2"}) {
		t.Errorf("A renewed %v near the end of its leases, want both", got)
	}
	// A stops renewing: B takes over once the leases expire.
	if got := claim("B", now.Add(lease+time.Second)); len(got) != 0 {
		t.Errorf("B claimed renewed leases: %v", got)
	}
	if got := claim("B", now.Add(lease/2+lease+2*time.Second)); !reflect.DeepEqual(got, []string{"p1", "p2"}) {
		t.Errorf("B took over %v after expiry, want both", got)
	}
	must(t, "ReleaseSSFStreams", s.ReleaseSSFStreams(ctx, "B"))
	if got := claim("A", now.Add(lease/2+lease+3*time.Second)); !reflect.DeepEqual(got, []string{"p1", "p2"}) {
		t.Errorf("A claimed %v after B released, want both", got)
	}
	// Concurrent claims: exactly one owner per stream.
	later := now.Add(time.Hour)
	var wg sync.WaitGroup
	var mu sync.Mutex
	owners := map[string][]string{}
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := fmt.Sprintf("o%d", i)
			ids, err := s.ClaimSSFStreams(ctx, o, later, later, later.Add(lease), -1)
			if err != nil {
				t.Errorf("ClaimSSFStreams: %v", err)
				return
			}
			mu.Lock()
			for _, id := range ids {
				owners[id] = append(owners[id], o)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	for id, os := range owners {
		if len(os) != 1 {
			t.Errorf("stream %s leased to %v at once", id, os)
		}
	}
	if len(owners) != 2 {
		t.Errorf("concurrent claims leased %d streams, want 2", len(owners))
	}
	if _, err := s.ClaimSSFStreams(ctx, "", now, now, now, -1); err == nil {
		t.Error("ClaimSSFStreams with an empty owner succeeded")
	}

	// A bounded claim (an instance's fair share) takes at most take free
	// streams but still renews all its own; releasing some frees only
	// those.
	for _, id := range []string{"p3", "p4", "p5"} {
		must(t, "CreateSSFStream", s.CreateSSFStream(ctx, ssfStream(id, "c2", model.DeliveryPush)))
	}
	t2 := later.Add(time.Hour)
	take := func(owner string, now time.Time, n int) []string {
		t.Helper()
		ids, err := s.ClaimSSFStreams(ctx, owner, now, now.Add(lease/2), now.Add(lease), n)
		must(t, "ClaimSSFStreams", err)
		slices.Sort(ids)
		return ids
	}
	if got := take("A", t2, 2); len(got) != 2 {
		t.Fatalf("A took %v with take=2, want 2 streams", got)
	}
	if got := take("B", t2, 0); len(got) != 0 {
		t.Errorf("B took %v with take=0", got)
	}
	gotB := take("B", t2, 10)
	if len(gotB) != 3 {
		t.Fatalf("B took %v, want the 3 streams A left", gotB)
	}
	if got := take("A", t2.Add(lease/2+time.Second), 0); len(got) != 2 {
		t.Errorf("A renewed %v with take=0, want its 2 streams", got)
	}
	must(t, "ReleaseSSFStreams", s.ReleaseSSFStreams(ctx, "B", gotB[0]))
	if got := take("C", t2.Add(time.Second), -1); !reflect.DeepEqual(got, gotB[:1]) {
		t.Errorf("C took %v after B released %s, want only that stream", got, gotB[0])
	}
	// Concurrent bounded claims never lease one stream twice.
	t3 := t2.Add(time.Hour)
	owners = map[string][]string{}
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := fmt.Sprintf("q%d", i)
			ids, err := s.ClaimSSFStreams(ctx, o, t3, t3, t3.Add(lease), 2)
			if err != nil {
				t.Errorf("ClaimSSFStreams: %v", err)
				return
			}
			if len(ids) > 2 {
				t.Errorf("%s took %v with take=2", o, ids)
			}
			mu.Lock()
			for _, id := range ids {
				owners[id] = append(owners[id], o)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	for id, os := range owners {
		if len(os) != 1 {
			t.Errorf("stream %s leased to %v at once (bounded)", id, os)
		}
	}
}

// testSSFHandled: EnqueueEventSETs records the event in the transaction
// of its SETs (also with none), SSFEventHandled reports it, a repeat is
// harmless, and PurgeSSFHandled forgets old records.
func testSSFHandled(t *testing.T, s store.Store, clk *clock.Fake) {
	must(t, "CreateSSFStream", s.CreateSSFStream(ctx, ssfStream("h", "c1", model.DeliveryPoll)))
	for _, id := range []string{"ev-1", "ev-none"} {
		if done, err := s.SSFEventHandled(ctx, id); err != nil || done {
			t.Fatalf("SSFEventHandled(%s) before = %v, %v", id, done, err)
		}
	}
	n, err := s.EnqueueEventSETs(ctx, "ev-1", []*store.SETEntry{setEntry("h", "ev-1/0"), setEntry("h", "ev-1/1")})
	must(t, "EnqueueEventSETs", err)
	if n != 2 {
		t.Errorf("EnqueueEventSETs stored %d, want 2", n)
	}
	_, err = s.EnqueueEventSETs(ctx, "ev-none", nil)
	must(t, "EnqueueEventSETs without SETs", err)
	// Again (a catch-up racing the synchronous path): nothing more, even
	// for entries not queued any more (delivered and deleted meanwhile:
	// here a dedup key the first call did not use).
	again := []*store.SETEntry{setEntry("h", "ev-1/0"), setEntry("h", "ev-1/2")}
	n, err = s.EnqueueEventSETs(ctx, "ev-1", again)
	must(t, "EnqueueEventSETs again", err)
	if n != 0 || again[0].Seq != 0 || again[1].Seq != 0 {
		t.Errorf("EnqueueEventSETs again stored %d (seqs %d, %d)", n, again[0].Seq, again[1].Seq)
	}
	for _, id := range []string{"ev-1", "ev-none"} {
		if done, err := s.SSFEventHandled(ctx, id); err != nil || !done {
			t.Errorf("SSFEventHandled(%s) = %v, %v, want true", id, done, err)
		}
	}
	if done, _ := s.SSFEventHandled(ctx, "ev-other"); done {
		t.Error("an unknown event is handled")
	}
	// A failed enqueue records nothing (a jti already queued on the
	// stream makes the insert fail).
	dup := setEntry("h", "ev-2/0")
	dup.JTI = setEntry("h", "ev-1/0").JTI
	if _, err := s.EnqueueEventSETs(ctx, "ev-2", []*store.SETEntry{dup}); err == nil {
		t.Error("EnqueueEventSETs with a duplicate jti succeeded")
	} else if done, _ := s.SSFEventHandled(ctx, "ev-2"); done {
		t.Error("a failed EnqueueEventSETs recorded its event")
	}

	// The store stamps a record with its clock: ev-1 and ev-none at the
	// start, ev-3 two hours later. A purge forgets what was handled before
	// its argument.
	start := clk.Now()
	clk.Advance(2 * time.Hour)
	_, err = s.EnqueueEventSETs(ctx, "ev-3", nil)
	must(t, "EnqueueEventSETs ev-3", err)
	if n, err := s.PurgeSSFHandled(ctx, start); err != nil || n != 0 {
		t.Errorf("PurgeSSFHandled(start) = %d, %v, want 0", n, err)
	}
	if n, err := s.PurgeSSFHandled(ctx, start.Add(time.Hour)); err != nil || n != 2 {
		t.Errorf("PurgeSSFHandled(start + 1h) = %d, %v, want 2", n, err)
	}
	for id, want := range map[string]bool{"ev-1": false, "ev-none": false, "ev-3": true} {
		if done, err := s.SSFEventHandled(ctx, id); err != nil || done != want {
			t.Errorf("after the purge, SSFEventHandled(%s) = %v, %v, want %v", id, done, err, want)
		}
	}
}

// testSSFEnqueueHandOff: entries enqueued with HeldUntil (handed out to a
// waiting long poll as they are stored) are stored held, Attempts 1, only
// on an enabled poll stream with nothing else queued; elsewhere, and when
// the call fails, HeldUntil is cleared and they are stored visible. A
// handed-out entry behaves as a polled one: invisible until HeldUntil,
// then returned again, and acknowledged by its jti. Two concurrent
// enqueues asking for a hand-off on one empty stream: only one gets it.
func testSSFEnqueueHandOff(t *testing.T, s store.Store) {
	paused := ssfStream("paused", "c1", model.DeliveryPoll)
	paused.Status = model.StreamPaused
	for _, st := range []*model.SSFStream{ssfStream("h", "c1", model.DeliveryPoll), ssfStream("busy", "c1", model.DeliveryPoll),
		paused, ssfStream("push", "c1", model.DeliveryPush)} {
		must(t, "CreateSSFStream", s.CreateSSFStream(ctx, st))
	}
	_, err := s.EnqueueSETs(ctx, []*store.SETEntry{setEntry("busy", "old")})
	must(t, "EnqueueSETs", err)
	now := at(time.Hour)
	hold := now.Add(time.Minute)
	held := func(e *store.SETEntry) *store.SETEntry { e.HeldUntil = hold; return e }
	es := []*store.SETEntry{held(setEntry("h", "0")), held(setEntry("h", "1")), setEntry("h", "2"),
		held(setEntry("busy", "0")), held(setEntry("paused", "0")), held(setEntry("push", "0")), held(setEntry("gone", "0"))}
	n, err := s.EnqueueSETs(ctx, es)
	must(t, "EnqueueSETs hand-off", err)
	if n != 6 {
		t.Fatalf("stored %d, want 6", n)
	}
	for i, e := range es {
		want := i < 2
		if got := !e.HeldUntil.IsZero(); got != want {
			t.Errorf("%s/%s: handed out = %v, want %v", e.StreamID, e.DedupKey, got, want)
		}
		if want && (!e.HeldUntil.Equal(hold) || e.Attempts != 1 || e.Seq == 0) {
			t.Errorf("%s/%s handed out: HeldUntil %v Attempts %d Seq %d", e.StreamID, e.DedupKey, e.HeldUntil, e.Attempts, e.Seq)
		}
	}
	// Streams with entries a poll would get: h (entry 2) and busy; an
	// unknown id is ignored. Once everything is held, none; after the
	// hold, h again.
	vis, err := s.SSFStreamsWithVisibleSETs(ctx, []string{"h", "busy", "nope"}, now)
	must(t, "SSFStreamsWithVisibleSETs", err)
	slices.Sort(vis)
	if !reflect.DeepEqual(vis, []string{"busy", "h"}) {
		t.Errorf("SSFStreamsWithVisibleSETs = %v, want [busy h]", vis)
	}
	// Handed out: a poll before the hold sees only the visible entry.
	got, more, err := s.PollSETs(ctx, "h", store.SETPoll{Max: 10, Now: now, Hold: hold})
	must(t, "PollSETs", err)
	if !reflect.DeepEqual(keys(got), []string{"2"}) || more {
		t.Fatalf("poll during the hold: %v more=%v, want [2]", keys(got), more)
	}
	if vis, err := s.SSFStreamsWithVisibleSETs(ctx, []string{"h"}, now); err != nil || len(vis) != 0 {
		t.Errorf("SSFStreamsWithVisibleSETs with everything held = %v, %v", vis, err)
	}
	if vis, err := s.SSFStreamsWithVisibleSETs(ctx, []string{"h"}, hold); err != nil || !reflect.DeepEqual(vis, []string{"h"}) {
		t.Errorf("SSFStreamsWithVisibleSETs after the hold = %v, %v", vis, err)
	}
	for _, id := range []string{"busy", "paused", "push"} {
		q, err := s.QueuedSETs(ctx, id, 0, 10)
		must(t, "QueuedSETs", err)
		for _, e := range q {
			if !e.HeldUntil.IsZero() || e.Attempts != 0 {
				t.Errorf("%s/%s stored held (%v, %d attempts): the stream may not hand out", id, e.DedupKey, e.HeldUntil, e.Attempts)
			}
		}
	}
	// After the hold the unacknowledged hand-off comes back; an ack of a
	// handed-out jti deletes it.
	got, _, err = s.PollSETs(ctx, "h", store.SETPoll{Ack: []string{"jti-h-1"}, Max: 10, Now: hold.Add(time.Second), Hold: hold.Add(time.Hour)})
	must(t, "PollSETs after hold", err)
	if !reflect.DeepEqual(keys(got), []string{"0", "2"}) || got[0].Attempts != 2 {
		t.Fatalf("after the hold: %v, want [0 2], 0 with 2 attempts", keys(got))
	}
	// A failed call hands nothing out and stores nothing.
	_, _, err = s.PollSETs(ctx, "h", store.SETPoll{Ack: []string{"jti-h-0", "jti-h-2"}, Now: hold.Add(2 * time.Second)})
	must(t, "PollSETs ack", err)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	f := held(setEntry("h", "fail"))
	if _, err := s.EnqueueSETs(cctx, []*store.SETEntry{f}); err == nil {
		t.Fatal("EnqueueSETs with a cancelled context succeeded")
	}
	if !f.HeldUntil.IsZero() || f.Seq != 0 {
		t.Errorf("failed enqueue: HeldUntil %v Seq %d, want both zero", f.HeldUntil, f.Seq)
	}
	if c, _ := s.CountSETs(ctx, "h"); c.Queued != 0 {
		t.Fatalf("queue of h: %+v, want empty", c)
	}
	// Concurrent hand-offs on one empty stream: exactly one is stored held.
	for round := range 5 {
		var wg sync.WaitGroup
		pair := []*store.SETEntry{held(setEntry("h", fmt.Sprintf("c%d-a", round))), held(setEntry("h", fmt.Sprintf("c%d-b", round)))}
		errs := make([]error, 2)
		for i := range pair {
			wg.Add(1)
			go func() { defer wg.Done(); _, errs[i] = s.EnqueueSETs(ctx, pair[i:i+1]) }()
		}
		wg.Wait()
		must(t, "concurrent EnqueueSETs", errors.Join(errs...))
		handed := 0
		for _, e := range pair {
			if !e.HeldUntil.IsZero() {
				handed++
			}
		}
		if handed != 1 {
			t.Fatalf("round %d: %d concurrent hand-offs on one empty stream, want 1", round, handed)
		}
		q, err := s.QueuedSETs(ctx, "h", 0, 10)
		must(t, "QueuedSETs", err)
		var acks []string
		for _, e := range q {
			acks = append(acks, e.JTI)
		}
		_, _, err = s.PollSETs(ctx, "h", store.SETPoll{Ack: acks, Now: now})
		must(t, "PollSETs ack", err)
	}
}
