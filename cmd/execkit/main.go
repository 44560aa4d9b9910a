// Command execkit is execkit as one binary for edge deployments: one
// static executable and one SQLite file, no other server.
//
//	execkit serve                 run the engine, the webhook dispatcher and the HTTP API
//	execkit ls | show ID          inspect executions, their timelines and deliveries
//	execkit endpoints ...         manage webhook endpoints
//	execkit deliveries ls --dead  list deliveries
//	execkit replay                deliver events again
//	execkit prune                 remove old terminal executions
//	execkit migrate | version     schema and build information
//
// Every command but serve works on the same file while serve runs.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/webhook"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailure  = 1 // the command failed
	exitUsage    = 2 // the command line is wrong
	exitNotFound = 3 // the execution, endpoint or event does not exist
	exitDatabase = 4 // the file is missing, locked or from a newer version
)

// Globals are the flags every command takes.
type Globals struct {
	DB     string `help:"SQLite file; without it, the configuration's database, else ./execkit.db." default:"./execkit.db" type:"path" env:"EXECKIT_DB"`
	Config string `help:"Configuration file (TOML)." default:"./execkit.toml" type:"path" env:"EXECKIT_CONFIG"`
	JSON   bool   `help:"Print JSON instead of tables."`

	configSet, dbSet, listenSet bool
	stdout                      io.Writer
	cfg                         *Config // read once by config
	stderr                      io.Writer
}

// CLI is the command line.
type CLI struct {
	Globals

	Serve      ServeCmd      `cmd:"" help:"Run the engine, the webhook dispatcher and the HTTP API."`
	Ls         LsCmd         `cmd:"" help:"List executions."`
	Show       ShowCmd       `cmd:"" help:"Show an execution, its timeline and the deliveries of its events."`
	Endpoints  EndpointsCmd  `cmd:"" help:"Manage webhook endpoints."`
	Deliveries DeliveriesCmd `cmd:"" help:"Inspect webhook deliveries."`
	Replay     ReplayCmd     `cmd:"" help:"Deliver one event, or every event since a time, to an endpoint again."`
	Prune      PruneCmd      `cmd:"" help:"Remove terminal executions older than an age, with everything they own."`
	Migrate    MigrateCmd    `cmd:"" help:"Bring the file's schema up to date."`
	Version    VersionCmd    `cmd:"" help:"Print the version and the schema version."`
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// exitError carries an exit code out of kong.
type exitError int

// run runs one command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) (code int) {
	var cli CLI
	cli.stdout, cli.stderr = stdout, stderr
	parser, err := kong.New(&cli,
		kong.Name("execkit"),
		kong.Description("Tracks long-running paid actions on one SQLite file."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(c int) { panic(exitError(c)) }),
		kong.UsageOnError(),
	)
	if err != nil {
		fmt.Fprintln(stderr, "execkit:", err)
		return exitFailure
	}
	defer func() {
		if r := recover(); r != nil {
			c, ok := r.(exitError)
			if !ok {
				panic(r)
			}
			code = int(c)
			if code != 0 {
				code = exitUsage
			}
		}
	}()
	// A flag counts as given on the command line or in its variable.
	cli.configSet = os.Getenv("EXECKIT_CONFIG") != ""
	cli.dbSet = os.Getenv("EXECKIT_DB") != ""
	for _, a := range args {
		flag, _, _ := strings.Cut(a, "=")
		switch flag {
		case "--config":
			cli.configSet = true
		case "--db":
			cli.dbSet = true
		case "--listen":
			cli.listenSet = true
		}
	}
	ctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintln(stderr, "execkit:", err)
		return exitUsage
	}
	if err := ctx.Run(&cli.Globals); err != nil {
		fmt.Fprintln(stderr, "execkit:", err)
		return exitCode(err)
	}
	return exitOK
}

// exitCode maps an error to an exit code.
func exitCode(err error) int {
	var nf notFound
	switch {
	case errors.As(err, &nf):
		return exitNotFound
	case isDatabaseError(err):
		return exitDatabase
	case errors.Is(err, execution.ErrInvalid), errors.Is(err, webhook.ErrInvalid), errors.Is(err, webhook.ErrForbiddenAddress):
		return exitUsage
	}
	return exitFailure
}

// notFound marks errors about a missing execution, endpoint or event.
type notFound struct{ err error }

func (n notFound) Error() string { return n.err.Error() }
func (n notFound) Unwrap() error { return n.err }
