package webhook

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
)

// AddressPolicy decides which addresses endpoints may have. The zero value
// is the safe default: only public unicast addresses. It is checked when
// an endpoint is added or changed, and again at dial time against the
// address actually dialled, so that a DNS change cannot slip past.
type AddressPolicy struct {
	// AllowLoopback admits 127.0.0.0/8 and ::1, for local setups and
	// tests.
	AllowLoopback bool
	// AllowPrivate admits private ranges (10/8, 172.16/12, 192.168/16,
	// 100.64/10, fc00::/7), for deployments inside one network.
	AllowPrivate bool
	// Resolve looks up a host's addresses at registration. Nil means the
	// system resolver.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
}

// metadata lists cloud metadata services, refused whatever the policy.
var metadata = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"),
	netip.MustParseAddr("169.254.170.2"),
	netip.MustParseAddr("100.100.100.200"),
	netip.MustParseAddr("fd00:ec2::254"),
}

var (
	cgnat       = netip.MustParsePrefix("100.64.0.0/10")
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	ietf        = netip.MustParsePrefix("192.0.0.0/24") // protocol assignments; 192.0.0.192 is a metadata service
	siteLocal   = netip.MustParsePrefix("fec0::/10")
	nat64       = netip.MustParsePrefix("64:ff9b::/96")
	nat64Local  = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFour   = netip.MustParsePrefix("2002::/16")
	teredo      = netip.MustParsePrefix("2001::/32")
	translated  = netip.MustParsePrefix("::ffff:0:0:0/96")
	compatible  = netip.MustParsePrefix("::/96")
)

// embedded returns the IPv4 address an IPv6 address carries under a
// transition scheme (NAT64, 6to4, Teredo, IPv4-translated or
// IPv4-compatible), so that it is judged by where it leads.
func embedded(ip netip.Addr) (netip.Addr, bool) {
	if !ip.Is6() || ip.Is4In6() {
		return netip.Addr{}, false
	}
	b := ip.As16()
	last4 := netip.AddrFrom4([4]byte(b[12:]))
	switch {
	case nat64.Contains(ip), nat64Local.Contains(ip), translated.Contains(ip):
		return last4, true
	case compatible.Contains(ip) && !ip.IsLoopback() && !ip.IsUnspecified():
		return last4, true
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	case teredo.Contains(ip):
		return netip.AddrFrom4([4]byte{b[12] ^ 0xff, b[13] ^ 0xff, b[14] ^ 0xff, b[15] ^ 0xff}), true
	}
	return netip.Addr{}, false
}

// CheckAddr returns an error wrapping [ErrForbiddenAddress] if the policy
// refuses ip. An IPv6 address that carries an IPv4 one (mapped,
// compatible, translated, NAT64, 6to4, Teredo) is judged by the IPv4
// address it carries.
func (p AddressPolicy) CheckAddr(ip netip.Addr) error {
	ip = ip.Unmap().WithZone("")
	if v4, ok := embedded(ip); ok {
		if err := p.CheckAddr(v4); err != nil {
			return fmt.Errorf("%s carries %s: %w", ip, v4, err)
		}
		return nil
	}
	for _, m := range metadata {
		if ip == m {
			return fmt.Errorf("%w: %s is a cloud metadata address", ErrForbiddenAddress, ip)
		}
	}
	switch {
	case !ip.IsValid():
		return fmt.Errorf("%w: no address", ErrForbiddenAddress)
	case ip.IsLoopback():
		if p.AllowLoopback {
			return nil
		}
		return fmt.Errorf("%w: %s is a loopback address", ErrForbiddenAddress, ip)
	case ip.IsUnspecified(), thisNetwork.Contains(ip), ietf.Contains(ip):
		return fmt.Errorf("%w: %s is unspecified", ErrForbiddenAddress, ip)
	case ip.IsMulticast(), ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%w: %s is multicast or broadcast", ErrForbiddenAddress, ip)
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast():
		return fmt.Errorf("%w: %s is link-local", ErrForbiddenAddress, ip)
	case ip.IsPrivate(), cgnat.Contains(ip), siteLocal.Contains(ip):
		if p.AllowPrivate {
			return nil
		}
		return fmt.Errorf("%w: %s is a private address", ErrForbiddenAddress, ip)
	}
	return nil
}

// CheckURL checks an endpoint URL: http or https, a host, and every
// address the host stands for allowed by the policy. Numeric hosts are
// read in every spelling a resolver accepts ("127.1", "0x7f000001",
// "[::ffff:127.0.0.1]"); names are resolved.
func (p AddressPolicy) CheckURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return fmt.Errorf("%w: endpoint URL %.80q must be http(s)://host/path without credentials", ErrInvalid, raw)
	}
	host := u.Hostname()
	for _, r := range host {
		if r > 0x7e {
			// Resolvers and URL libraries map some of these to ASCII
			// digits and dots ("１２７.0.0.1"); only the ASCII form is taken.
			return fmt.Errorf("%w: host %.80q has non-ASCII characters; use its xn-- form", ErrInvalid, host)
		}
	}
	if ip, ok := parseHost(host); ok {
		return p.CheckAddr(ip)
	}
	resolve := p.Resolve
	if resolve == nil {
		resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	addrs, err := resolve(ctx, host)
	if err != nil {
		return fmt.Errorf("%w: resolve %.80q: %v", ErrForbiddenAddress, host, err)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("%w: %.80q has no addresses", ErrForbiddenAddress, host)
	}
	for _, a := range addrs {
		if err := p.CheckAddr(a); err != nil {
			return fmt.Errorf("%.80q resolves to a refused address: %w", host, err)
		}
	}
	return nil
}

// parseHost reads a numeric host: IPv6 (zone dropped), dotted IPv4, or the
// legacy forms inet_aton accepts: one to four parts, each decimal, octal
// (leading 0) or hex (leading 0x).
func parseHost(host string) (netip.Addr, bool) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.WithZone(""), true
	}
	parts := strings.Split(host, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, part := range parts {
		v, err := strconv.ParseUint(part, 0, 32)
		if err != nil || part == "" || strings.Contains(part, "_") {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	// The last part fills the remaining bytes: a.b.c.d, a.b.16bits,
	// a.24bits, 32bits.
	var n uint64
	for i, v := range vals[:len(vals)-1] {
		if v > 255 {
			return netip.Addr{}, false
		}
		n |= v << (24 - 8*i)
	}
	last := vals[len(vals)-1]
	if last >= 1<<(8*(5-len(vals))) {
		return netip.Addr{}, false
	}
	n |= last
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

// control is a net.Dialer Control function that applies the policy to the
// address about to be dialled.
func (p AddressPolicy) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: dial %s: %v", ErrForbiddenAddress, address, err)
	}
	return p.CheckAddr(ap.Addr())
}
