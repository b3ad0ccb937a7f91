//go:build !linux

package hostfw

import "context"

// InboundUDP knows no firewall but Linux's: nothing is reported as blocking.
func InboundUDP(port uint16) (Verdict, error) { return Verdict{}, nil }

// Watch has nothing to watch off Linux; it returns when ctx ends.
func Watch(ctx context.Context, onChange func()) error {
	<-ctx.Done()
	return nil
}
