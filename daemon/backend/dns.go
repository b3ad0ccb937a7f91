package backend

import (
	"context"

	"github.com/skeinvpn/skein/ipc"
)

// DNSQuery asks the MagicDNS resolver directly.
func (b *Backend) DNSQuery(ctx context.Context, name, qtype string) (ipc.DNSQueryResult, error) {
	return ipc.DNSQueryResult{}, &ipc.Error{Code: ipc.ErrInternal, Message: "not yet"}
}
