package dtlsrecord

// Window is the anti-replay window of RFC 6347 §4.1.2.6 over the last 64 sequence numbers: a
// record is accepted if its number is above the highest one accepted, or within the 64 below it
// and not yet seen. Check does not change the window; Accept records a number once its record
// authenticated (a forged record must not move the window).
type Window struct {
	top  uint64 // highest accepted sequence number + 1; 0: none yet
	bits uint64 // bit i: top-1-i was accepted
}

// windowSize is how far below the highest accepted number a record may still arrive.
const windowSize = 64

// NewWindow returns a window that refuses every number below next, as if all had been seen.
func NewWindow(next uint64) Window {
	return Window{top: next, bits: ^uint64(0)}
}

// Check says whether seq may be accepted: neither seen nor too old.
func (w *Window) Check(seq uint64) bool {
	if seq >= w.top {
		return true
	}
	d := w.top - 1 - seq
	return d < windowSize && w.bits&(1<<d) == 0
}

// Accept marks seq seen (Check must have passed) and reports whether it is the highest so far.
func (w *Window) Accept(seq uint64) (newest bool) {
	if seq >= w.top {
		shift := seq + 1 - w.top
		if shift >= windowSize {
			w.bits = 0
		} else {
			w.bits <<= shift
		}
		w.bits |= 1
		w.top = seq + 1
		return true
	}
	w.bits |= 1 << (w.top - 1 - seq)
	return false
}

// Next is the lowest sequence number above every accepted one (pion's RemoteSequenceNumber).
func (w *Window) Next() uint64 { return w.top }
