package agent_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/ward-idp/ward/agent"
	"github.com/ward-idp/ward/agent/keystore"
	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
)

// bobTOTP is the second factor an administrator enrols for bob (who signs
// in with a password only at first).
const bobTOTP = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"

const acrMFA = "urn:ward:acr:mfa"

// approveAs drives the device verification page in browser b as user:
// the code, then password and, when asked, a TOTP code of totpSecret, and
// approves.
func approveAs(t testing.TB, in *wardtest.Instance, b *http.Client, complete, userCode, user, password, totpSecret string) {
	t.Helper()
	decideAs(t, in, b, complete, userCode, user, password, totpSecret, "approve")
}

// decideAs is approveAs with the decision ("approve" or "deny").
func decideAs(t testing.TB, in *wardtest.Instance, b *http.Client, complete, userCode, user, password, totpSecret, decision string) {
	t.Helper()
	resp, body := wardtest.Do(t, b, http.MethodGet, complete, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `value="`+userCode+`"`) {
		t.Fatalf("verification page: %d %.300s", resp.StatusCode, body)
	}
	form := wardtest.HiddenFields(body)
	form.Set("user_code", userCode)
	resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/device", form)
	if resp.StatusCode == 200 && strings.Contains(body, `name="password"`) {
		form = wardtest.HiddenFields(body)
		form.Set("username", user)
		form.Set("password", password)
		resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login", form)
		if resp.StatusCode == 200 && strings.Contains(body, `name="otp"`) {
			if totpSecret == "" {
				t.Fatalf("%s is asked for a TOTP code", user)
			}
			in.Clock.Advance(31 * time.Second) // a fresh TOTP step
			code, err := totp.GenerateCode(totpSecret, in.Clock.Now())
			if err != nil {
				t.Fatal(err)
			}
			form = wardtest.HiddenFields(body)
			form.Set("otp", code)
			resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", form)
		}
	}
	if resp.StatusCode != 200 || !strings.Contains(body, `value="approve"`) {
		t.Fatalf("want the confirmation page, got %d %.400s", resp.StatusCode, body)
	}
	form = wardtest.HiddenFields(body)
	form.Set("decision", decision)
	if resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/device/confirm", form); resp.StatusCode != 200 {
		t.Fatalf("confirm: %d %.300s", resp.StatusCode, body)
	}
}

// caeResource is an rs-protected handler that follows a revocation state
// the test changes (as Ward's SSF stream would).
func caeResource(t *testing.T, in *wardtest.Instance) (*httptest.Server, *rs.RevocationState) {
	t.Helper()
	state := rs.NewRevocationState(rs.StateConfig{MaxTokenLifetime: 48 * time.Hour, Now: in.Clock.Now})
	res := httptest.NewServer(nil)
	t.Cleanup(res.Close)
	v, err := rs.New(rs.Config{Issuer: in.URL, Audience: in.URL, Now: in.Clock.Now, State: state, ExternalURL: res.URL})
	if err != nil {
		t.Fatal(err)
	}
	res.Config.Handler = v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := rs.FromContext(r.Context())
		io.WriteString(w, "hello "+tok.Subject+" "+tok.ACR)
	}))
	return res, state
}

func deviceSigner(t *testing.T, ks keystore.Store, name string) *dpop.Signer {
	t.Helper()
	k, err := ks.Load(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dpop.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A resource demands multi-factor authentication (an RFC 9470 step-up
// challenge) from a user whose device session was signed in with a
// password only. Refreshing with the claims cannot satisfy it (Ward:
// invalid_grant, the session does not meet the acr). Without Interactive
// the request fails with a *ReauthError carrying the claims; with it, the
// agent runs the device authorization grant with the device key and the
// claims, the user signs in with the second factor and approves, the new
// session is saved, the old refresh token is revoked, and the request goes
// through.
func TestAgentReauthStepUp(t *testing.T) {
	in := startAgentIdP(t)
	ctx := context.Background()
	dir := t.TempDir()
	o := enrollOptions(in, dir, func(_, complete, code string) {
		approveAs(t, in, in.Browser(), complete, code, "bob", wardtest.BobPassword, "")
	})
	cfg, err := agent.Enroll(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := in.App.Store.GetUserByUsername(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	res, state := caeResource(t, in)
	get := func(c *agent.Client) (int, string, error) {
		t.Helper()
		resp, err := c.HTTPClient().Get(res.URL + "/doc")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}

	plain, err := agent.Load(ctx, o.ConfigPath, agent.Options{Store: o.Store, Collector: o.Collector, Now: in.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if st, body, err := get(plain); err != nil || st != 200 || body != "hello "+bob.ID+" urn:ward:acr:password" {
		t.Fatalf("first request: %d %q %v", st, body, err)
	}

	// The administrator gives bob a second factor, and the resource now
	// requires it of him.
	code, _ := totp.GenerateCode(bobTOTP, in.Clock.Now())
	if err := in.App.Identity.EnrollTOTP(ctx, "admin", bob.ID, bobTOTP, code); err != nil {
		t.Fatal(err)
	}
	state.Require(in.URL, bob.ID, rs.Requirement{ACR: acrMFA})
	oldRT := agent.Secret(diskRT(t, o.ConfigPath))

	t.Run("without Interactive: ReauthError with the claims", func(t *testing.T) {
		_, _, err := get(plain)
		var re *agent.ReauthError
		if !errors.As(err, &re) || !errors.Is(err, agent.ErrReauthRequired) || re.Err.Code != "invalid_grant" {
			t.Fatalf("err = %v, want a ReauthError", err)
		}
		if !strings.Contains(re.Claims, acrMFA) || !strings.Contains(re.Claims, `"cp1"`) {
			t.Errorf("claims %s: want the acr of the challenge and the capability", re.Claims)
		}
		if strings.Contains(err.Error(), oldRT.Reveal()) {
			t.Error("the refresh token is in the error")
		}
		if diskRT(t, o.ConfigPath) != oldRT.Reveal() {
			t.Error("the refused refresh changed the saved session")
		}
	})

	var mu sync.Mutex
	var prompts []agent.DevicePrompt
	c, err := agent.Load(ctx, o.ConfigPath, agent.Options{Store: o.Store, Collector: o.Collector, Now: in.Clock.Now,
		Sleep: func(ctx context.Context, d time.Duration) error { in.Clock.Advance(d); return ctx.Err() },
		Interactive: func(ctx context.Context, p agent.DevicePrompt) error {
			mu.Lock()
			prompts = append(prompts, p)
			mu.Unlock()
			// The user signs in on a fresh browser: password and TOTP.
			approveAs(t, in, in.Browser(), p.VerificationURIComplete, p.UserCode, "bob", wardtest.BobPassword, bobTOTP)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, body, err := get(c)
	if err != nil || st != 200 || body != "hello "+bob.ID+" "+acrMFA {
		t.Fatalf("after signing in again: %d %q %v", st, body, err)
	}
	if len(prompts) != 1 || prompts[0].UserCode == "" || prompts[0].VerificationURI != in.URL+"/device" ||
		!strings.Contains(prompts[0].Reason, "acr") || !prompts[0].ExpiresAt.After(in.Clock.Now()) {
		t.Fatalf("prompts: %+v", prompts)
	}

	// The new session is saved, bound to the same device key, and carries
	// the device id; the old refresh token is revoked.
	saved, err := agent.LoadConfig(o.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if saved.RefreshToken == "" || saved.RefreshToken == oldRT || saved.RefreshToken != c.Config().RefreshToken || saved.DeviceID != cfg.DeviceID {
		t.Fatalf("saved configuration: new refresh token %v, device %s", saved.RefreshToken != oldRT, saved.DeviceID)
	}
	at, err := c.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if jwtClaim(t, at, "did") != cfg.DeviceID || jwtClaim(t, at, "acr") != acrMFA {
		t.Errorf("new token: did %q acr %q", jwtClaim(t, at, "did"), jwtClaim(t, at, "acr"))
	}
	s := deviceSigner(t, o.Store, cfg.KeyName)
	if r := refreshWith(t, in, oldRT.Reveal(), s); r["error"] != "invalid_grant" {
		t.Fatalf("the old refresh token still works (error %q)", r["error"])
	}
	// Presenting the revoked token did not end the new session (it was
	// revoked, not rotated: no reuse detection).
	if st, _, err := get(c); err != nil || st != 200 {
		t.Fatalf("next request: %d %v", st, err)
	}
	if len(prompts) != 1 {
		t.Errorf("prompted %d times", len(prompts))
	}
	// Another process with the saved configuration uses the new session.
	again, err := agent.Load(ctx, o.ConfigPath, agent.Options{Store: o.Store, Collector: o.Collector, Now: in.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, err := again.Refresh(ctx); err != nil {
		t.Fatalf("refresh with the saved session: %v", err)
	}
	for _, tok := range []string{oldRT.Reveal(), saved.RefreshToken.Reveal(), at} {
		if strings.Contains(in.LogText(), tok) {
			t.Error("a token of the agent is in the server log")
		}
	}
}

// A password change ends every session of the user: the resource's claims
// challenge cannot be followed with a refresh. Reauthenticate signs the
// user in again (with the new password); a sign-in by another user is
// refused and changes nothing; a disabled device is not offered a sign-in.
func TestAgentReauthAfterPasswordChange(t *testing.T) {
	in := startAgentIdP(t)
	ctx := context.Background()
	dir := t.TempDir()
	b := in.Browser()
	o := enrollOptions(in, dir, func(_, complete, code string) { approve(t, in, b, complete, code, "approve") })
	cfg, err := agent.Enroll(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := in.App.Store.GetUserByUsername(ctx, "alice")
	res, state := caeResource(t, in)
	sleep := func(ctx context.Context, d time.Duration) error { in.Clock.Advance(d); return ctx.Err() }
	c, err := agent.Load(ctx, o.ConfigPath, agent.Options{Store: o.Store, Collector: o.Collector, Now: in.Clock.Now, Sleep: sleep})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	get := func() (int, error) {
		resp, err := c.HTTPClient().Get(res.URL + "/doc")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if st, err := get(); err != nil || st != 200 {
		t.Fatalf("first request: %d %v", st, err)
	}

	in.Clock.Advance(2 * time.Second)
	const newPW = "another-long-passphrase-8842"
	if err := in.App.Identity.SetPassword(ctx, "admin", alice.ID, newPW); err != nil {
		t.Fatal(err)
	}
	state.RevokeUser(in.URL, alice.ID, in.Clock.Now()) // CAEP credential-change
	_, err = get()
	var re *agent.ReauthError
	if !errors.As(err, &re) || !errors.Is(err, agent.ErrSessionEnded) || !strings.Contains(re.Claims, `"nbf"`) {
		t.Fatalf("after the password change: %v, want a ReauthError with the challenge's claims", err)
	}
	before := diskRT(t, o.ConfigPath)

	t.Run("another user's sign-in is refused", func(t *testing.T) {
		err := c.Reauthenticate(ctx, re.Claims, func(_ context.Context, p agent.DevicePrompt) error {
			approveAs(t, in, in.Browser(), p.VerificationURIComplete, p.UserCode, "bob", wardtest.BobPassword, "")
			return nil
		})
		if err == nil || !strings.Contains(err.Error(), "another user") {
			t.Fatalf("err = %v, want the other user refused", err)
		}
		if diskRT(t, o.ConfigPath) != before {
			t.Fatal("the session was replaced by another user's")
		}
	})
	t.Run("a denied sign-in", func(t *testing.T) {
		err := c.Reauthenticate(ctx, re.Claims, func(_ context.Context, p agent.DevicePrompt) error {
			decideAs(t, in, in.Browser(), p.VerificationURIComplete, p.UserCode, "alice", newPW, wardtest.AliceTOTP, "deny")
			return nil
		})
		if !errors.Is(err, agent.ErrDenied) {
			t.Fatalf("err = %v, want ErrDenied", err)
		}
		if diskRT(t, o.ConfigPath) != before {
			t.Fatal("a denied sign-in changed the session")
		}
	})

	if err := c.Reauthenticate(ctx, re.Claims, func(_ context.Context, p agent.DevicePrompt) error {
		approveAs(t, in, in.Browser(), p.VerificationURIComplete, p.UserCode, "alice", newPW, wardtest.AliceTOTP)
		return nil
	}); err != nil {
		t.Fatalf("Reauthenticate: %v", err)
	}
	if st, err := get(); err != nil || st != 200 {
		t.Fatalf("after signing in again: %d %v", st, err)
	}
	if after := diskRT(t, o.ConfigPath); after == before || after == "" {
		t.Fatal("the new session was not saved")
	}

	// Disabling the device revokes its sessions; Ward tells the device
	// why its refresh is refused (it proved it holds the key), so the
	// agent does not ask the user for a sign-in that cannot succeed, and
	// nothing changes.
	t.Run("a disabled device cannot sign in again", func(t *testing.T) {
		prompted := 0
		d, err := agent.Load(ctx, o.ConfigPath, agent.Options{Store: o.Store, Collector: o.Collector, Now: in.Clock.Now, Sleep: sleep,
			Interactive: func(_ context.Context, p agent.DevicePrompt) error {
				prompted++
				approveAs(t, in, in.Browser(), p.VerificationURIComplete, p.UserCode, "alice", newPW, wardtest.AliceTOTP)
				return nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if _, err := in.App.Devices.Disable(ctx, "admin-test", cfg.DeviceID); err != nil {
			t.Fatal(err)
		}
		saved := diskRT(t, o.ConfigPath)
		_, err = d.Refresh(ctx)
		if !errors.Is(err, agent.ErrSessionEnded) || !strings.Contains(err.Error(), "disabled") || prompted != 0 {
			t.Fatalf("refresh of a disabled device: %v (prompted %d), want the device named disabled", err, prompted)
		}
		if diskRT(t, o.ConfigPath) != saved {
			t.Fatal("the session changed")
		}
	})
}
