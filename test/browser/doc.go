// Package browser holds tests that drive Ward's pages in headless Chromium
// through the DevTools protocol (chromedp), with the DevTools virtual
// authenticator for WebAuthn: passkey enrolment and sign-in end to end on
// a real instance started with internal/wardtest. It has no non-test
// code.
package browser
