package transport

import "github.com/skeinvpn/skein/daemon/wire"

func testDERPMap(ids ...int) *wire.DERPMap {
	dm := &wire.DERPMap{Regions: map[int]*wire.DERPRegion{}}
	for _, id := range ids {
		dm.Regions[id] = &wire.DERPRegion{RegionID: id, RegionCode: "r", Nodes: []*wire.DERPNode{{Name: "n", RegionID: id, HostName: "127.0.0.1"}}}
	}
	return dm
}
