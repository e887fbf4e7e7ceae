// Package clock holds Fake, the settable clock that Ward's tests hand to
// the code under test in place of time.Now.
//
// Ward's components take their time source as a func() time.Time (an
// Options.Now field or a WithClock option) and never call time.Now
// behind the test's back, so a test that passes fake.Now decides every
// expiry, lease and timestamp itself and does not depend on the speed of
// the machine. Production code passes time.Now and never uses this
// package.
package clock

import (
	"sync"
	"time"
)

// Fake is a clock that moves only when told to. It is safe for concurrent
// use: stores, services and their background goroutines read it while
// the test moves it. The zero value reads the zero time; NewFake starts
// it elsewhere.
type Fake struct {
	mu sync.Mutex
	t  time.Time
}

// NewFake returns a clock reading t.
func NewFake(t time.Time) *Fake { return &Fake{t: t} }

// Now returns the clock's time. The method value c.Now is what the code
// under test receives as its time source.
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set moves the clock to t, forward or back.
func (c *Fake) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// Advance moves the clock by d (backwards if d is negative) and returns
// the new time.
func (c *Fake) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}
