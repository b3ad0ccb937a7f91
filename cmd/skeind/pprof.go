package main

import (
	"errors"
	"expvar"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"time"
)

// pprofEnv names the profiling switch: SKEIN_PPROF=127.0.0.1:PORT (or [::1]:PORT) serves Go's
// profiles and counters on that address. It is off unless set, and only a loopback address is
// accepted: heap and goroutine dumps are for the person debugging this machine, not the network.
const pprofEnv = "SKEIN_PPROF"

// The counters a test or a person needs without reading a profile: /debug/vars carries Go's
// memstats (HeapInuse, HeapSys, NumGC, ...) and these. Each is computed only when asked for.
func init() {
	expvar.Publish("goroutines", expvar.Func(func() any { return runtime.NumGoroutine() }))
}

// startPprof serves the profiling endpoints when the environment asks for them. A bad or
// non-loopback address is an error: the user asked for something skeind will not do.
func startPprof(logf func(string, ...any)) error {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return nil
	}
	addr, err := loopbackAddr(addr)
	if err != nil {
		return fmt.Errorf("%s=%q: %w", pprofEnv, os.Getenv(pprofEnv), err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: %w", pprofEnv, err)
	}
	logf("profiling on http://%s/debug/pprof/ (counters at /debug/vars)", ln.Addr())
	srv := &http.Server{Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) // lives as long as the process
	return nil
}

// loopbackAddr accepts HOST:PORT where HOST is a loopback IP or "localhost" (taken as
// 127.0.0.1, not looked up: /etc/hosts could say otherwise).
func loopbackAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("want HOST:PORT on loopback, e.g. 127.0.0.1:6060: %w", err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() || ip.Zone() != "" {
		return "", errors.New("only a loopback address is allowed (127.0.0.1 or [::1])")
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// pprofMux is a mux of its own: nothing else in skeind serves http.DefaultServeMux, where
// net/http/pprof and expvar also register themselves.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // heap, goroutine, allocs, block, mutex, ...
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/debug/vars", expvar.Handler())
	return mux
}
