package filter

import "golang.zx2c4.com/wireguard/tun"

// Wrap returns a tun.Device that runs e on the packet path of dev: every packet Read (local
// traffic on its way to peers) goes through e.Out, and Write (traffic from peers) drops the
// packets e.In rejects. Everything else is dev's.
//
// Packets the daemon makes up itself (for example local DNS answers) should be written to dev,
// not to the wrapper, or the filter judges them as peer traffic.
func Wrap(dev tun.Device, e *Engine) tun.Device {
	return &filteredTUN{Device: dev, e: e}
}

type filteredTUN struct {
	tun.Device
	e *Engine
}

func (t *filteredTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.Device.Read(bufs, sizes, offset)
	for i := 0; i < n; i++ {
		if sizes[i] > 0 {
			t.e.Out(bufs[i][offset : offset+sizes[i]])
		}
	}
	return n, err
}

// Write writes the accepted packets of bufs. The bufs slice is compacted in place: on return its
// first entries are the packets that were written, in their original order. With no error the
// count is len(bufs), dropped packets included (they were handled); with an error it is the
// underlying device's count of written packets.
func (t *filteredTUN) Write(bufs [][]byte, offset int) (int, error) {
	kept := 0
	for _, b := range bufs {
		var pkt []byte
		if offset >= 0 && len(b) > offset {
			pkt = b[offset:]
		}
		if t.e.In(pkt) {
			bufs[kept] = b
			kept++
		}
	}
	if kept == 0 {
		return len(bufs), nil
	}
	n, err := t.Device.Write(bufs[:kept], offset)
	if err != nil {
		return n, err
	}
	return len(bufs), nil
}
