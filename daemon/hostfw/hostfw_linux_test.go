package hostfw

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// inNetns runs fn in a fresh network namespace (on a thread of its own, which then exits)
// whose nftables ruleset the real nft binary loaded from ruleset. Rulesets are what nft, ufw
// (through iptables-nft) and firewalld would install, in nft's own syntax.
func inNetns(t *testing.T, ruleset string, fn func(nft func(script string), c *nftables.Conn)) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces, nftables)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatal("needs nft (scripts/deps.sh installs it)")
	}
	done := make(chan struct{})
	var failure string
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			failure = fmt.Sprintf("unshare: %v", err)
			return
		}
		ns := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		nft := func(script string) {
			cmd := exec.Command("nsenter", "--net="+ns, "nft", "-f", "-")
			cmd.Stdin = strings.NewReader(script)
			if out, err := cmd.CombinedOutput(); err != nil {
				panic(fmt.Sprintf("nft: %v: %s", err, out))
			}
		}
		fd, err := unix.Open(ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			failure = err.Error()
			return
		}
		defer unix.Close(fd)
		if ruleset != "" {
			nft(ruleset)
		}
		c, err := nftables.New(nftables.WithNetNSFd(fd))
		if err != nil {
			failure = err.Error()
			return
		}
		fn(nft, c)
	}()
	<-done
	if failure != "" {
		t.Fatal(failure)
	}
}

const port = 41641

func check(t *testing.T, c *nftables.Conn, wantBlocked bool, wantKind, wantFix string) {
	t.Helper()
	v, err := inspect(c, port)
	if err != nil {
		t.Fatal(err)
	}
	if v.Blocked != wantBlocked || v.Kind != wantKind || v.Fix != wantFix {
		t.Errorf("verdict %+v, want blocked=%v kind=%q fix=%q", v, wantBlocked, wantKind, wantFix)
	}
}

func TestInboundUDP(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ruleset  string
		blocked  bool
		kind     string
		fix      string
		openWith string // a script after which the port must be open
	}{
		{name: "no firewall"},
		{
			name: "nftables policy drop, established accepted",
			ruleset: `table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		ct state invalid drop
		iif "lo" accept
		tcp dport 22 accept
		meta l4proto icmp accept
	}
}`,
			blocked:  true,
			kind:     "nftables",
			fix:      "sudo nft insert rule inet filter input udp dport 41641 accept",
			openWith: "insert rule inet filter input udp dport 41641 accept",
		},
		{
			name: "ufw default deny incoming (iptables-nft)",
			ruleset: `table ip filter {
	chain ufw-before-input {
		iifname "lo" accept
		ct state related,established accept
		ct state invalid drop
		udp sport 67 udp dport 68 accept
		jump ufw-user-input
	}
	chain ufw-user-input {
		tcp dport 22 accept
	}
	chain INPUT {
		type filter hook input priority filter; policy drop;
		jump ufw-before-input
	}
}`,
			blocked:  true,
			kind:     "ufw",
			fix:      "sudo ufw allow 41641/udp",
			openWith: "add rule ip filter ufw-user-input udp dport 41641 accept",
		},
		{
			name: "firewalld reject at the end of its zone",
			ruleset: `table inet firewalld {
	chain filter_INPUT {
		type filter hook input priority filter + 10; policy accept;
		ct state established,related accept
		iifname "lo" accept
		jump filter_INPUT_ZONES
		reject with icmpx admin-prohibited
	}
	chain filter_INPUT_ZONES {
		tcp dport 22 accept
	}
}`,
			blocked:  true,
			kind:     "firewalld",
			fix:      "sudo firewall-cmd --permanent --add-port=41641/udp && sudo firewall-cmd --reload",
			openWith: "insert rule inet firewalld filter_INPUT_ZONES udp dport { 53, 41641 } accept",
		},
		{
			name: "plain iptables",
			ruleset: `table ip filter {
	chain INPUT {
		type filter hook input priority filter; policy drop;
		ct state related,established accept
	}
}`,
			blocked:  true,
			kind:     "iptables",
			fix:      "sudo iptables -I INPUT -p udp --dport 41641 -j ACCEPT",
			openWith: "insert rule ip filter INPUT udp dport 41000-42000 accept",
		},
		{
			name: "the port in a set of other ports is not open",
			ruleset: `table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		udp dport { 53, 1000-2000 } accept
	}
}`,
			blocked:  true,
			kind:     "nftables",
			fix:      "sudo nft insert rule inet filter input udp dport 41641 accept",
			openWith: "insert rule inet filter input udp dport { 40000-41000, 41641 } accept",
		},
		{
			name: "accepting only some sources does not open it to peers",
			ruleset: `table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ip saddr 10.0.0.0/8 udp dport 41641 accept
	}
}`,
			blocked: true,
			kind:    "nftables",
			fix:     "sudo nft insert rule inet filter input udp dport 41641 accept",
		},
		{
			name: "a drop on loopback only",
			ruleset: `table inet filter {
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "lo" udp dport 41641 drop
		tcp dport 23 drop
	}
}`,
		},
		{
			name: "the uplink's UDP dropped (the lab's BlockUDP)",
			ruleset: `table inet skein_lab_udp {
	chain input {
		type filter hook input priority filter - 10; policy accept;
		iifname "eth0" meta l4proto udp drop
	}
}`,
			blocked: true,
			kind:    "nftables",
			fix:     "sudo nft insert rule inet skein_lab_udp input udp dport 41641 accept",
		},
		{
			name: "an IPv6-only table does not see IPv4",
			ruleset: `table ip6 filter {
	chain input {
		type filter hook input priority filter; policy drop;
	}
}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inNetns(t, tc.ruleset, func(nft func(string), c *nftables.Conn) {
				check(t, c, tc.blocked, tc.kind, tc.fix)
				if tc.openWith != "" {
					nft(tc.openWith)
					check(t, c, false, "", "")
				}
			})
		})
	}
}

// A rule added to the ruleset is noticed (the transport then asks relayed peers to try again).
func TestWatch(t *testing.T) {
	inNetns(t, "", func(nft func(string), c *nftables.Conn) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		changed := make(chan struct{}, 10)
		ended := make(chan error, 1)
		go func() { ended <- watch(ctx, c, func() { changed <- struct{}{} }) }()
		time.Sleep(100 * time.Millisecond) // subscribed
		nft("add table inet filter\nadd chain inet filter input { type filter hook input priority filter; policy accept; }")
		select {
		case <-changed:
		case err := <-ended:
			t.Fatalf("watch ended: %v", err)
		case <-time.After(3 * time.Second):
			t.Fatal("no change noticed")
		}
		nft("add rule inet filter input udp dport 41641 accept")
		select {
		case <-changed:
		case <-time.After(3 * time.Second):
			t.Fatal("a new rule was not noticed")
		}
		cancel()
		if err := <-ended; err != nil {
			t.Fatal(err)
		}
	})
}
