package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/providers/command"
	"github.com/execkit/execkit/providers/httpjson"
	"github.com/execkit/execkit/webhook"
)

// Config is the configuration file of execkit serve, in TOML.
type Config struct {
	// Database is the SQLite file; --db overrides it.
	Database string `toml:"database"`
	// Listen is the HTTP address; --listen overrides it.
	Listen    string          `toml:"listen"`
	API       APIConfig       `toml:"api"`
	Engine    EngineConfig    `toml:"engine"`
	Webhooks  WebhookConfig   `toml:"webhooks"`
	Retention RetentionConfig `toml:"retention"`
	Actions   []ActionConfig  `toml:"actions"`
}

// APIConfig authenticates HTTP callers.
type APIConfig struct {
	// Tokens maps bearer tokens to owners. Without any, every request
	// acts for the owner "default": fit only for a listener that trusted
	// callers alone can reach.
	Tokens map[string]string `toml:"tokens"`
}

// EngineConfig tunes the engine.
type EngineConfig struct {
	Workers       int      `toml:"workers"`
	CheckInterval duration `toml:"check_interval"`
	LeaseDuration duration `toml:"lease_duration"`
	PollInterval  duration `toml:"poll_interval"`
}

// WebhookConfig tunes delivery.
type WebhookConfig struct {
	AllowLoopback  bool     `toml:"allow_loopback"`
	AllowPrivate   bool     `toml:"allow_private"`
	Timeout        duration `toml:"timeout"`
	ConnectTimeout duration `toml:"connect_timeout"`
	PollInterval   duration `toml:"poll_interval"`
}

// RetentionConfig prunes old terminal executions.
type RetentionConfig struct {
	// MaxAge keeps terminal executions this long; zero keeps them forever.
	MaxAge duration `toml:"max_age"`
	// Interval is how often serve prunes. Zero means one hour.
	Interval duration `toml:"interval"`
}

// ActionConfig registers one action's provider.
type ActionConfig struct {
	Name     string `toml:"name"`
	Provider string `toml:"provider"` // "command" or "httpjson"

	// command
	Command   []string `toml:"command"`
	Env       []string `toml:"env"`
	Dir       string   `toml:"dir"`
	Timeout   duration `toml:"timeout"`
	OnRestart string   `toml:"on_restart"` // "resubmit" or "fail"

	// httpjson
	SubmitURL  string            `toml:"submit_url"`
	StatusURL  string            `toml:"status_url"`
	Statuses   map[string]string `toml:"statuses"`
	Headers    map[string]string `toml:"headers"`
	CheckAfter duration          `toml:"check_after"`
}

// duration reads "30s" or "720h" from TOML.
type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 30s or 720h", b)
	}
	if v < 0 {
		return fmt.Errorf("%q is negative", b)
	}
	d.Duration = v
	return nil
}

// config returns the configuration file, read and checked on first use.
func (g *Globals) config() (Config, error) {
	if g.cfg == nil {
		c, err := loadConfig(g.Config, g.configSet)
		if err != nil {
			return Config{}, err
		}
		g.cfg = &c
	}
	return *g.cfg, nil
}

// loadConfig reads and checks a configuration file. A missing file is an
// empty configuration only if the path was not given explicitly.
func loadConfig(path string, explicit bool) (Config, error) {
	var c Config
	if path == "" {
		return c, nil
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && !explicit {
		return c, nil
	}
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		return c, fmt.Errorf("config %s: unknown key %q", path, undecoded[0].String())
	}
	seen := map[string]bool{}
	for i, a := range c.Actions {
		if a.Name == "" {
			return c, fmt.Errorf("config %s: action %d has no name", path, i+1)
		}
		if seen[a.Name] {
			return c, fmt.Errorf("config %s: action %s is configured twice", path, a.Name)
		}
		seen[a.Name] = true
		commandSet := len(a.Command) > 0 || len(a.Env) > 0 || a.Dir != "" || a.OnRestart != ""
		httpSet := a.SubmitURL != "" || a.StatusURL != "" || len(a.Statuses) > 0 || len(a.Headers) > 0 || a.CheckAfter.Duration != 0
		switch a.Provider {
		case "command":
			if httpSet {
				return c, fmt.Errorf("config %s: action %s: submit_url, status_url, statuses, headers and check_after are for httpjson", path, a.Name)
			}
			if len(a.Command) == 0 {
				return c, fmt.Errorf("config %s: action %s: command is empty", path, a.Name)
			}
			if a.OnRestart != "" && a.OnRestart != "resubmit" && a.OnRestart != "fail" {
				return c, fmt.Errorf("config %s: action %s: on_restart is %q, want resubmit or fail", path, a.Name, a.OnRestart)
			}
		case "httpjson":
			if commandSet {
				return c, fmt.Errorf("config %s: action %s: command, env, dir and on_restart are for the command provider", path, a.Name)
			}
		default:
			return c, fmt.Errorf("config %s: action %s: provider %q, want command or httpjson", path, a.Name, a.Provider)
		}
	}
	return c, nil
}

// providers builds the configured providers and registers them.
// It returns the command provider, if any, so that serve can stop its
// programs on shutdown.
func (c Config) register(engine *execution.Engine) (*command.Provider, error) {
	programs := map[string]command.Program{}
	for _, a := range c.Actions {
		if a.Provider == "command" {
			programs[a.Name] = command.Program{Path: a.Command[0], Args: a.Command[1:], Env: a.Env, Dir: a.Dir,
				Timeout: a.Timeout.Duration, Resubmit: a.OnRestart != "fail"}
		}
	}
	var cmd *command.Provider
	if len(programs) > 0 {
		var err error
		if cmd, err = command.New(programs); err != nil {
			return nil, err
		}
	}
	for _, a := range c.Actions {
		var p execution.Provider = cmd
		if a.Provider == "httpjson" {
			statuses := map[string]fsm.State{}
			for k, v := range a.Statuses {
				statuses[k] = fsm.State(v)
			}
			header := http.Header{}
			for k, v := range a.Headers {
				header.Set(k, v)
			}
			hp, err := httpjson.New(httpjson.Config{Name: "httpjson", SubmitURL: a.SubmitURL, StatusURL: a.StatusURL,
				Statuses: statuses, Header: header, CheckAfter: a.CheckAfter.Duration, Timeout: a.Timeout.Duration})
			if err != nil {
				return nil, fmt.Errorf("action %s: %w", a.Name, err)
			}
			p = hp
		}
		if err := engine.Register(a.Name, p); err != nil {
			return nil, err
		}
	}
	return cmd, nil
}

func (c Config) policy() webhook.AddressPolicy {
	return webhook.AddressPolicy{AllowLoopback: c.Webhooks.AllowLoopback, AllowPrivate: c.Webhooks.AllowPrivate}
}
