package heapsample

import (
	"runtime/metrics"
	"sync"
	"time"
)

// InUse is what runtime.MemStats calls HeapInuse (heap objects plus the
// unused part of in-use spans), read without stopping the world.
func InUse() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
	metrics.Read(s)
	var sum uint64
	for _, v := range s {
		if v.Value.Kind() == metrics.KindUint64 {
			sum += v.Value.Uint64()
		}
	}
	return sum
}

// Peak samples InUse every interval until the returned function is
// called, which returns the highest sample (one taken then included).
func Peak(interval time.Duration) func() uint64 {
	done := make(chan struct{})
	var top uint64
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			top = max(top, InUse())
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		return max(top, InUse())
	}
}
