package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/ward-idp/ward/internal/loadgen"
)

// enrollTOTP enrols a TOTP authenticator for user with the command line
// (it prints the secret, then reads a code) and returns the secret.
func (a *admin) enrollTOTP(user string) (string, error) {
	cmd := exec.Command(a.bin, "--config", a.cfg, "user", "totp-enroll", user)
	cmd.Env = a.env
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		return "", err
	}
	sc := bufio.NewScanner(out)
	var secret string
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "secret:" {
			secret = f[1]
			break
		}
	}
	if secret == "" {
		cmd.Process.Kill()
		cmd.Wait()
		return "", fmt.Errorf("totp-enroll printed no secret: %s", errb.String())
	}
	code, err := totpCode(secret, time.Now())
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return "", err
	}
	fmt.Fprintln(in, code)
	in.Close()
	var rest bytes.Buffer
	for sc.Scan() {
		rest.WriteString(sc.Text() + "\n")
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(rest.String(), "TOTP enrolled") {
		return "", fmt.Errorf("totp-enroll: %v %s %s", err, rest.String(), errb.String())
	}
	return secret, nil
}

func totpCode(secret string, at time.Time) (string, error) {
	return totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
}

// signInWithTOTP drives a sign-in of user at one replica (pinned
// connection, the issuer's host) with password and code and returns
// whether it ended with an authorization code.
func signInWithTOTP(ctx context.Context, issuer, pin, user, password, code string) (bool, string, error) {
	b := browser(pin)
	resp, body, _, err := startSignIn(ctx, b, issuer, "cluster-web", "openid", user, password)
	if err != nil {
		return false, "", err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="otp"`) {
		return false, fmt.Sprintf("password step answered %d without the code form", resp.StatusCode), nil
	}
	form := loadgen.HiddenFields(body)
	form.Set("otp", code)
	resp, body, err = loadgen.Send(ctx, b, http.MethodPost, issuer+"/login/mfa", form)
	if err != nil {
		return false, "", err
	}
	if loadgen.CodeOf(resp) != "" {
		return true, "", nil
	}
	return false, fmt.Sprintf("code step answered %d: %.120s", resp.StatusCode, textOf(body)), nil
}

// textOf returns the error paragraph of a page, or its start.
func textOf(page string) string {
	if i := strings.Index(page, `class="error"`); i >= 0 {
		page = page[i:]
		if j := strings.Index(page, ">"); j >= 0 {
			page = page[j+1:]
		}
		if j := strings.Index(page, "<"); j >= 0 {
			page = page[:j]
		}
	}
	return page
}

// checkTOTPReplayAcrossReplicas enrols TOTP for totpuser, signs in with
// a code C at replica 0, then replays C at replicas 1 and 2: both must
// refuse it (the used time step is recorded atomically in the shared
// database).
func checkTOTPReplayAcrossReplicas(t *testing.T, a *admin, issuer string, reps []*replica) string {
	t.Helper()
	ctx := context.Background()
	secret, err := a.enrollTOTP("totpuser")
	if err != nil {
		t.Errorf("TOTP: %v", err)
		return "not checked"
	}
	// The next time step's code: the enrolment used the current one, and
	// Ward accepts one step either side.
	code, _ := totpCode(secret, time.Now().Add(30*time.Second))
	ok, why, err := signInWithTOTP(ctx, issuer, reps[0].addr, "totpuser", userPass, code)
	if err != nil || !ok {
		t.Errorf("TOTP: sign-in with a fresh code at replica 0 failed: %v %s", err, why)
		return "not checked"
	}
	refused := 0
	for i := 1; i < len(reps); i++ {
		ok, why, err := signInWithTOTP(ctx, issuer, reps[i].addr, "totpuser", userPass, code)
		switch {
		case err != nil:
			t.Errorf("TOTP replay at replica %d: %v", i, err)
		case ok:
			t.Errorf("TOTP: the code used at replica 0 was accepted again at replica %d", i)
		default:
			refused++
			t.Logf("TOTP replay at replica %d refused: %s", i, why)
		}
	}
	return fmt.Sprintf("a code accepted at replica 0 was refused at %d of %d other replicas", refused, len(reps)-1)
}

// checkLockoutAcrossReplicas makes lockout.max_failures (5) failed
// sign-ins of lockuser spread over the replicas; then the right password
// must be refused at every replica, and the account be locked in the
// database.
func checkLockoutAcrossReplicas(t *testing.T, issuer string, reps []*replica, db *database) string {
	t.Helper()
	ctx := context.Background()
	const maxFailures = 5
	for i := range maxFailures {
		resp, _, _, err := startSignIn(ctx, browser(reps[i%len(reps)].addr), issuer, "cluster-web", "openid", "lockuser", "wrong-password-"+fmt.Sprint(i))
		if err != nil {
			t.Errorf("lockout: failed sign-in %d: %v", i, err)
			continue
		}
		if loadgen.CodeOf(resp) != "" {
			t.Errorf("lockout: a wrong password was accepted at replica %d", i%len(reps))
		}
	}
	var refused int
	for i, r := range reps {
		resp, body, _, err := startSignIn(ctx, browser(r.addr), issuer, "cluster-web", "openid", "lockuser", userPass)
		switch {
		case err != nil:
			t.Errorf("lockout: sign-in at replica %d: %v", i, err)
		case loadgen.CodeOf(resp) != "":
			t.Errorf("lockout: replica %d let lockuser in after %d failures spread over the replicas", i, maxFailures)
		default:
			refused++
			t.Logf("lockout: replica %d refused the right password: %d %.100s", i, resp.StatusCode, textOf(body))
		}
	}
	var failed, lockedUntil int64
	if err := db.conn.QueryRow(ctx, `SELECT failed_logins, locked_until FROM users WHERE username = 'lockuser'`).Scan(&failed, &lockedUntil); err != nil {
		t.Fatal(err)
	}
	until := time.UnixMicro(lockedUntil) // microseconds, as every time column
	if !until.After(time.Now()) {
		t.Errorf("lockout: lockuser is not locked in the database (failed_logins %d, locked_until %d)", failed, lockedUntil)
	}
	return fmt.Sprintf("after %d failures over %d replicas the account is locked (until +%ds) and every replica (%d of %d) refuses the right password",
		maxFailures, len(reps), int(time.Until(until).Seconds()), refused, len(reps))
}
