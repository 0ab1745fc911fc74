// Package logwriter gathers the daemon's log lines into few writes.
//
// slog's handlers format a record and then call Write on their io.Writer
// with the handler's mutex held. Writing straight to stderr therefore costs
// one write(2) system call per line, and every other goroutine that logs
// waits on that mutex meanwhile: at thousands of audit lines a second that
// is a measurable share of the daemon's CPU. A Writer instead copies each
// line into a pending buffer and wakes one flusher goroutine, which hands
// everything gathered since its last write to the underlying writer in one
// Write call. Under load many lines go out per system call; at low load a
// line goes out at once (there is no timer).
//
// Nothing is dropped: when the pending buffer is full Write waits for the
// flusher (so memory stays bounded), each Write's bytes stay whole and in
// order, and Close flushes what is left. A write error of the underlying
// writer is remembered and returned by Close; later lines are still written.
package logwriter

import (
	"io"
	"sync"
)

// DefaultMaxPending is the pending buffer's bound when Options leaves it 0.
const DefaultMaxPending = 1 << 20

// Options tunes a Writer.
type Options struct {
	// MaxPending bounds the bytes waiting for the flusher: a Write that
	// would go past it waits until the flusher has taken the buffer (one
	// line larger than the bound is still accepted into an empty buffer).
	// 0 means DefaultMaxPending.
	MaxPending int
}

// Writer is an io.Writer that hands lines to an underlying writer from one
// goroutine, many lines per call. It is safe for concurrent use.
type Writer struct {
	w    io.Writer
	max  int
	wake chan struct{} // capacity 1: a token means "look at pending"
	done chan struct{} // closed when the flusher has returned

	mu       sync.Mutex
	cond     *sync.Cond // broadcast when pending is taken, a write ends, or the flusher stops
	pending  []byte
	spare    []byte
	appended uint64 // bytes ever appended to pending
	flushed  uint64 // bytes ever handed to w
	closed   bool   // Close was called: no more appends
	stopped  bool   // the flusher has drained pending and returned
	err      error  // the first error w returned
}

// New starts a Writer over w. Call Close to flush and stop it.
func New(w io.Writer, opts Options) *Writer {
	limit := opts.MaxPending
	if limit <= 0 {
		limit = DefaultMaxPending
	}
	lw := &Writer{w: w, max: limit, wake: make(chan struct{}, 1), done: make(chan struct{})}
	lw.cond = sync.NewCond(&lw.mu)
	go lw.run()
	return lw
}

// Write queues p (one whole log line) for the flusher and returns at once,
// unless the pending buffer is full: then it waits for the flusher to take
// it. After Close, p is written to the underlying writer synchronously.
func (lw *Writer) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	for !lw.closed && len(lw.pending) > 0 && len(lw.pending)+len(p) > lw.max {
		lw.cond.Wait()
	}
	if lw.closed {
		for !lw.stopped {
			lw.cond.Wait()
		}
		// Under the mutex, so that late lines do not interleave either.
		return lw.w.Write(p)
	}
	lw.pending = append(lw.pending, p...)
	lw.appended += uint64(len(p))
	lw.poke()
	return len(p), nil
}

// Flush blocks until every byte written before the call has been handed to
// the underlying writer, and returns the first error that writer returned.
func (lw *Writer) Flush() error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	target := lw.appended
	lw.poke()
	for lw.flushed < target && !lw.stopped {
		lw.cond.Wait()
	}
	return lw.err
}

// Close flushes what is pending, stops the flusher and returns the first
// error the underlying writer returned. Writes after Close go straight to
// the underlying writer. Close may be called more than once.
func (lw *Writer) Close() error {
	lw.mu.Lock()
	lw.closed = true
	lw.cond.Broadcast() // Writes waiting for room go the synchronous way
	lw.poke()
	lw.mu.Unlock()
	<-lw.done
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.err
}

// poke wakes the flusher without blocking; a token already in the channel
// will do. Called with mu held.
func (lw *Writer) poke() {
	select {
	case lw.wake <- struct{}{}:
	default:
	}
}

// run is the flusher: on each wake-up it writes what is pending, again and
// again until nothing is, and returns once Close was called and all is out.
func (lw *Writer) run() {
	defer close(lw.done)
	for range lw.wake {
		for {
			buf, end, ok := lw.take()
			if buf == nil {
				if !ok {
					return
				}
				break
			}
			_, err := lw.w.Write(buf)
			lw.mu.Lock()
			if err != nil && lw.err == nil {
				lw.err = err
			}
			lw.flushed = end
			if cap(buf) <= 2*lw.max { // keep a buffer one huge line grew
				lw.spare = buf[:0] // only when it is not much past the bound
			}
			lw.cond.Broadcast()
			lw.mu.Unlock()
		}
	}
}

// take swaps the pending buffer for the spare one and returns what was
// pending and the byte count it ends at. With nothing pending it returns a
// nil buffer, and ok false when the flusher should stop (Close was called),
// marking the Writer stopped.
func (lw *Writer) take() (buf []byte, end uint64, ok bool) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if len(lw.pending) == 0 {
		if lw.closed {
			lw.stopped = true
			lw.cond.Broadcast()
			return nil, 0, false
		}
		return nil, 0, true
	}
	buf, end = lw.pending, lw.appended
	lw.pending, lw.spare = lw.spare[:0], nil
	lw.cond.Broadcast() // room for Writes waiting on the bound
	return buf, end, true
}
