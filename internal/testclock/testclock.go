// Package testclock is a settable clock for tests that inject Now
// functions; it is safe for concurrent use.
package testclock

import (
	"sync/atomic"
	"time"
)

// Clock holds the current time; Now is its Options.Now.
type Clock struct{ ns atomic.Int64 }

// New returns a clock set to t.
func New(t time.Time) *Clock {
	c := &Clock{}
	c.Set(t)
	return c
}

// Now returns the clock's time, in UTC.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// Advance moves the clock by d (backwards when d is negative).
func (c *Clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
