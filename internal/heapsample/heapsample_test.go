package heapsample

import (
	"runtime"
	"testing"
	"time"
)

// TestPeakSeesAnAllocation holds 64 MB while Peak samples, lets it go, and
// checks that the peak saw it and InUse no longer does after a GC.
func TestPeakSeesAnAllocation(t *testing.T) {
	runtime.GC()
	base := InUse()
	stop := Peak(time.Millisecond)
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	time.Sleep(20 * time.Millisecond)
	runtime.KeepAlive(buf)
	peak := stop()
	if peak < base+60<<20 {
		t.Fatalf("peak %d bytes, want at least %d (base %d + 60 MB)", peak, base+60<<20, base)
	}
	buf = nil
	runtime.GC()
	if now := InUse(); now >= peak-32<<20 {
		t.Fatalf("in use after the GC %d bytes, want well below the peak %d", now, peak)
	}
}
