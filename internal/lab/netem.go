package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// udpTable is the inet-family table of Host.BlockUDP in a host's namespace.
const udpTable = "skein_lab_udp"

func needNft() error {
	if _, err := exec.LookPath("nft"); err != nil {
		return errors.New("the lab needs nftables' `nft` in PATH (scripts/deps.sh installs it)")
	}
	return nil
}

// nft runs an nft script in h's namespace (one atomic transaction).
func (h *Host) nft(script string) error {
	if err := needNft(); err != nil {
		return err
	}
	cmd := h.Command(nil, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	_, err := runCmd(cmd)
	return err
}

// replaceTable (re)creates a table atomically: "add table" makes the
// delete valid when the table does not exist yet.
func replaceTable(table, body string) string {
	return "add table " + table + "\ndelete table " + table + "\ntable " + table + " {" + body + "\n}\n"
}

// deleteTable deletes a table, if it exists.
func deleteTable(table string) string {
	return "add table " + table + "\ndelete table " + table + "\n"
}

// BlockUDP drops UDP between h and peers, both directions; calls add up.
// With no peers it drops all UDP through h's uplink (eth0), sparing
// loopback and tunnels such as tailscale0. The drop is in h's own input
// and output hooks, so h's sends fail with EPERM like behind a host
// firewall; for a silent drop in the network, use NAT.BlockUDP.
func (h *Host) BlockUDP(peers ...netip.Addr) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(peers) == 0 {
		if h.uplink == "" {
			return errors.New("BlockUDP: host has no uplink")
		}
		h.udpAll = true
	}
	for _, p := range peers {
		if !p.IsValid() {
			return errors.New("BlockUDP: invalid address")
		}
		h.udpBlocked = append(h.udpBlocked, p.Unmap())
	}
	var in, out []string
	if h.udpAll {
		in = append(in, fmt.Sprintf("iifname %q meta l4proto udp drop", h.uplink))
		out = append(out, fmt.Sprintf("oifname %q meta l4proto udp drop", h.uplink))
	}
	for _, p := range h.udpBlocked {
		fam := "ip"
		if p.Is6() {
			fam = "ip6"
		}
		in = append(in, fmt.Sprintf("%s saddr %v meta l4proto udp drop", fam, p))
		out = append(out, fmt.Sprintf("%s daddr %v meta l4proto udp drop", fam, p))
	}
	return h.nft(replaceTable("inet "+udpTable, fmt.Sprintf(`
	chain input {
		type filter hook input priority filter - 10; policy accept;
		%s
	}
	chain output {
		type filter hook output priority filter - 10; policy accept;
		%s
	}`, strings.Join(in, "\n\t\t"), strings.Join(out, "\n\t\t"))))
}

// UnblockUDP removes every BlockUDP rule of h.
func (h *Host) UnblockUDP() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.udpAll, h.udpBlocked = false, nil
	return h.nft(deleteTable("inet " + udpTable))
}

// LinkDown takes h's uplink (eth0: on the internet bridge, on the NAT's
// LAN for a host behind a NAT, the WAN leg for a NAT router) down. The
// kernel drops its routes; LinkUp restores them.
func (h *Host) LinkDown() error {
	if h.uplink == "" {
		return fmt.Errorf("LinkDown: %s has no uplink", h.name)
	}
	return ipCmds([]string{"-n", h.netns, "link", "set", h.uplink, "down"})
}

// LinkUp brings the uplink back with its (current) address and default
// route.
func (h *Host) LinkUp() error {
	if h.uplink == "" {
		return fmt.Errorf("LinkUp: %s has no uplink", h.name)
	}
	return ipCmds(
		[]string{"-n", h.netns, "link", "set", h.uplink, "up"},
		[]string{"-n", h.netns, "addr", "replace", netip.PrefixFrom(h.Addr(), 24).String(), "dev", h.uplink},
		[]string{"-n", h.netns, "route", "replace", "default", "via", h.gw.String(), "dev", h.uplink},
	)
}

// flushConntrack empties the conntrack table of namespace ns through
// ctnetlink (what `conntrack -F` does), so no conntrack tool is needed.
func flushConntrack(ns string) error {
	var err error
	if nerr := inNetns(ns, func() { err = ctFlush() }); nerr != nil {
		return nerr
	}
	if err != nil {
		return fmt.Errorf("flushing conntrack in %s: %w", ns, err)
	}
	return nil
}

func ctFlush() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	// nlmsghdr + nfgenmsg, no attributes: IPCTNL_MSG_CT_DELETE without a
	// tuple flushes the table; AF_UNSPEC means every family.
	const ipctnlMsgCtDelete = 2
	msg := make([]byte, unix.NLMSG_HDRLEN+4)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtDelete)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], 1) // sequence
	msg[16] = unix.AF_UNSPEC
	msg[17] = unix.NFNETLINK_V0
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	// The kernel answers synchronously with an ack (NLMSG_ERROR, error 0).
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || m.Header.Seq != 1 {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("short netlink ack")
			}
			if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
				return unix.Errno(-e)
			}
			return nil
		}
	}
}
