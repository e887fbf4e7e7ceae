package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

func policyVersion(n int64) *model.PolicyVersion {
	return &model.PolicyVersion{
		Version: n, Document: fmt.Appendf(nil, `{"policies":[{"id":"p%d","name":"ü→✓"}]}`, n),
		Digest: fmt.Sprintf("digest-%d", n), CreatedAt: at(time.Duration(n) * time.Minute),
		CreatedBy: "admin-1", Comment: fmt.Sprintf("change %d", n),
	}
}

func testPolicyVersions(t *testing.T, s store.Store) {
	_, err := s.LatestPolicyVersion(ctx)
	wantErr(t, "LatestPolicyVersion of an empty store", err, store.ErrNotFound)
	n, err := s.LatestPolicyVersionNumber(ctx)
	must(t, "LatestPolicyVersionNumber", err)
	if n != 0 {
		t.Errorf("LatestPolicyVersionNumber of an empty store: got %d, want 0", n)
	}
	if err := s.CreatePolicyVersion(ctx, policyVersion(2)); err == nil {
		t.Error("CreatePolicyVersion(2) on an empty store: got nil, want an error (gap)")
	}
	for _, bad := range []*model.PolicyVersion{{Version: 1, Digest: "d"}, {Version: 0, Document: []byte("{}"), Digest: "d"}} {
		if err := s.CreatePolicyVersion(ctx, bad); err == nil {
			t.Errorf("CreatePolicyVersion(%+v): got nil, want an error", bad)
		}
	}
	for i := int64(1); i <= 3; i++ {
		must(t, "CreatePolicyVersion", s.CreatePolicyVersion(ctx, policyVersion(i)))
	}
	wantErr(t, "CreatePolicyVersion of a taken number", s.CreatePolicyVersion(ctx, policyVersion(3)), store.ErrAlreadyExists)
	wantErr(t, "CreatePolicyVersion of an old number", s.CreatePolicyVersion(ctx, policyVersion(1)), store.ErrAlreadyExists)

	latest, err := s.LatestPolicyVersion(ctx)
	must(t, "LatestPolicyVersion", err)
	same(t, "LatestPolicyVersion", latest, policyVersion(3), normPolicyVersion)
	n, err = s.LatestPolicyVersionNumber(ctx)
	must(t, "LatestPolicyVersionNumber", err)
	if n != 3 {
		t.Errorf("LatestPolicyVersionNumber: got %d, want 3", n)
	}
	v1, err := s.GetPolicyVersion(ctx, 1)
	must(t, "GetPolicyVersion", err)
	same(t, "GetPolicyVersion(1)", v1, policyVersion(1), normPolicyVersion)
	_, err = s.GetPolicyVersion(ctx, 9)
	wantErr(t, "GetPolicyVersion(9)", err, store.ErrNotFound)

	list, err := s.ListPolicyVersions(ctx, 2)
	must(t, "ListPolicyVersions", err)
	if len(list) != 2 || list[0].Version != 3 || list[1].Version != 2 {
		t.Fatalf("ListPolicyVersions(2): got %d versions, want 3 and 2", len(list))
	}
	want := policyVersion(3)
	want.Document = nil
	same(t, "ListPolicyVersions[0] (no document)", list[0], want, normPolicyVersion)
}

// testPolicyVersionsConcurrent: writers racing for the same next number;
// exactly one wins and the others see ErrAlreadyExists.
func testPolicyVersionsConcurrent(t *testing.T, s store.Store) {
	must(t, "CreatePolicyVersion", s.CreatePolicyVersion(ctx, policyVersion(1)))
	const writers = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
		errs []error
	)
	for range writers {
		wg.Go(func() {
			err := s.CreatePolicyVersion(ctx, policyVersion(2))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				wins++
			} else if !errors.Is(err, store.ErrAlreadyExists) {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if wins != 1 || len(errs) > 0 {
		t.Fatalf("concurrent CreatePolicyVersion(2): %d winners (want 1), unexpected errors %v", wins, errs)
	}
}

func normPolicyVersion(v model.PolicyVersion) model.PolicyVersion {
	v.Document, v.CreatedAt = nl(v.Document), nt(v.CreatedAt)
	return v
}
