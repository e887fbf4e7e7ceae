package cae

import (
	"context"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

type noDevices struct{ store.Store }

func (noDevices) GetDevice(context.Context, string) (*model.Device, error) {
	return nil, errors.New("not found")
}

// modelEventTypes reads every EventType constant declared in
// internal/model, so a new domain event is checked without anyone
// remembering to list it here.
func modelEventTypes(t *testing.T) []model.EventType {
	t.Helper()
	pkgs, err := parser.ParseDir(token.NewFileSet(), "../model", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []model.EventType
	for _, p := range pkgs {
		for _, f := range p.Files {
			for _, d := range f.Decls {
				g, ok := d.(*ast.GenDecl)
				if !ok || g.Tok != token.CONST {
					continue
				}
				for _, sp := range g.Specs {
					vs := sp.(*ast.ValueSpec)
					if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "EventType" {
						continue
					}
					for _, v := range vs.Values {
						if lit, ok := v.(*ast.BasicLit); ok {
							s, _ := strconv.Unquote(lit.Value)
							out = append(out, model.EventType(s))
						}
					}
				}
			}
		}
	}
	if len(out) < 20 {
		t.Fatalf("found only %d event types in internal/model", len(out))
	}
	return out
}

// TestSourceEventTypes: SourceEventTypes lists exactly the domain events
// that can yield a SET, so the CAE stream's consumer misses none.
func TestSourceEventTypes(t *testing.T) {
	s := &Service{o: Options{Store: noDevices{}}, issuer: "https://ward.example"}
	src := map[model.EventType]bool{}
	for _, ty := range SourceEventTypes {
		src[ty] = true
	}
	for _, ty := range modelEventTypes(t) {
		yields := false
		for _, reason := range []string{"admin", "client_revoked_access_token"} {
			e := &model.Event{ID: "e1", Type: ty, UserID: "u1", SessionID: "s1", DeviceID: "d1", TokenID: "jti-1", Time: time.Now(), Reason: reason,
				Data: map[string]string{"previous": model.Compliant, "compliance": "noncompliant", "locations_changed": "true", "level": "high"}}
			yields = yields || len(s.templates(context.Background(), e)) > 0
		}
		if yields != src[ty] {
			t.Errorf("%s: yields SETs %v, listed in SourceEventTypes %v", ty, yields, src[ty])
		}
	}
}

// An access token revoked by its client is that token's revocation, not
// its session's: CAEP token-claims-change for the jwt_id, which rs turns
// into a revocation of that token alone. A revoked refresh token yields
// nothing (the access tokens it gave live on).
func TestTokenRevokedSET(t *testing.T) {
	s := &Service{o: Options{Store: noDevices{}}, issuer: "https://ward.example"}
	e := &model.Event{ID: "e1", Type: model.EventTokenRevoked, UserID: "u1", SessionID: "s1", ClientID: "spa", Actor: "spa",
		TokenID: "jti-1", Time: time.Unix(1_700_000_000, 0), Reason: model.ReasonClientRevokedAccessToken}
	ts := s.templates(context.Background(), e)
	if len(ts) != 1 {
		t.Fatalf("%d SETs, want 1", len(ts))
	}
	tpl := ts[0]
	if tpl.typ != EventTokenClaimsChange || tpl.subject.Format != FormatJWTID || tpl.subject.Iss != "https://ward.example" ||
		tpl.subject.JTI != "jti-1" || tpl.subject.Session != nil || tpl.body.Claims["active"] != false || tpl.subjectKey != "user:u1" {
		t.Errorf("SET %+v subject %+v", tpl, tpl.subject)
	}
	e.Reason = model.ReasonClientRevokedRefreshToken
	if ts := s.templates(context.Background(), e); len(ts) != 0 {
		t.Errorf("a revoked refresh token yields %d SETs", len(ts))
	}
}
