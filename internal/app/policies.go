package app

import (
	"context"
	"fmt"
	"os"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/policy"
)

// ReadPolicyFile strictly decodes a policy document (YAML or JSON).
func ReadPolicyFile(path string) (*policy.Document, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	doc, err := policy.DecodeYAML(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return doc, nil
}

// applyPoliciesFile applies the configured policy file; an unchanged file
// stores nothing.
func (a *App) applyPoliciesFile(ctx context.Context, path string) error {
	doc, err := ReadPolicyFile(path)
	if err != nil {
		return err
	}
	res, err := a.Access.Apply(ctx, doc, access.ApplyOptions{Actor: ActorSystem, Comment: "conditional_access.policies_file", ExpectVersion: access.AnyVersion})
	if err != nil {
		return err
	}
	if res.Changed {
		a.Log.InfoContext(ctx, "conditional access policies applied from file", "path", path, "version", res.Version)
	}
	return nil
}
