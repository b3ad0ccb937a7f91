// Package osdns points the host's resolver at skeind's MagicDNS server while the tunnel is up,
// and puts the host back exactly as it was afterwards.
//
// Two modes exist. When systemd-resolved owns org.freedesktop.resolve1 on the system bus and
// /etc/resolv.conf really sends queries to it, the settings are made per link (the tunnel
// interface) over D-Bus and nothing on disk is touched; resolved forgets them when the link goes
// away. Otherwise /etc/resolv.conf is replaced by a file of ours. The original is first saved in
// the state directory together with a journal, so that a later Close, or Cleanup after a crash,
// can put it back byte for byte, including whether it was a symlink and its mode.
//
// The package is Linux-only.
package osdns
