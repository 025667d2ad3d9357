package commands

// Placeholder until the authorization helper lands; replaced entirely.

import (
	"context"

	"go.uber.org/zap"
)

type Authorizer struct{}

type Decision struct {
	Allowed bool
	Message string
	Via     string
}

func NewAuthorizer(access Access, groups GroupMembership, kv Etcd, prefix string, log *zap.Logger) *Authorizer {
	return &Authorizer{}
}

func (a *Authorizer) Authorize(ctx context.Context, o Origin, verb Verb, route string) (Decision, error) {
	return Decision{Allowed: true}, nil
}
