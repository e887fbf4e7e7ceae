package identity

import (
	"errors"
	"net/netip"
)

// Throttling in front of the lockout. The lockout (in the store) bounds
// guesses per account and per unknown name; these budgets, kept in each
// instance's memory, bound what one network and all clients together can
// make an instance compute:
//   - per network address: IPv4 per address (or per /24 and so on, by
//     configuration), IPv6 per /64 (a single host commonly holds a whole
//     /64, so per-address budgets would be free to multiply);
//   - per instance: a global budget of failed attempts, so that spraying
//     from many networks is bounded too;
//   - the queue in front of the argon2 slots is bounded: an attempt that
//     finds it full is refused at once instead of waiting, so a flood
//     cannot make a legitimate sign-in wait behind it.
// Every attempt takes a token from its network's and the global bucket up
// front (parallel attempts cannot all pass before one is counted); settle
// gives them back when the attempt did not count.

// globalKey is the global bucket's key.
const globalKey = ""

// throttleKey is the bucket of an address: the address's network under
// the configured prefix lengths, or the string itself when it is not an
// address.
func (s *Service) throttleKey(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.Unmap().WithZone("")
	bits := s.v6Bits
	if addr.Is4() {
		bits = s.v4Bits
	}
	if p, err := addr.Prefix(bits); err == nil {
		return p.String()
	}
	return addr.String()
}

// admit takes a token from the bucket of ip's network and from the global
// bucket, and returns the network's key; ErrThrottled when either is
// spent.
func (s *Service) admit(ip string) (string, error) {
	key, now := s.throttleKey(ip), s.now()
	if !s.ipLimiter.Take(key, now) {
		return "", authErr(ErrThrottled, ReasonThrottled, "")
	}
	if !s.global.Take(globalKey, now) {
		s.ipLimiter.Refund(key, now)
		return "", authErr(ErrThrottled, ReasonThrottledGlobal, "")
	}
	return key, nil
}

// settle gives the attempt's tokens back unless it counted. Against the
// network: failed attempts (wrong password or code, unknown user,
// disabled, locked, replayed code). Against the global budget: evaluated
// guesses only (a refusal of a locked account costs nothing, and
// counting it would let anyone spend everybody's budget cheaply).
// Successes, internal errors, cancellations, an instance too busy to
// verify and CheckTOTP or CheckRecoveryCode on a user without TOTP count
// nowhere.
func (s *Service) settle(key string, err error) {
	now := s.now()
	ae, failed := errors.AsType[*authError](err)
	switch {
	case !failed, ae.reason == ReasonNoTOTP, ae.reason == ReasonOverloaded:
		s.ipLimiter.Refund(key, now)
		s.global.Refund(globalKey, now)
	case ae.reason == ReasonLocked, ae.reason == ReasonTOTPReplay, ae.reason == ReasonRecoveryCodeReplay:
		s.global.Refund(globalKey, now)
	}
}
