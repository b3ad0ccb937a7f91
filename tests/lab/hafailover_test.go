package lab_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// TestHASubnetRouterFailover (issue 14, R12): two official subnet routers advertise the same
// LAN; Headscale makes one primary and Skein reaches the LAN through it. The primary stops:
// once control names the other one primary, Skein follows within 5 s, without a restart. The
// LAN's web server tells which router a request came through (each one masquerades).
func TestHASubnetRouterFailover(t *testing.T) {
	t.Parallel()
	l, c := labWithUser(t)
	key, err := c.PreAuthKey("lab", true, false)
	if err != nil {
		t.Fatal(err)
	}
	site, err := l.AddNAT("ha-site", lab.EasyNAT)
	if err != nil {
		t.Fatal(err)
	}
	lan, err := site.AddHost("ha-lan")
	if err != nil {
		t.Fatal(err)
	}
	web, err := lan.StartWeb()
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	routers := map[string]*lab.Host{}
	tsd := map[string]*lab.Tailscaled{}
	for _, name := range []string{"ha-r1", "ha-r2"} {
		h, err := site.AddHost(name)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := h.Run("sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		ts, err := h.StartTailscaledWith(lab.TailscaledOptions{Hostname: name, Env: []string{"TS_DEBUG_FIREWALL_MODE=nftables"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := ts.Up(c.URL(), key, "--advertise-routes="+site.LAN().String()); err != nil {
			t.Fatal(err)
		}
		if err := c.ApproveRoutes(name, site.LAN().String()); err != nil {
			t.Fatal(err)
		}
		routers[name], tsd[name] = h, ts
	}
	skHost, err := l.AddHost("ha-sk")
	if err != nil {
		t.Fatal(err)
	}
	n := startNodeWith(t, skHost, false)
	mustOK(t, n.cli("up", "--login-server", c.URL(), "--auth-key", key, "--hostname", "ha-sk", "--accept-routes"), "skein up --accept-routes")

	// via is the router Skein's requests to the LAN go through now.
	via := func() (string, error) {
		caller, err := web.CallerAddr(skHost, 2*time.Second)
		if err != nil {
			return "", err
		}
		for name, h := range routers {
			if h.Addr() == caller {
				return name, nil
			}
		}
		return "", fmt.Errorf("request came from %s, neither router", caller)
	}
	var primary string
	lab.Eventually(t, 30*time.Second, func() error {
		var err error
		primary, err = via()
		return err
	})
	other := map[string]string{"ha-r1": "ha-r2", "ha-r2": "ha-r1"}[primary]
	t.Logf("primary: %s", primary)
	pid := n.proc.Pid()

	// The primary goes away; control moves the route to the other router.
	if err := tsd[primary].Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	var switched time.Time
	lab.Eventually(t, 60*time.Second, func() error {
		p := n.peer(n.status(), other)
		if p == nil || !containsPrefix(p.PrimaryRoutes, site.LAN()) {
			return fmt.Errorf("control has not made %s primary yet", other)
		}
		switched = time.Now()
		return nil
	})
	lab.Eventually(t, 5*time.Second, func() error {
		got, err := via()
		if err != nil {
			return err
		}
		if got != other {
			return fmt.Errorf("still through %s", got)
		}
		return nil
	})
	t.Logf("control switched %v after the primary stopped; Skein followed %v later",
		switched.Sub(stopped).Round(time.Millisecond), time.Since(switched).Round(time.Millisecond))
	if n.proc.Pid() != pid || n.proc.Exited() {
		t.Fatal("skeind restarted")
	}
	n.stop()
}
