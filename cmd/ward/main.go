// Command ward is the Ward identity provider: `ward serve` runs the server,
// and the user, group, client, keys and logs commands administer the same
// data directly through the store, with the same configuration.
package main

import (
	"context"
	"os"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], &cliEnv{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}))
}
