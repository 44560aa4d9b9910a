package webhook_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/execkit/execkit/webhook"
)

// resolver answers from a table, so that no test looks up a real name.
func resolver(table map[string][]string) func(context.Context, string) ([]netip.Addr, error) {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		var out []netip.Addr
		for _, a := range table[host] {
			out = append(out, netip.MustParseAddr(a))
		}
		if out == nil {
			return nil, errors.New("no such host")
		}
		return out, nil
	}
}

func TestAddressPolicyRefusesEverySpelling(t *testing.T) {
	t.Parallel()
	names := resolver(map[string][]string{
		"hooks.example.com":    {"203.0.113.7"},
		"internal.example.com": {"10.1.2.3"},
		"sneaky.example.com":   {"203.0.113.8", "127.0.0.1"},
		"v6.example.com":       {"2001:db8::1"},
	})
	strict := webhook.AddressPolicy{Resolve: names}
	refused := []string{
		"http://127.0.0.1/hook", "http://127.1/hook", "http://0x7f000001/hook", "http://2130706433/hook",
		"http://0177.0.0.1/hook", "http://[::1]/hook", "http://[::ffff:127.0.0.1]/hook", "http://localhost./hook",
		"http://10.0.0.1/hook", "http://172.16.5.4/hook", "http://192.168.1.1/hook", "http://100.64.0.1/hook",
		"http://[fd00::1]/hook", "http://169.254.169.254/latest", "http://[fe80::1%25eth0]/hook",
		"http://0.0.0.0/hook", "http://[::]/hook", "http://224.0.0.1/hook", "http://255.255.255.255/hook",
		"http://[64:ff9b::7f00:1]/hook", "http://internal.example.com/hook", "http://sneaky.example.com/hook",
		"http://unknown.example.com/hook",
		"http://[::127.0.0.1]/", "http://[::7f00:1]/", "http://[2002:7f00:1::1]/", "http://[2002:a9fe:a9fe::1]/",
		"http://[::ffff:0:7f00:1]/", "http://[64:ff9b:1::a9fe:a9fe]/", "http://[64:ff9b:1::7f00:1]/", "http://[fec0::1]/",
		"http://192.0.0.192/", "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
	}
	for _, u := range refused {
		if err := strict.CheckURL(context.Background(), u); !errors.Is(err, webhook.ErrForbiddenAddress) {
			t.Errorf("CheckURL(%s) = %v, want ErrForbiddenAddress", u, err)
		}
	}
	for _, u := range []string{"https://hooks.example.com/in", "http://203.0.113.9:8080/x", "https://v6.example.com/"} {
		if err := strict.CheckURL(context.Background(), u); err != nil {
			t.Errorf("CheckURL(%s) = %v, want nil", u, err)
		}
	}
	for _, u := range []string{"ftp://hooks.example.com/", "hooks.example.com/x", "http:///x", "http://user:pw@hooks.example.com/",
		"http://１２７.0.0.1/", "http://127。0。0。1/"} {
		if err := strict.CheckURL(context.Background(), u); !errors.Is(err, webhook.ErrInvalid) {
			t.Errorf("CheckURL(%s) = %v, want ErrInvalid", u, err)
		}
	}

	local := webhook.AddressPolicy{AllowLoopback: true, AllowPrivate: true, Resolve: names}
	for _, u := range []string{"http://127.0.0.1:9/x", "http://[::1]/x", "http://10.0.0.1/x", "http://internal.example.com/x"} {
		if err := local.CheckURL(context.Background(), u); err != nil {
			t.Errorf("local policy: CheckURL(%s) = %v", u, err)
		}
	}
	// Metadata and link-local stay refused under the most open policy.
	for _, u := range []string{"http://169.254.169.254/", "http://[fd00:ec2::254]/", "http://100.100.100.200/"} {
		if err := local.CheckURL(context.Background(), u); !errors.Is(err, webhook.ErrForbiddenAddress) {
			t.Errorf("local policy: CheckURL(%s) = %v", u, err)
		}
	}
}
