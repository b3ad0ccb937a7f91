package lab_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// TestSubnetRouterClampsMSS (issue 14, R25): two sites joined by subnet routers, Skein's at
// site A and an official one at site B. A host at site A downloads 10 MB from a host at site B.
// Both hosts have 1500-byte links, so each announces an MSS of 1460; the tunnel carries 1280,
// and site B's router cannot say so (its "fragmentation needed" errors are dropped, as on many
// real networks). Only Skein clamping the MSS of the SYN it forwards into the tunnel keeps site
// B's host from sending segments the tunnel would drop: without it the download stalls.
func TestSubnetRouterClampsMSS(t *testing.T) {
	t.Parallel()
	l, c := labWithUser(t)
	key, err := c.PreAuthKey("lab", true, false)
	if err != nil {
		t.Fatal(err)
	}
	siteA, err := l.AddNAT("mss-a", lab.EasyNAT)
	if err != nil {
		t.Fatal(err)
	}
	siteB, err := l.AddNAT("mss-b", lab.EasyNAT)
	if err != nil {
		t.Fatal(err)
	}
	lanA, err := siteA.AddHost("mss-lan-a")
	if err != nil {
		t.Fatal(err)
	}
	lanB, err := siteB.AddHost("mss-lan-b")
	if err != nil {
		t.Fatal(err)
	}
	web, err := lanB.StartWeb()
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()

	skHost, err := siteA.AddHost("mss-sk")
	if err != nil {
		t.Fatal(err)
	}
	n := startNodeWith(t, skHost, true)
	mustOK(t, n.cli("up", "--login-server", c.URL(), "--auth-key", key, "--hostname", "mss-sk",
		"--advertise-routes="+siteA.LAN().String(), "--accept-routes"), "skein up --advertise-routes")
	if err := c.ApproveRoutes("mss-sk", siteA.LAN().String()); err != nil {
		t.Fatal(err)
	}
	tsHost, err := siteB.AddHost("mss-ts")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := tsHost.Run("sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	tsr, err := tsHost.StartTailscaledWith(lab.TailscaledOptions{Hostname: "mss-ts", Env: []string{"TS_DEBUG_FIREWALL_MODE=nftables"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := tsr.Up(c.URL(), key, "--advertise-routes="+siteB.LAN().String(), "--accept-routes"); err != nil {
		t.Fatal(err)
	}
	if err := c.ApproveRoutes("mss-ts", siteB.LAN().String()); err != nil {
		t.Fatal(err)
	}
	// Site A's host reaches site B's LAN through Skein; site B's router sends no "fragmentation
	// needed" (an ICMP black hole).
	if out, err := lanA.Run("ip", "route", "add", siteB.LAN().String(), "via", skHost.Addr().String()); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if out, err := tsHost.Run("nft", "add table inet mssblk; add chain inet mssblk out { type filter hook output priority 0; }; "+
		"add rule inet mssblk out icmp type destination-unreachable icmp code frag-needed counter drop"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	lab.Eventually(t, 30*time.Second, func() error {
		if _, err := web.CallerAddr(lanA, 2*time.Second); err != nil {
			return fmt.Errorf("site A's host cannot reach site B's web server through the routers: %v", err)
		}
		return nil
	})
	d, err := web.Download(lanA, 10<<20, 20*time.Second)
	if err != nil {
		out, _ := skHost.Run("nft", "list", "chain", "inet", "skein", "forward")
		blk, _ := tsHost.Run("nft", "list", "table", "inet", "mssblk")
		t.Fatalf("10 MB download across the tunnel: %v\nSkein's forward chain:\n%s\nsite B's ICMP block:\n%s", err, out, blk)
	}
	t.Logf("10 MB from site B's host to site A's in %v", d.Round(time.Millisecond))
	n.stop()
}
