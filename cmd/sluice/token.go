package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"

	"github.com/sluicehq/sluice/services/config"
)

// tokenPrefix starts every token `sluice token` makes, so that one found
// in a log or a repository is recognizable.
const tokenPrefix = "sk-sluice-"

func runToken(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token", stderr)
	team := fs.String("team", "TEAM", "the team the token is for (only used in the printed instructions)")
	if err := parse(fs, args); err != nil {
		return err
	}
	token, err := newToken()
	if err != nil {
		return err
	}
	hash := config.HashToken(token)
	fmt.Fprintf(stdout, `token: %s

Give the token to team %s; it is shown only now. Store only its hash, in the
team's entry of the configuration (teams.%s.tokens), and apply it with
sluice config apply:

    tokens: ["%s"]
`, token, *team, *team, hash)
	return nil
}

// newToken is a fresh random token: 32 random bytes, URL-safe.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}
