package permit_test

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/edgeproxy/edgeproxy/internal/permit"
)

// The life of one connection: admitted at accept, charged to its app once
// routing knows it, released when it closes.
func Example() {
	lim := permit.New(permit.Limits{Global: 10000, PerApp: 1, PerIP: 100, IPRate: 50, IPBurst: 100}, nil)
	client := netip.MustParseAddr("198.51.100.7")

	first, _ := lim.Admit(443, client)
	defer first.Release()
	_ = first.AdmitApp("shop")

	p, err := lim.Admit(443, client)
	if err != nil {
		return // refused: close the connection at once
	}
	defer p.Release() // on every path, once is enough and more is harmless

	err = p.AdmitApp("shop")
	if r, ok := errors.AsType[*permit.Refused](err); ok {
		fmt.Println(r, "- refusals by app:", lim.Refusals()[r.Scope])
	}
	fmt.Println("open:", lim.Active(), "for shop:", lim.ActiveApp("shop"))
	// Output:
	// connection refused by app limit - refusals by app: 1
	// open: 2 for shop: 1
}
