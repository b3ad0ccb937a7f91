package ipc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

// fill sets every field of the struct v points to (recursively) to a non-zero value, so a
// field that a wire form forgets shows up as a difference.
func fill(v reflect.Value, seed int) {
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), seed)
	case reflect.Struct:
		switch v.Addr().Interface().(type) {
		case *time.Time:
			v.Set(reflect.ValueOf(time.Date(2026, 12, 8, 1, 2, 3, seed, time.UTC)))
			return
		case *netip.Addr:
			v.Set(reflect.ValueOf(netip.AddrFrom4([4]byte{100, 64, byte(seed >> 8), byte(seed)})))
			return
		case *netip.Prefix:
			v.Set(reflect.ValueOf(netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", seed%250))))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), seed+i)
			}
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		fill(s.Index(0), seed)
		fill(s.Index(1), seed+1)
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, seed)
		fill(e, seed)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", seed))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(seed + 1))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(seed + 1))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(seed) + 0.5)
	}
}

// The client's status (binary form) is exactly the helper's, every field of every peer; a
// client that asks for JSON (curl, older clients) gets the same status.
func TestStatusBinaryRoundTrip(t *testing.T) {
	var st ipc.Status
	fill(reflect.ValueOf(&st).Elem(), 1)
	for i := range st.Peers {
		fill(reflect.ValueOf(&st.Peers[i]).Elem(), 100*i)
	}
	// A peer with nothing set but its ID: gob sends no zero fields; it must still arrive.
	st.Peers = append(st.Peers, ipc.Peer{ID: 77})
	sock, _ := ipctest.Serve(t, ipctest.NewBackend(st, ipc.Prefs{}), ipc.ServerOptions{})
	got, err := ipc.NewClient(sock).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// What JSON makes of st is the reference (the same normalisation every client sees).
	var want ipc.Status
	b, _ := json.Marshal(st)
	json.Unmarshal(b, &want)
	if !reflect.DeepEqual(normalise(got), normalise(want)) {
		g, _ := json.Marshal(got)
		t.Fatalf("binary status differs from JSON's:\n got %s\nwant %s", g, b)
	}

	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Get("http://" + ipc.HTTPHost + ipc.PathStatus)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("plain GET answered %q", ct)
	}
	var plain ipc.Status
	if err := json.Unmarshal(body, &plain); err != nil || !reflect.DeepEqual(plain, want) {
		t.Fatalf("plain JSON status: %v\n%s", err, body)
	}
}

// normalise maps what gob cannot tell apart (nil and empty slices) to one form.
func normalise(st ipc.Status) ipc.Status {
	for i := range st.Peers {
		p := &st.Peers[i]
		if len(p.Addresses) == 0 {
			p.Addresses = nil
		}
	}
	return st
}
