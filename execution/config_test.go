package execution

import (
	"testing"
	"time"
)

func TestConfigDefaultsAndValidation(t *testing.T) {
	t.Parallel()
	c, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Workers != 8 || c.LeaseDuration != time.Minute || c.ProviderTimeout != 30*time.Second ||
		c.MaxFailedAttempts != 30 || c.MaxInputBytes != 1<<20 {
		t.Fatalf("defaults = %+v", c)
	}
	bad := []Config{
		{LeaseDuration: time.Second, ProviderTimeout: 2 * time.Second},
		{MinBackoff: time.Hour, MaxBackoff: time.Minute},
		{Workers: -1},
		{CheckInterval: -time.Second},
	}
	for _, b := range bad {
		if _, err := b.withDefaults(); err == nil {
			t.Errorf("%+v accepted", b)
		}
	}
}
